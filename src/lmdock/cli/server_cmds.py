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
    for name in ("STATE", "CONTEXT", "KV", "FA", "PARALLEL", "TTL", "SIZE", "CRASHES", "LAST CRASH"):
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
            _kv_label(config),
            {True: "on", False: "off"}.get(config.get("flash_attention"), "-"),
            str(config.get("parallel", "-")),
            f"{ttl}s" if ttl else "-",
            human_bytes(m["size_bytes"]) if m.get("size_bytes") else "-",
            str(worker.get("crashes", "-")),
            last or "-",
        )
    console.print(table)


def _kv_label(config: dict) -> str:
    """`q8_0`, or `q8_0/f16` when K and V differ; `-` for a model without a KV cache of its own."""
    k, v = config.get("cache_type_k"), config.get("cache_type_v")
    if not k:
        return "-"
    return k if k == v else f"{k}/{v}"


def _estimate_line(est: dict) -> str:
    return (
        f"about {human_bytes(est['total_bytes'])} (weights {human_bytes(est['weights_bytes'])}, "
        f"KV cache {human_bytes(est['kv_cache_bytes'])}, buffers and process "
        f"{human_bytes(est['compute_bytes'] + est['process_bytes'])})"
    )


def _print_estimate(result: dict) -> None:
    est = result["estimate"]
    console.print(
        f"{result['model']} at {est['context_length']} tokens of context, {_kv_label(est)} KV cache: "
        + _estimate_line(est),
        highlight=False,
    )
    for name, other in result.get("estimates", {}).items():
        console.print(f"  with {name} K/V: {_estimate_line(other)}", highlight=False)
    available = result.get("available_bytes")
    if available is not None:
        verdict = "fits" if result.get("fits") else "does NOT fit"
        console.print(f"Available for a load: {human_bytes(available)}; this {verdict}", highlight=False)


def load(
    model: ModelArgument,
    context_length: Annotated[
        int | None, typer.Option("--context-length", "-c", help="Context tokens.")
    ] = None,
    parallel: Annotated[int | None, typer.Option(help="Sequences decoded together.")] = None,
    ttl: Annotated[int | None, typer.Option(help="Unload after this many idle seconds.")] = None,
    cache_type_k: Annotated[
        str | None,
        typer.Option("--cache-type-k", "-ctk", help="KV cache type of K: f16, bf16, q8_0, q5_1, q4_0, ..."),
    ] = None,
    cache_type_v: Annotated[
        str | None,
        typer.Option("--cache-type-v", "-ctv", help="KV cache type of V (quantized needs flash attention)."),
    ] = None,
    flash_attn: Annotated[
        str | None, typer.Option("--flash-attn", "-fa", help="Flash attention: on, off or auto.")
    ] = None,
    flash_attention: Annotated[
        bool | None, typer.Option("--flash-attention/--no-flash-attention", help="LM Studio's spelling.")
    ] = None,
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
        "cache_type_k": cache_type_k,
        "cache_type_v": cache_type_v,
        "flash_attn": flash_attn,
        "flash_attention": flash_attention,
        "estimate_only": estimate_only,
    }
    result = Server(host, port).request(
        "POST", "/api/v1/models/load", json={k: v for k, v in body.items() if v is not None}, timeout=900
    )
    if as_json:
        console.print_json(json.dumps(result))
    elif estimate_only:
        _print_estimate(result)
    else:
        config = result["config"]
        fa = {True: "on", False: "off"}.get(config.get("flash_attention"), "?")
        console.print(
            f"Loaded {result['model_instance_id']} (context {config['context_length']}, "
            f"parallel {config['parallel']}, KV {_kv_label(config)}, flash attention {fa}) in "
            f"{result['load_time_seconds']:.1f}s",
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
