"""`lmdock serve`: start the HTTP server on the default (or given) model.

Its flags are generated from the settings table (`lmdock.core.config.options()`): one typer option per
field, with the field's flag, variable, help and default."""

from __future__ import annotations

import inspect
import logging
from dataclasses import MISSING
from typing import Annotated, Any

import typer
import uvicorn
from rich.console import Console
from rich.markup import escape

from lmdock.cli.progress import byte_progress
from lmdock.core.config import Option, options, settings_from
from lmdock.core.errors import InvalidRequest, ModelLoadError
from lmdock.models import store
from lmdock.models.default_model import HOW_TO_GET_A_MODEL, default_model_available, ensure_default_model

console = Console(stderr=True)


def serve(**flags: Any) -> None:
    """Serve the Anthropic Messages API (and the rest) on HOST:PORT."""

    from lmdock.upstream.config import UpstreamConfigError, specs_of

    try:
        settings = settings_from(flags)
    except InvalidRequest as exc:  # a bad value (an impossible KV cache combination, --spec-type)
        console.print(f"[red]{escape(exc.message)}[/red]")
        raise typer.Exit(2) from None
    try:
        upstreams = specs_of(settings)  # a bad file or flag stops start-up here, not at the first request
    except UpstreamConfigError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    if not settings.is_loopback and not settings.api_keys and not settings.allow_unauthenticated:
        console.print(
            f"[red]Refusing to serve on {settings.host} without an API key.[/red] "
            "Pass --api-key KEY, or --allow-unauthenticated if the network is trusted."
        )
        raise typer.Exit(2)
    if settings.model is None and default_model_available(settings.models_dir):
        try:
            ensure_default_model(settings.models_dir, progress=byte_progress("Preparing the default model"))
        except ModelLoadError as exc:  # a damaged part: say so and serve the rest
            console.print(f"[red]{exc.message}[/red]", highlight=False)
    elif settings.model is None and not store.scan(settings.models_dir) and not upstreams:
        console.print(
            f"[yellow]No model yet[/yellow]: {escape(HOW_TO_GET_A_MODEL)}.", highlight=False, soft_wrap=True
        )
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    from lmdock.app import create_app

    console.print(f"lmdock serving on http://{settings.host}:{settings.port} (models: {settings.models_dir})")
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        timeout_keep_alive=30,
    )


def _parameter(opt: Option) -> inspect.Parameter:
    """A typer option for one setting. A setting whose default is computed at start-up (a list, a
    folder under LMDOCK_HOME) takes None here, which leaves the field to its factory."""
    computed = opt.default is MISSING
    kind = opt.type | None if computed else opt.type
    decls = [opt.flag] if "/" in opt.flag else []  # otherwise typer derives the flag from the name
    return inspect.Parameter(
        opt.param,
        inspect.Parameter.KEYWORD_ONLY,
        default=None if computed else opt.default,
        annotation=Annotated[kind, typer.Option(*decls, envvar=opt.env, help=opt.help)],
    )


serve.__signature__ = inspect.Signature([_parameter(opt) for opt in options()])
