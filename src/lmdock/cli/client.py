"""How CLI commands reach a running server: where it listens, its API key, and errors as one clear line.

Every failure a user can cause (no server, unknown model, a load that fails) ends the command with a
message on stderr and exit code 1, never a traceback.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Annotated, Any, NoReturn

import httpx
import typer
from rich.console import Console
from rich.markup import escape

from lmdock.core.config import env_items, option

err_console = Console(stderr=True)
console = Console(width=None if sys.stdout.isatty() else 160)  # piped: don't squeeze tables to 80

HostOption = Annotated[
    str,
    typer.Option(
        "--host", envvar=option("host").env, help="Address of the lmdock server.", show_default=True
    ),
]
PortOption = Annotated[
    int, typer.Option("--port", envvar=option("port").env, help="Port of the lmdock server.")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def fail(message: str) -> NoReturn:
    err_console.print(f"[red]{escape(message)}[/red]", highlight=False)
    raise typer.Exit(1)


def _connect_host(host: str) -> str:
    """A wildcard bind address is reached through loopback."""
    return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)


@dataclass
class Server:
    host: str
    port: int

    @property
    def base_url(self) -> str:
        host = _connect_host(self.host)
        return f"http://[{host}]:{self.port}" if ":" in host else f"http://{host}:{self.port}"

    @property
    def api_key(self) -> str | None:
        return _first(env_items("api_keys"))

    @property
    def headers(self) -> dict[str, str]:
        """Management commands send the admin key when one is set (it opens every route)."""
        key = _first(env_items("admin_keys")) or self.api_key
        return {"authorization": f"Bearer {key}"} if key else {}

    def not_running(self) -> NoReturn:
        fail(f"No lmdock server is running at {self.base_url} (start one with `lmdock serve`).")

    def request(self, method: str, path: str, *, json: Any = None, timeout: float = 30.0) -> Any:
        """One JSON request; connection and HTTP errors end the command."""
        try:
            response = httpx.request(
                method, self.base_url + path, json=json, headers=self.headers, timeout=timeout
            )
        except httpx.ConnectError:
            self.not_running()
        except httpx.HTTPError as exc:
            fail(f"request to {self.base_url}{path} failed: {exc}")
        if response.status_code >= 400:
            fail(_error_message(response))
        return response.json()


def _first(keys: list[str]) -> str | None:
    return keys[0] if keys else None


def _error_message(response: httpx.Response) -> str:
    try:
        error = response.json().get("error", {})
        message = error.get("message") if isinstance(error, dict) else None
    except ValueError:
        message = None
    return f"error {response.status_code}: {message or response.text[:200]}"


def human_bytes(n: float | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"
