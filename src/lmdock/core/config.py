"""Settings: command-line flags > LMDOCK_* environment variables > defaults.

The defaults live here only: `lmdock serve` takes its flag defaults from `Settings`, so
`create_app(Settings())` serves exactly what `lmdock serve` with no flags does."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmdock.core.kv_cache import KvCacheConfig

MAX_DEFAULT_CTX = 32768  # the default context of a model whose trained length or the free memory is unknown


def lmdock_home() -> Path:
    return Path(os.environ.get("LMDOCK_HOME", Path.home() / ".lmdock"))


def default_models_dir() -> Path:
    return Path(os.environ.get("LMDOCK_MODELS_DIR", lmdock_home() / "models"))


@dataclass
class RequestLimits:
    """Per-request limits; past one, a 400 that names the limit and its flag."""

    max_messages: int = 10_000
    max_tools: int = 512
    max_stop_sequences: int = 16
    max_stop_length: int = 256  # characters of one stop sequence
    max_schema_depth: int = 64  # JSON nesting levels of one tool or response schema
    max_schema_bytes: int = 256 << 10  # JSON size of one tool or response schema
    max_embedding_inputs: int = 256
    max_embedding_tokens: int = 65_536  # all inputs of one embeddings request together
    grammar_timeout: float = 10.0  # seconds to compile a request's output grammar


@dataclass
class Settings:
    """Everything `lmdock serve` can be told. Field names match the flags and LMDOCK_<NAME> variables."""

    host: str = "127.0.0.1"
    port: int = 1234
    model: str | None = None
    models_dir: Path = field(default_factory=default_models_dir)
    ctx_size: int = 0  # 0: the largest that fits the free memory, up to the model's trained context
    cache_type_k: str = "f16"  # KV cache element types, llama.cpp's names (-ctk/-ctv)
    cache_type_v: str = "f16"
    flash_attn: str = "auto"  # on | off | auto (llama.cpp decides; on for CPU)
    memory_budget: int = 0  # RAM a model load may plan for (0: what the machine has available)
    threads: int = 0  # 0: every core
    parallel: int = 4
    cached_slots: int = 4  # idle KV sequences kept as prefix cache beside the `parallel` running ones
    batch_size: int = 512
    api_keys: list[str] = field(default_factory=list)
    allow_unauthenticated: bool = False
    max_queue: int = 64
    cache_ram_mib: int = 2048
    chunk_reuse_min: int = 256  # shortest cached run moved to a new position (0: prefix reuse only)
    cache_dir: Path = field(default_factory=lambda: lmdock_home() / "cache")
    cache_disk_mib: int = 4096  # bytes the prompt-cache folder may hold (0: do not persist)
    db_path: Path = field(default_factory=lambda: lmdock_home() / "lmdock.db")  # batches, stored responses
    max_body_bytes: int = 32 << 20
    max_loaded: int = 1
    ttl_seconds: int = 3600
    cors_origins: list[str] = field(default_factory=list)
    # hostile input (issue 10): browser safety and per-request limits, each a `serve` flag
    allowed_hosts: list[str] = field(default_factory=list)
    admin_keys: list[str] = field(default_factory=list)
    limits: RequestLimits = field(default_factory=lambda: RequestLimits())
    responses_max_stored: int = 10_000  # stored Responses API responses kept (0: no limit)
    responses_max_age_days: float = 30.0  # and for how long (0: no limit)
    responses_max_mib: int = 1024  # bytes stored responses may hold (0: no limit)
    repack: bool | None = None  # llama.cpp extra buffer types: None = CPU self-check decides
    unload_grace: float = 30.0  # seconds an unload waits for requests in flight
    log_level: str = "info"
    batch_slots: int = 0  # engine slots Message Batches may hold (0: parallel - 1, at least 1)
    batch_retention_days: float = 29.0  # results of ended batches are kept this long (0: forever)
    batches_max_mib: int = 2048  # bytes Message Batches may hold, requests and results (0: no limit)
    upstreams: list[Any] = field(default_factory=list)  # lmdock.upstream.UpstreamSpec, one per model

    def __post_init__(self) -> None:
        if self.threads <= 0:
            self.threads = max(1, os.cpu_count() or 1)
        kv = self.kv_cache.checked()  # an impossible combination stops `serve` before any load
        self.cache_type_k, self.cache_type_v, self.flash_attn = kv.type_k, kv.type_v, kv.flash_attn

    @property
    def kv_cache(self) -> KvCacheConfig:
        return KvCacheConfig(self.cache_type_k, self.cache_type_v, self.flash_attn)

    @classmethod
    def default(cls, name: str) -> Any:
        """A field's declared default (what a flag shows and falls back to)."""
        return cls.__dataclass_fields__[name].default

    @property
    def is_loopback(self) -> bool:
        return self.host in ("127.0.0.1", "localhost", "::1") or self.host.startswith("127.")
