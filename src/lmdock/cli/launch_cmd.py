"""`lmdock launch <agent>`: start a coding agent pointed at the server, as `ollama launch` / `lms launch`.

Each agent is one entry of AGENTS: how to find its binary and the settings (environment variables and
leading arguments) that point it at lmdock's loaded model with its real context length. Nothing is
written into the agent's own configuration files: the settings live only in the launched process, and
`launch` prints every one of them (the API key, when the server has one, as `…`).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import typer

from lmdock.cli.client import HostOption, PortOption, Server, console, err_console, fail

launch_app = typer.Typer(help="Start a coding agent pointed at the lmdock server.", no_args_is_help=True)

# Agents wait this long for the next byte of a stream: a long first prompt is read for minutes on a CPU.
STREAM_IDLE_TIMEOUT_MS = 1_800_000
PROVIDER = "lmdock"  # the provider name Codex and opencode show
API_KEY_VAR = "CODEX_LMDOCK_API_KEY"  # where Codex reads the server's API key from (env_key)


@dataclass(frozen=True)
class Target:
    """What an agent is pointed at: the server, the model key and its loaded context length."""

    server: Server
    model: str
    context_length: int

    @property
    def api_key(self) -> str:
        return self.server.api_key or "lmdock"  # lmdock without --api-key accepts any key


@dataclass(frozen=True)
class Launch:
    """The settings an agent starts with: environment variables, and arguments before the user's."""

    env: dict[str, str] = field(default_factory=dict)
    args: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Agent:
    title: str
    binary: str
    install: str  # the command that installs it
    settings: Callable[[Target], Launch]
    warnings: Callable[[Target], list[str]] = lambda target: []


def claude_settings(target: Target) -> Launch:
    """Every model tier, background and subagent call pinned to the loaded model (so Claude Code never
    asks for a model lmdock does not have), auto-compaction at the real context length, and no
    per-request attribution header (it would defeat the prompt cache)."""
    model = target.model
    env = {
        "ANTHROPIC_BASE_URL": target.server.base_url,
        "ANTHROPIC_AUTH_TOKEN": target.api_key,
        "ANTHROPIC_API_KEY": "",  # a key inherited from the shell would take precedence over the token
        "ANTHROPIC_MODEL": model,
        "CLAUDE_CODE_SUBAGENT_MODEL": model,
        "CLAUDE_CODE_AUTO_COMPACT_WINDOW": str(target.context_length),
        "CLAUDE_CODE_ATTRIBUTION_HEADER": "0",
    }
    for tier in ("OPUS", "SONNET", "HAIKU"):
        env[f"ANTHROPIC_DEFAULT_{tier}_MODEL"] = model
    return Launch(env=env)


def _claude_warnings(target: Target) -> list[str]:
    if target.model.startswith("claude-"):
        return [
            f"{target.model} starts with claude-: Claude Code will assume a 200K window and ignore "
            "CLAUDE_CODE_AUTO_COMPACT_WINDOW."
        ]
    return []


def codex_settings(target: Target) -> Launch:
    """lmdock as a Responses API provider, given as `-c` overrides (Codex's config.toml is left alone);
    hosted web search off (lmdock answers a hosted tool with a 400)."""
    provider = f"model_providers.{PROVIDER}"
    overrides = {
        "model_provider": PROVIDER,
        f"{provider}.name": PROVIDER,
        f"{provider}.base_url": f"{target.server.base_url}/v1",
        f"{provider}.wire_api": "responses",
        f"{provider}.stream_idle_timeout_ms": STREAM_IDLE_TIMEOUT_MS,
        "model": target.model,
        "model_context_window": target.context_length,
        "web_search": "disabled",
    }
    env = {}
    if target.server.api_key:
        overrides[f"{provider}.env_key"] = API_KEY_VAR
        env[API_KEY_VAR] = target.server.api_key
    args = [a for key, value in overrides.items() for a in ("-c", f"{key}={json.dumps(value)}")]
    return Launch(env=env, args=args)


