"""`lmdock` entry point: the typer app and its sub-commands."""

from __future__ import annotations

import typer

from lmdock.cli.model_cmd import model_app
from lmdock.cli.serve import serve

app = typer.Typer(
    name="lmdock",
    help="A local LLM server with an Anthropic-compatible Messages API.",
    no_args_is_help=True,
    add_completion=False,
)
app.command()(serve)
app.add_typer(model_app, name="model")

if __name__ == "__main__":
    app()
