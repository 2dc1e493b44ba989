"""`lmdock status | ps | load | unload`: ask a running server about its models and change them."""

from __future__ import annotations

import json
from typing import Annotated

import httpx
import typer
from rich.table import Table

from lmdock.cli.client import HostOption, JsonOption, PortOption, Server, console, fail, human_bytes

ModelArgument = Annotated[str, typer.Argument(help="Model key or alias (see `lmdock ls`).")]


def status(host: HostOption = "127.0.0.1", port: PortOption = 1234, as_json: JsonOption = False) -> None:
    """Whether a server runs, and which models it has loaded."""
    server = Server(host, port)
    try:
        health = httpx.get(server.base_url + "/health", timeout=5).json()
    except (httpx.HTTPError, ValueError):
        if as_json:
            console.print_json(json.dumps({"running": False, "port": port}))
            raise typer.Exit(1) from None
        server.not_running()
    if as_json:
        console.print_json(json.dumps({"running": True, "port": port, **health}))
        return
    console.print(f"lmdock {health.get('version', '')} is running at {server.base_url}", highlight=False)
    console.print(f"Loaded: {', '.join(health.get('loaded') or []) or 'none'}", highlight=False)
    if health.get("loading"):
        console.print(f"Loading: {', '.join(health['loading'])}", highlight=False)
    upstreams = health.get("upstreams") or {}
    if upstreams:
        served = [f"{k} ({u['healthy_nodes']}/{len(u['nodes'])} nodes up)" for k, u in upstreams.items()]
        console.print(f"Upstream: {', '.join(served)}", highlight=False)
    if health.get("load_error"):
        console.print(f"[red]Last load error: {health['load_error']}[/red]", highlight=False)
    for key, worker in (health.get("workers") or {}).items():
        if worker.get("crashes"):
            console.print(
                f"[yellow]{key}: worker crashed {worker['crashes']} time(s), last: {worker['last_crash']}[/yellow]",
                highlight=False,
            )
    for key, why in (health.get("failed") or {}).items():
        console.print(f"[red]{key} failed: {why}[/red]", highlight=False)


def ps(host: HostOption = "127.0.0.1", port: PortOption = 1234, as_json: JsonOption = False) -> None:
    """List the models the server has loaded (or is loading)."""
    models = Server(host, port).request("GET", "/api/v1/models")["models"]
    active = [m for m in models if m["state"] != "not-loaded"]
    if as_json:
        console.print_json(json.dumps(active))
        return
    if not active:
        console.print("No models are loaded.")
        return
    table = Table(box=None)
    table.add_column("MODEL", no_wrap=True, min_width=max(len(m["key"]) for m in active))
    for name in ("STATE", "CONTEXT", "PARALLEL", "TTL", "SIZE", "CRASHES", "LAST CRASH"):
        table.add_column(name, no_wrap=name != "LAST CRASH")
    for m in active:
        instance = m["loaded_instances"][0] if m["loaded_instances"] else {}
        config = instance.get("config", {})
        worker = instance.get("worker", {})
        ttl = config.get("ttl_seconds")
        last = worker.get("last_crash") or (m.get("error") if m["state"] == "failed" else None)
        upstream = m.get("upstream")
        state = m["state"]
        if upstream:  # served by upstream nodes: say how many are healthy
            state = f"upstream {upstream['healthy_nodes']}/{len(upstream['nodes'])} up"
        table.add_row(
            m["key"],
            state,
            str(config.get("context_length", "-")),
            str(config.get("parallel", "-")),
            f"{ttl}s" if ttl else "-",
            human_bytes(m["size_bytes"]) if m.get("size_bytes") else "-",
            str(worker.get("crashes", "-")),
            last or "-",
        )
    console.print(table)


def load(
    model: ModelArgument,
    context_length: Annotated[
        int | None, typer.Option("--context-length", "-c", help="Context tokens.")
    ] = None,
    parallel: Annotated[int | None, typer.Option(help="Sequences decoded together.")] = None,
    ttl: Annotated[int | None, typer.Option(help="Unload after this many idle seconds.")] = None,
    flash_attention: Annotated[bool | None, typer.Option("--flash-attention/--no-flash-attention")] = None,
    estimate_only: Annotated[
        bool, typer.Option("--estimate-only", help="Print the memory estimate only.")
    ] = False,
    host: HostOption = "127.0.0.1",
    port: PortOption = 1234,
    as_json: JsonOption = False,
) -> None:
    """Load a model on the server (or reload it with other settings)."""
    body = {
        "model": model,
        "context_length": context_length,
        "parallel": parallel,
        "ttl": ttl,
        "flash_attention": flash_attention,
        "estimate_only": estimate_only,
    }
    result = Server(host, port).request(
        "POST", "/api/v1/models/load", json={k: v for k, v in body.items() if v is not None}, timeout=900
    )
    if as_json:
        console.print_json(json.dumps(result))
    elif estimate_only:
        est = result["estimate"]
        console.print(
            f"{result['model']} at {est['context_length']} tokens of context: about "
            f"{human_bytes(est['total_bytes'])} (weights {human_bytes(est['weights_bytes'])}, "
            f"KV cache {human_bytes(est['kv_cache_bytes'])})",
            highlight=False,
        )
    else:
        config = result["config"]
        console.print(
            f"Loaded {result['model_instance_id']} (context {config['context_length']}, "
            f"parallel {config['parallel']}) in {result['load_time_seconds']:.1f}s",
            highlight=False,
        )


def unload(
    model: Annotated[str | None, typer.Argument(help="Model key; omit with --all.")] = None,
    all_models: Annotated[bool, typer.Option("--all", "-a", help="Unload every loaded model.")] = False,
    host: HostOption = "127.0.0.1",
    port: PortOption = 1234,
) -> None:
    """Unload a model (or all of them) from the server."""
    server = Server(host, port)
    if all_models:
        models = server.request("GET", "/api/v1/models")["models"]
        names = [m["key"] for m in models if m["state"] == "loaded"]
    elif model:
        names = [model]
    else:
        fail("Name a model to unload, or pass --all.")
    for name in names:
        result = server.request("POST", "/api/v1/models/unload", json={"model": name})
        console.print(f"Unloaded {result['instance_id']}", highlight=False)
    if not names:
        console.print("No models are loaded.")
