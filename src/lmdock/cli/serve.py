"""`lmdock serve`: start the HTTP server on the default (or given) model."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer
import uvicorn
from rich.console import Console
from rich.markup import escape

from lmdock.cli.progress import byte_progress
from lmdock.core.config import RequestLimits, Settings, default_models_dir, lmdock_home
from lmdock.core.errors import InvalidRequest
from lmdock.models.default_model import ensure_default_model

console = Console(stderr=True)
_DEFAULT = Settings.default
_LIMITS = RequestLimits()


def _split(values: list[str] | None) -> list[str]:
    """Repeatable options; an environment variable may hold several, comma-separated."""
    return [v.strip() for raw in values or [] for v in raw.split(",") if v.strip()]


def serve(
    host: Annotated[str, typer.Option(envvar="LMDOCK_HOST", help="Address to bind.")] = _DEFAULT("host"),
    port: Annotated[int, typer.Option(envvar="LMDOCK_PORT", help="Port to listen on.")] = _DEFAULT("port"),
    model: Annotated[
        str | None, typer.Option(envvar="LMDOCK_MODEL", help="Model key or path to a .gguf file.")
    ] = None,
    models_dir: Annotated[
        Path | None, typer.Option(envvar="LMDOCK_MODELS_DIR", help="Model store (default ~/.lmdock/models).")
    ] = None,
    ctx_size: Annotated[
        int,
        typer.Option(
            envvar="LMDOCK_CTX_SIZE",
            help="Context tokens (0: the largest that fits the free memory, up to the model's trained context).",
        ),
    ] = _DEFAULT("ctx_size"),
    cache_type_k: Annotated[
        str,
        typer.Option(
            envvar="LMDOCK_CACHE_TYPE_K",
            help="KV cache type of K: f16, bf16, f32, q8_0, q5_1, q5_0, q4_1, iq4_nl, q4_0.",
        ),
    ] = _DEFAULT("cache_type_k"),
    cache_type_v: Annotated[
        str,
        typer.Option(
            envvar="LMDOCK_CACHE_TYPE_V", help="KV cache type of V (a quantized one needs flash attention)."
        ),
    ] = _DEFAULT("cache_type_v"),
    flash_attn: Annotated[
        str,
        typer.Option(
            envvar="LMDOCK_FLASH_ATTN",
            help="Flash attention: on, off or auto (llama.cpp decides; on for CPU).",
        ),
    ] = _DEFAULT("flash_attn"),
    memory_budget: Annotated[
        int,
        typer.Option(
            envvar="LMDOCK_MEMORY_BUDGET",
            help="MiB a model load may plan for (0: what the machine has available now, less a margin).",
        ),
    ] = _DEFAULT("memory_budget"),
    threads: Annotated[
        int, typer.Option(envvar="LMDOCK_THREADS", help="CPU threads (0: all cores).")
    ] = _DEFAULT("threads"),
    parallel: Annotated[
        int, typer.Option(envvar="LMDOCK_PARALLEL", help="Sequences decoded together.")
    ] = _DEFAULT("parallel"),
    cached_slots: Annotated[
        int, typer.Option(envvar="LMDOCK_CACHED_SLOTS", help="Idle sequences kept as prefix cache.")
    ] = _DEFAULT("cached_slots"),
    batch_size: Annotated[
        int, typer.Option(envvar="LMDOCK_BATCH_SIZE", help="Tokens evaluated per engine step at most.")
    ] = _DEFAULT("batch_size"),
    api_key: Annotated[
        list[str] | None,
        typer.Option(envvar="LMDOCK_API_KEY", help="Required API key (repeatable; env: comma-separated)."),
    ] = None,
    allow_unauthenticated: Annotated[
        bool,
        typer.Option(envvar="LMDOCK_ALLOW_UNAUTHENTICATED", help="Allow a non-loopback bind without a key."),
    ] = _DEFAULT("allow_unauthenticated"),
    max_queue: Annotated[
        int, typer.Option(envvar="LMDOCK_MAX_QUEUE", help="Waiting requests before 529.")
    ] = _DEFAULT("max_queue"),
    cache_ram: Annotated[
        int, typer.Option(envvar="LMDOCK_CACHE_RAM", help="MiB of host RAM for evicted prompt caches.")
    ] = _DEFAULT("cache_ram_mib"),
    chunk_reuse_min: Annotated[
        int,
        typer.Option(
            envvar="LMDOCK_CHUNK_REUSE_MIN",
            help="Shortest cached run of tokens reused at a new position after a prompt differs (0: off).",
        ),
    ] = _DEFAULT("chunk_reuse_min"),
    cache_dir: Annotated[
        Path | None,
        typer.Option(envvar="LMDOCK_CACHE_DIR", help="Prompt-cache folder that survives restarts."),
    ] = None,
    cache_disk_mib: Annotated[
        int,
        typer.Option(
            envvar="LMDOCK_CACHE_DISK_MIB",
            help="MiB the prompt-cache folder may hold on disk, all models together (0: do not save).",
        ),
    ] = _DEFAULT("cache_disk_mib"),
    db_path: Annotated[
        Path | None,
        typer.Option(
            envvar="LMDOCK_DB_PATH",
            help="SQLite database for batches and stored responses (default LMDOCK_HOME/lmdock.db).",
        ),
    ] = None,
    max_loaded: Annotated[
        int, typer.Option(envvar="LMDOCK_MAX_LOADED", help="Models loaded at once.")
    ] = _DEFAULT("max_loaded"),
    ttl: Annotated[
        int,
        typer.Option(envvar="LMDOCK_TTL", help="Idle seconds before a just-in-time load unloads (0: never)."),
    ] = _DEFAULT("ttl_seconds"),
    cors_origin: Annotated[
        list[str] | None,
        typer.Option(envvar="LMDOCK_CORS_ORIGIN", help="Allowed browser origin (repeatable)."),
    ] = None,
    max_body_bytes: Annotated[
        int, typer.Option(envvar="LMDOCK_MAX_BODY_BYTES", help="Largest request body accepted (413 above).")
    ] = _DEFAULT("max_body_bytes"),
    allowed_host: Annotated[
        list[str] | None,
        typer.Option(
            envvar="LMDOCK_ALLOWED_HOST",
            help="Extra Host header name to serve (repeatable; '*': any). Loopback names always pass.",
        ),
    ] = None,
    admin_key: Annotated[
        list[str] | None,
        typer.Option(
            envvar="LMDOCK_ADMIN_KEY",
            help="Key required by model load/unload/download (repeatable). Default: none, those routes "
            "take the API keys like every other route.",
        ),
    ] = None,
    max_messages: Annotated[int, typer.Option(envvar="LMDOCK_MAX_MESSAGES", help="Messages per request.")] = (
        _LIMITS.max_messages
    ),
    max_tools: Annotated[int, typer.Option(envvar="LMDOCK_MAX_TOOLS", help="Tools per request.")] = (
        _LIMITS.max_tools
    ),
    max_stop_sequences: Annotated[
        int, typer.Option(envvar="LMDOCK_MAX_STOP_SEQUENCES", help="Stop sequences per request.")
    ] = _LIMITS.max_stop_sequences,
    max_stop_length: Annotated[
        int, typer.Option(envvar="LMDOCK_MAX_STOP_LENGTH", help="Characters of one stop sequence.")
    ] = _LIMITS.max_stop_length,
    max_schema_depth: Annotated[
        int, typer.Option(envvar="LMDOCK_MAX_SCHEMA_DEPTH", help="Nesting levels of a tool/output schema.")
    ] = _LIMITS.max_schema_depth,
    max_schema_bytes: Annotated[
        int, typer.Option(envvar="LMDOCK_MAX_SCHEMA_BYTES", help="JSON bytes of a tool/output schema.")
    ] = _LIMITS.max_schema_bytes,
    max_embedding_inputs: Annotated[
        int, typer.Option(envvar="LMDOCK_MAX_EMBEDDING_INPUTS", help="Inputs per embeddings request.")
    ] = _LIMITS.max_embedding_inputs,
    max_embedding_tokens: Annotated[
        int, typer.Option(envvar="LMDOCK_MAX_EMBEDDING_TOKENS", help="Tokens per embeddings request.")
    ] = _LIMITS.max_embedding_tokens,
    grammar_timeout: Annotated[
        float,
        typer.Option(envvar="LMDOCK_GRAMMAR_TIMEOUT", help="Seconds to compile a tool/output grammar."),
    ] = _LIMITS.grammar_timeout,
    responses_max_stored: Annotated[
        int,
        typer.Option(
            envvar="LMDOCK_RESPONSES_MAX_STORED",
            help="Stored /v1/responses kept, newest first (0: no limit).",
        ),
    ] = _DEFAULT("responses_max_stored"),
    responses_max_age: Annotated[
        float,
        typer.Option(
            envvar="LMDOCK_RESPONSES_MAX_AGE", help="Days a stored /v1/responses is kept (0: no limit)."
        ),
    ] = _DEFAULT("responses_max_age_days"),
    responses_max_mib: Annotated[
        int,
        typer.Option(
            envvar="LMDOCK_RESPONSES_MAX_MIB",
            help="MiB stored /v1/responses may hold (0: no limit; 429 above).",
        ),
    ] = _DEFAULT("responses_max_mib"),
    repack: Annotated[
        bool | None,
        typer.Option(
            "--repack/--no-repack",
            help="Use llama.cpp's extra weight buffer types (repacking, AMX); default: a CPU self-check "
            "decides (env LMDOCK_REPACK=1/0).",
        ),
    ] = _DEFAULT("repack"),
    unload_grace: Annotated[
        float,
        typer.Option(envvar="LMDOCK_UNLOAD_GRACE", help="Seconds an unload waits for requests in flight."),
    ] = _DEFAULT("unload_grace"),
    batch_slots: Annotated[
        int,
        typer.Option(
            envvar="LMDOCK_BATCH_SLOTS",
            help="Slots Message Batches may use at once (0: parallel - 1, min 1).",
        ),
    ] = _DEFAULT("batch_slots"),
    batch_retention_days: Annotated[
        float,
        typer.Option(envvar="LMDOCK_BATCH_RETENTION_DAYS", help="Days batch results are kept (0: forever)."),
    ] = _DEFAULT("batch_retention_days"),
    batches_max_mib: Annotated[
        int,
        typer.Option(
            envvar="LMDOCK_BATCHES_MAX_MIB",
            help="MiB Message Batches may hold, requests and results (0: no limit; 429 above).",
        ),
    ] = _DEFAULT("batches_max_mib"),
    upstream: Annotated[
        list[str] | None,
        typer.Option(
            envvar="LMDOCK_UPSTREAM",
            help="Serve a model from upstream engines: NAME=URL[,URL...] (repeatable; kind probed).",
        ),
    ] = None,
    upstream_config: Annotated[
        Path | None,
        typer.Option(
            envvar="LMDOCK_UPSTREAM_CONFIG", help="Upstream models file (default LMDOCK_HOME/upstreams.toml)."
        ),
    ] = None,
    log_level: Annotated[str, typer.Option(envvar="LMDOCK_LOG_LEVEL")] = "info",
) -> None:
    """Serve the Anthropic Messages API (and the rest) on HOST:PORT."""

    from lmdock.upstream.config import CONFIG_NAME, UpstreamConfigError, load_specs

    keys = [k for raw in api_key or [] for k in raw.split(",") if k.strip()]
    try:
        upstreams = load_specs(upstream_config or lmdock_home() / CONFIG_NAME, list(upstream or []))
    except UpstreamConfigError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    if upstream_config is not None and not upstream_config.is_file():
        console.print(f"[red]--upstream-config {upstream_config}: no such file[/red]")
        raise typer.Exit(2)
    try:
        settings = Settings(
            host=host,
            port=port,
            model=model,
            models_dir=models_dir or default_models_dir(),
            ctx_size=ctx_size,
            cache_type_k=cache_type_k,
            cache_type_v=cache_type_v,
            flash_attn=flash_attn,
            memory_budget=memory_budget,
            threads=threads,
            parallel=parallel,
            cached_slots=cached_slots,
            batch_size=batch_size,
            api_keys=keys,
            allow_unauthenticated=allow_unauthenticated,
            max_queue=max_queue,
            cache_ram_mib=cache_ram,
            chunk_reuse_min=chunk_reuse_min,
            cache_dir=cache_dir or lmdock_home() / "cache",
            cache_disk_mib=cache_disk_mib,
            db_path=db_path or lmdock_home() / "lmdock.db",
            max_loaded=max_loaded,
            ttl_seconds=ttl,
            cors_origins=list(cors_origin or []),
            max_body_bytes=max_body_bytes,
            allowed_hosts=_split(allowed_host),
            admin_keys=_split(admin_key),
            limits=RequestLimits(
                max_messages=max_messages,
                max_tools=max_tools,
                max_stop_sequences=max_stop_sequences,
                max_stop_length=max_stop_length,
                max_schema_depth=max_schema_depth,
                max_schema_bytes=max_schema_bytes,
                max_embedding_inputs=max_embedding_inputs,
                max_embedding_tokens=max_embedding_tokens,
                grammar_timeout=grammar_timeout,
            ),
            responses_max_stored=responses_max_stored,
            responses_max_age_days=responses_max_age,
            responses_max_mib=responses_max_mib,
            repack=repack,
            unload_grace=unload_grace,
            log_level=log_level,
            batch_slots=batch_slots,
            batch_retention_days=batch_retention_days,
            batches_max_mib=batches_max_mib,
            upstreams=upstreams,
        )
    except InvalidRequest as exc:  # an impossible KV cache combination: before any load
        console.print(f"[red]{escape(exc.message)}[/red]")
        raise typer.Exit(2) from None
    if not settings.is_loopback and not keys and not allow_unauthenticated:
        console.print(
            f"[red]Refusing to serve on {host} without an API key.[/red] "
            "Pass --api-key KEY, or --allow-unauthenticated if the network is trusted."
        )
        raise typer.Exit(2)
    if model is None:
        ensure_default_model(settings.models_dir, progress=byte_progress("Preparing the default model"))
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from lmdock.app import create_app

    console.print(f"lmdock serving on http://{host}:{port} (models: {settings.models_dir})")
    uvicorn.run(
        create_app(settings), host=host, port=port, log_level=log_level.lower(), timeout_keep_alive=30
    )
