"""`lmdock launch claude`: start Claude Code pointed at the server, as LM Studio's `lms launch claude`.

Every model tier, background and subagent call is pinned to the loaded model (so Claude Code never asks
for a model lmdock does not have), Claude Code is told the served context window (so it compacts before
the server has to refuse a prompt), and the per-request attribution header that would defeat the prompt
cache is switched off.
"""

from __future__ import annotations

import os
import shlex
import shutil
from pathlib import Path
from typing import Annotated

import typer

from lmdock.cli.client import HostOption, PortOption, Server, console, err_console, fail

launch_app = typer.Typer(help="Start a coding tool pointed at the lmdock server.", no_args_is_help=True)


def _loaded_model(server: Server, wanted: str | None) -> tuple[str, int]:
    """The model to use and its context length, loading it (or the default) if nothing fits."""
    models = server.request("GET", "/api/v1/models")["models"]
    for m in models:
        if m["state"] == "loaded" and (wanted is None or wanted.lower() in [m["key"], *m["aliases"]]):
            return m["key"], m["loaded_instances"][0]["config"]["context_length"]
    result = server.request("POST", "/api/v1/models/load", json={"model": wanted or "default"}, timeout=900)
    return result["model_instance_id"], result["config"]["context_length"]


def _sampling_line(server: Server, key: str) -> str | None:
    """The model's effective sampling defaults as the server reports them (Claude Code sets none)."""
    for m in server.request("GET", "/api/v1/models")["models"]:
        d = m.get("sampling_defaults")
        if m["key"] == key and d:
            origins = sorted(set(d["source"].values()) - {"lmdock"})
            where = f"from {' + '.join(origins)}" if origins else "lmdock defaults"
            return (
                f"temperature {d['temperature']:g}, top_k {d['top_k']}, top_p {d['top_p']:g}, "
                f"min_p {d['min_p']:g} ({where}; edit {d['preset_path']} to change)"
            )
    return None


# Claude Code (2.1.x) raises a CLAUDE_CODE_AUTO_COMPACT_WINDOW below this to this (its `below_minimum`
# branch), so for a smaller context that variable would plan compaction for a window the server lacks.
CLAUDE_MIN_AUTO_COMPACT_WINDOW = 100_000


def claude_window_env(context_length: int) -> dict[str, str]:
    """The context window as Claude Code reads it for a model it does not know: CLAUDE_CODE_MAX_CONTEXT_TOKENS
    is the window (auto-compaction plans within it); the auto-compact window is only set where Claude
    Code would take it as given (Claude Code compacts within the smaller of the two)."""
    env = {"CLAUDE_CODE_MAX_CONTEXT_TOKENS": str(context_length)}
    if context_length >= CLAUDE_MIN_AUTO_COMPACT_WINDOW:
        env["CLAUDE_CODE_AUTO_COMPACT_WINDOW"] = str(context_length)
    return env


def claude_env(server: Server, model: str, context_length: int) -> dict[str, str]:
    env = {
        "ANTHROPIC_BASE_URL": server.base_url,
        "ANTHROPIC_AUTH_TOKEN": server.api_key or "lmdock",
        "ANTHROPIC_API_KEY": "",  # a key inherited from the shell would take precedence over the token
        "ANTHROPIC_MODEL": model,
        "CLAUDE_CODE_SUBAGENT_MODEL": model,
        **claude_window_env(context_length),
        "CLAUDE_CODE_ATTRIBUTION_HEADER": "0",
    }
    for tier in ("OPUS", "SONNET", "HAIKU"):
        env[f"ANTHROPIC_DEFAULT_{tier}_MODEL"] = model
    return env


def find_claude() -> str | None:
    """`node_modules/.bin/claude` in the current folder or above, or in lmdock's checkout, else PATH."""
    here = Path.cwd().resolve()
    checkout = Path(__file__).resolve().parents[3]
    for folder in [here, *here.parents, checkout]:
        candidate = folder / "node_modules" / ".bin" / "claude"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return shutil.which("claude")


@launch_app.command("claude", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def claude(
    ctx: typer.Context,
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="Model key (default: the loaded one).")
    ] = None,
    print_env: Annotated[
        bool, typer.Option("--print-env", help="Only print the environment variables.")
    ] = False,
    host: HostOption = "127.0.0.1",
    port: PortOption = 1234,
) -> None:
    """Run Claude Code against this server; arguments after `--` go to claude."""
    server = Server(host, port)
    key, context_length = _loaded_model(server, model)
    env = claude_env(server, key, context_length)
    if key.startswith("claude-"):
        err_console.print(
            f"[yellow]{key} starts with claude-: Claude Code will assume a 200K window and ignore "
            "CLAUDE_CODE_MAX_CONTEXT_TOKENS.[/yellow]"
        )
    sampling = _sampling_line(server, key)
    if print_env:
        for name, value in env.items():
            console.print(f"export {name}={shlex.quote(value)}", highlight=False, markup=False)
        if sampling:  # stderr: stdout stays `eval`-able
            err_console.print(
                f"# sampling for requests that set none: {sampling}", highlight=False, markup=False
            )
        return
    binary = find_claude()
    if binary is None:
        fail("Claude Code is not installed: npm install -g @anthropic-ai/claude-code")
    err_console.print(f"Starting Claude Code on {key} (context {context_length}) at {server.base_url}")
    for name, value in env.items():
        shown = "…" if name == "ANTHROPIC_AUTH_TOKEN" and server.api_key else value
        err_console.print(f"  {name}={shlex.quote(shown)}", highlight=False, markup=False)
    if sampling:
        err_console.print(f"  sampling for requests that set none: {sampling}", highlight=False, markup=False)
    os.execvpe(binary, [binary, *ctx.args], {**os.environ, **env})
