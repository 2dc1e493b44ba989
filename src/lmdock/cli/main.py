"""`lmdock` entry point: the typer app and its sub-commands."""

from __future__ import annotations

from typing import Annotated

import typer

from lmdock import __version__
from lmdock.cli.batch_cmd import batch_app
from lmdock.cli.chat_cmd import chat
from lmdock.cli.launch_cmd import launch_app
from lmdock.cli.log_cmd import log_app
from lmdock.cli.model_cmd import model_app
from lmdock.cli.serve import serve
from lmdock.cli.server_cmds import load, ps, status, unload
from lmdock.cli.store_cmds import get, ls

app = typer.Typer(
    name="lmdock",
    help="A local LLM server with an Anthropic-compatible Messages API.",
    no_args_is_help=True,
    add_completion=False,
)


def _print_version(value: bool) -> None:
    if value:
        from lmdock.engine.build_info import llama_build

        typer.echo(f"lmdock {__version__}")
        for line in llama_build().lines():
            typer.echo(line)
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_print_version,
            is_eager=True,
            help="Print lmdock's version and the llama.cpp build it runs on, then exit.",
        ),
    ] = False,
) -> None:
    """A local LLM server with an Anthropic-compatible Messages API."""


app.command()(serve)
for command in (status, ls, ps, get, load, unload, chat):
    app.command()(command)
app.add_typer(model_app, name="model")
app.add_typer(log_app, name="log")
app.add_typer(launch_app, name="launch")
app.add_typer(batch_app, name="batch")

if __name__ == "__main__":
    app()
