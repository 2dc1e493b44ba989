"""`lmdock chat`: a streaming terminal chat with a running server, through the official Anthropic SDK."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from lmdock.cli.client import HostOption, PortOption, Server, fail

if TYPE_CHECKING:
    import anthropic
    from anthropic.types import MessageParam

out = Console(highlight=False, soft_wrap=True)


def _reply(client: anthropic.Anthropic, history: list[MessageParam], **params) -> str:
    """Stream one answer to the terminal (thinking dimmed); Ctrl-C stops it and keeps what came."""
    import anthropic

    text: list[str] = []
    try:
        with client.messages.stream(messages=history, **params) as stream:
            for event in stream:
                if event.type != "content_block_delta":
                    continue
                if event.delta.type == "text_delta":
                    text.append(event.delta.text)
                    out.print(event.delta.text, end="", markup=False)
                elif event.delta.type == "thinking_delta":
                    out.print(event.delta.thinking, end="", style="dim", markup=False)
    except KeyboardInterrupt:
        out.print(" [interrupted]", style="dim")
    except anthropic.APIConnectionError:
        fail("\nLost the connection to the lmdock server.")
    except anthropic.APIStatusError as exc:
        fail(f"\nerror {exc.status_code}: {exc.message}")
    out.print()
    return "".join(text)


def _lines(interactive: bool):
    while True:
        try:
            line = input("> ") if interactive else sys.stdin.readline()
        except (EOFError, KeyboardInterrupt):
            return
        if not interactive and not line:
            return
        line = line.strip()
        if line in ("/exit", "/quit"):
            return
        if line:
            yield line


def chat(
    model: Annotated[str, typer.Argument(help="Model key; `default` is the server's default.")] = "default",
    prompt: Annotated[str | None, typer.Option("--prompt", "-p", help="Ask once and exit.")] = None,
    system: Annotated[str | None, typer.Option("--system", "-s", help="System prompt.")] = None,
    max_tokens: Annotated[int, typer.Option(help="Longest answer in tokens.")] = 2048,
    temperature: Annotated[float | None, typer.Option(help="Sampling temperature.")] = None,
    host: HostOption = "127.0.0.1",
    port: PortOption = 1234,
) -> None:
    """Chat with a model in the terminal (reads stdin line by line when it is not a terminal)."""
    server = Server(host, port)
    server.request("GET", "/health")  # no server: say so now, not after the first question
    import anthropic  # slow to import: only for this command

    client = anthropic.Anthropic(
        base_url=server.base_url, api_key=server.api_key or "lmdock", max_retries=0, timeout=900
    )
    params: dict = {"model": model, "max_tokens": max_tokens}
    if system:
        params["system"] = system
    if temperature is not None:  # not a named parameter of this SDK's stream(); the server takes it
        params["extra_body"] = {"temperature": temperature}
    interactive = prompt is None and sys.stdin.isatty()
    if interactive:
        out.print(f"Chatting with {model} at {server.base_url}. /exit or Ctrl-D to quit.", style="dim")
    history: list[MessageParam] = []
    for line in [prompt] if prompt else _lines(interactive):
        history.append({"role": "user", "content": line})
        history.append({"role": "assistant", "content": _reply(client, history, **params) or "(no answer)"})
