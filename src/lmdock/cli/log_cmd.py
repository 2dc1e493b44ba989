"""`lmdock log stream`: follow the server's request log live."""

from __future__ import annotations

import json
import os
import signal
import sys
from typing import Annotated, Any

import httpx
import typer

from lmdock.cli.client import HostOption, PortOption, Server, console, fail

log_app = typer.Typer(help="The server's request log.", no_args_is_help=True)


def _stop_at_once(signum: int, frame: object) -> None:
    """Ctrl-C ends the command there and then, without unwinding a KeyboardInterrupt through the HTTP
    client's read and close (which httpx does not promise to survive: once, under heavy load, the
    command was still running 30 s after SIGINT). Nothing is left to clean up: the stream only reads."""
    sys.stdout.flush()
    os._exit(0)


def _line(entry: dict[str, Any]) -> str:
    tokens = ""
    if entry.get("input_tokens") is not None:
        tokens = f" in={entry['input_tokens']} out={entry['output_tokens']}"
    model = f" {entry['model']}" if entry.get("model") else ""
    return (
        f"{entry['time']} {entry['method']} {entry['path']} {entry['status']}"
        f"{model}{tokens} {entry['duration_ms'] / 1000:.2f}s"
    )


@log_app.command("stream")
def stream(
    host: HostOption = "127.0.0.1",
    port: PortOption = 1234,
    as_json: Annotated[bool, typer.Option("--json", help="Print each entry as a JSON line.")] = False,
) -> None:
    """Print one line per finished request until interrupted."""
    server = Server(host, port)
    signal.signal(signal.SIGINT, _stop_at_once)
    try:
        with httpx.stream(
            "GET", server.base_url + "/api/v1/logs/stream", headers=server.headers, timeout=None
        ) as response:
            if response.status_code != 200:
                fail(f"error {response.status_code}: the server has no request log")
            for line in response.iter_lines():
                if line.startswith(": connected"):  # subscribed: every request from now on shows up
                    console.print(
                        f"Streaming the request log of {server.base_url} (Ctrl-C to stop)", style="dim"
                    )
                elif line.startswith("data: "):
                    entry = json.loads(line[6:])
                    console.print(
                        json.dumps(entry) if as_json else _line(entry), highlight=False, soft_wrap=True
                    )
    except httpx.ConnectError:
        server.not_running()
    except httpx.HTTPError:
        fail("Lost the connection to the lmdock server.")