def opencode_settings(target: Target) -> Launch:
    """lmdock as an Anthropic Messages API provider in OPENCODE_CONFIG_CONTENT (opencode merges it over
    its config files and then writes none), with no request, header or chunk timeout cutting a long
    prompt short."""
    model = {
        "name": target.model,
        "tool_call": True,
        # opencode compacts before context - output; lmdock clamps max_tokens to the context left
        "limit": {"context": target.context_length, "output": min(8192, target.context_length // 4)},
    }
    config = {
        "$schema": "https://opencode.ai/config.json",
        "provider": {
            PROVIDER: {
                "npm": "@ai-sdk/anthropic",  # built into opencode: nothing is downloaded
                "name": PROVIDER,
                "options": {
                    "baseURL": f"{target.server.base_url}/v1",
                    "apiKey": target.api_key,
                    "timeout": False,
                    "headerTimeout": STREAM_IDLE_TIMEOUT_MS,
                    "chunkTimeout": STREAM_IDLE_TIMEOUT_MS,
                },
                "models": {target.model: model},
            }
        },
        "model": f"{PROVIDER}/{target.model}",
        "small_model": f"{PROVIDER}/{target.model}",  # titles and summaries too
    }
    return Launch(env={"OPENCODE_CONFIG_CONTENT": json.dumps(config, separators=(",", ":"))})


AGENTS: dict[str, Agent] = {
    "claude": Agent(
        "Claude Code", "claude", "npm install -g @anthropic-ai/claude-code", claude_settings, _claude_warnings
    ),
    "codex": Agent("Codex CLI", "codex", "npm install -g @openai/codex", codex_settings),
    "opencode": Agent("opencode", "opencode", "npm install -g opencode-ai", opencode_settings),
}


def _loaded_model(server: Server, wanted: str | None) -> tuple[str, int]:
    """The model to use and its context length, loading it (or the default) if nothing fits."""
    models = server.request("GET", "/api/v1/models")["models"]
    for m in models:
        if m["state"] == "loaded" and (wanted is None or wanted.lower() in [m["key"], *m["aliases"]]):
            return m["key"], m["loaded_instances"][0]["config"]["context_length"]
    result = server.request("POST", "/api/v1/models/load", json={"model": wanted or "default"}, timeout=900)
    return result["model_instance_id"], result["config"]["context_length"]


def _sampling_line(server: Server, key: str) -> str | None:
    """The model's effective sampling defaults as the server reports them (the agents set none)."""
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


def find_agent(binary: str) -> str | None:
    """`node_modules/.bin/<binary>` in the current folder or above, or in lmdock's checkout, else PATH."""
    here = Path.cwd().resolve()
    checkout = Path(__file__).resolve().parents[3]
    for folder in [here, *here.parents, checkout]:
        candidate = folder / "node_modules" / ".bin" / binary
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return shutil.which(binary)


def _shown(text: str, secret: str | None) -> str:
    return text.replace(secret, "…") if secret else text


def _launch(agent: Agent, ctx: typer.Context, model: str | None, print_only: bool, host: str, port: int):
    server = Server(host, port)
    key, context_length = _loaded_model(server, model)
    target = Target(server, key, context_length)
    settings = agent.settings(target)
    for warning in agent.warnings(target):
        err_console.print(f"[yellow]{warning}[/yellow]", highlight=False)
    sampling = _sampling_line(server, key)
    if print_only:  # shell lines: stdout stays `eval`-able, the sampling note goes to stderr
        for name, value in settings.env.items():
            console.print(
                f"export {name}={shlex.quote(value)}", highlight=False, markup=False, soft_wrap=True
            )
        if settings.args:
            line = shlex.join([agent.binary, *settings.args])
            console.print(line, highlight=False, markup=False, soft_wrap=True)
        if sampling:
            err_console.print(
                f"# sampling for requests that set none: {sampling}", highlight=False, markup=False
            )
        return
    binary = find_agent(agent.binary)
    if binary is None:
        fail(f"{agent.title} is not installed: {agent.install}")
    secret = server.api_key
    err_console.print(f"Starting {agent.title} on {key} (context {context_length}) at {server.base_url}")
    for name, value in settings.env.items():
        shown = _shown(shlex.quote(value), secret)
        err_console.print(f"  {name}={shown}", highlight=False, markup=False, soft_wrap=True)
    if settings.args:
        shown = _shown(shlex.join(settings.args), secret)
        err_console.print(f"  {agent.binary} {shown}", highlight=False, markup=False, soft_wrap=True)
    if sampling:
        err_console.print(f"  sampling for requests that set none: {sampling}", highlight=False, markup=False)
    argv = [binary, *settings.args, *ctx.args]
    os.execvpe(binary, argv, {**os.environ, **settings.env})


def _command(name: str, agent: Agent) -> None:
    """Register `lmdock launch <name>`: the same options for every agent."""

    def command(
        ctx: typer.Context,
        model: Annotated[
            str | None, typer.Option("--model", "-m", help="Model key (default: the loaded one).")
        ] = None,
        print_only: Annotated[
            bool,
            typer.Option(
                "--print-env",
                "--print",
                help="Only print the settings as shell lines: the environment, then the command line "
                "when the agent takes them as arguments.",
            ),
        ] = False,
        host: HostOption = "127.0.0.1",
        port: PortOption = 1234,
    ) -> None:
        _launch(agent, ctx, model, print_only, host, port)

    command.__doc__ = f"Run {agent.title} against this server; arguments after `--` go to {agent.binary}."
    launch_app.command(name, context_settings={"allow_extra_args": True, "ignore_unknown_options": True})(
        command
    )


for _name, _agent in AGENTS.items():
    _command(_name, _agent)
