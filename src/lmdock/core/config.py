"""Settings: the one table of what `lmdock serve` can be told, and every LMDOCK_* variable read.

Each field of `Settings` (and of its `limits` group, `RequestLimits`) is one `serve` flag. The field
carries its help; its flag and variable follow from its name: `ctx_size` is `--ctx-size` and
`LMDOCK_CTX_SIZE`; a list field collects a repeatable flag named for one item (`api_keys` is `--api-key`,
`LMDOCK_API_KEY`), whose values may also be comma-separated. `lmdock serve`'s flags are generated from
`options()`, so adding a setting is adding a field here with `setting(default, help=...)`.

Precedence: flag > variable > the default declared here, so `create_app(Settings())` serves what
`lmdock serve` with no flags does. Variables that are not flags (`LMDOCK_HOME`, `LMDOCK_SIGNING_KEY`,
`LMDOCK_PING_INTERVAL`) are read by the functions at the end of this module, the only place that reads
the environment for lmdock's own variables."""

from __future__ import annotations

import dataclasses
import os
import typing
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from lmdock.core.errors import InvalidRequest
from lmdock.core.kv_cache import KV_CACHE_TYPES, KvCacheConfig

MAX_DEFAULT_CTX = 32768  # the default context of a model whose trained length or the free memory is unknown
SPEC_TYPES = ("ngram", "none")  # --spec-type: draftless (prompt lookup) speculation, or none
ENV_PREFIX = "LMDOCK_"


def setting(
    default: Any = MISSING,
    *,
    help: str,
    factory: Callable[[], Any] | None = None,
    flag: str | None = None,
    commas: bool = True,
) -> Any:
    """One flag's field. `factory` computes a default at start-up (its flag shows none); `flag` overrides
    the name-derived flag (only `--repack/--no-repack`); `commas=False` keeps a list value whole."""
    metadata = {"help": help, "flag": flag, "commas": commas}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def lmdock_home() -> Path:
    """LMDOCK_HOME (default ~/.lmdock): models, prompt cache, database, signing key, presets."""
    return Path(os.environ.get("LMDOCK_HOME", Path.home() / ".lmdock"))


def default_models_dir() -> Path:
    return Path(os.environ.get("LMDOCK_MODELS_DIR", lmdock_home() / "models"))


def _default_cache_dir() -> Path:
    return lmdock_home() / "cache"


def _default_db_path() -> Path:
    return lmdock_home() / "lmdock.db"


@dataclass
class RequestLimits:
    """Per-request limits; past one, a 400 that names the limit and its flag."""

    max_messages: int = setting(10_000, help="Messages per request.")
    max_tools: int = setting(512, help="Tools per request.")
    max_stop_sequences: int = setting(16, help="Stop sequences per request.")
    max_stop_length: int = setting(256, help="Characters of one stop sequence.")
    max_schema_depth: int = setting(64, help="Nesting levels of a tool/output schema.")
    max_schema_bytes: int = setting(256 << 10, help="JSON bytes of a tool/output schema.")
    max_embedding_inputs: int = setting(256, help="Inputs per embeddings request.")
    max_embedding_tokens: int = setting(65_536, help="Tokens of all inputs of one embeddings request.")
    grammar_timeout: float = setting(10.0, help="Seconds to compile a tool/output grammar.")


@dataclass
class Settings:
    """Everything `lmdock serve` can be told; one field per flag (see the module docstring)."""

    host: str = setting("127.0.0.1", help="Address to bind.")
    port: int = setting(1234, help="Port to listen on.")
    model: str | None = setting(None, help="Model key or path to a .gguf file.")
    models_dir: Path = setting(factory=default_models_dir, help="Model store (default ~/.lmdock/models).")
    ctx_size: int = setting(
        0,
        help="Context tokens (0: the largest that fits the free memory, up to the model's trained context).",
    )
    cache_type_k: str = setting(
        "f16", help=f"KV cache type of K (llama.cpp's -ctk): {', '.join(KV_CACHE_TYPES)}."
    )
    cache_type_v: str = setting(
        "f16", help="KV cache type of V (-ctv); a quantized one needs flash attention."
    )
    flash_attn: str = setting(
        "auto", help="Flash attention: on, off or auto (llama.cpp decides; on for a CPU)."
    )
    memory_budget: int = setting(
        0, help="MiB a model load may plan for (0: what the machine has available, less a margin)."
    )
    threads: int = setting(0, help="CPU threads (0: all cores).")
    parallel: int = setting(4, help="Sequences decoded together.")
    cached_slots: int = setting(4, help="Idle sequences kept as prefix cache beside the running ones.")
    batch_size: int = setting(512, help="Tokens evaluated per engine step at most.")
    api_keys: list[str] = setting(
        factory=list, help="Required API key (repeatable; comma-separated in the variable)."
    )
    allow_unauthenticated: bool = setting(False, help="Allow a non-loopback bind without a key.")
    max_queue: int = setting(64, help="Waiting requests before 529.")
    cache_ram: int = setting(2048, help="MiB of host RAM for evicted prompt caches.")
    chunk_reuse_min: int = setting(
        256, help="Shortest cached run of tokens reused at a new position after a prompt differs (0: off)."
    )
    spec_type: str = setting(
        "ngram",
        help="Speculative decoding: ngram (draft tokens looked up in the sequence's own prompt and output, "
        "verified in the batch by the sequence's own sampler) or none.",
    )
    spec_draft_max: int = setting(48, help="Most draft tokens one sequence verifies per step (0: off).")
    spec_ngram_min: int = setting(3, help="Tokens of the n-gram looked up to propose a draft.")
    cache_dir: Path = setting(
        factory=_default_cache_dir,
        help="Prompt-cache folder that survives restarts (default ~/.lmdock/cache).",
    )
    cache_disk_mib: int = setting(
        4096, help="MiB the prompt-cache folder may hold on disk, all models together (0: do not save)."
    )
    db_path: Path = setting(
        factory=_default_db_path,
        help="SQLite database for batches and stored responses (default LMDOCK_HOME/lmdock.db).",
    )
    max_body_bytes: int = setting(32 << 20, help="Largest request body accepted (413 above).")
    max_loaded: int = setting(1, help="Models loaded at once.")
    ttl: int = setting(3600, help="Idle seconds before a just-in-time load unloads (0: never).")
    cors_origins: list[str] = setting(factory=list, help="Allowed browser origin (repeatable).")
    allowed_hosts: list[str] = setting(
        factory=list,
        help="Extra Host header name to serve (repeatable; '*': any). Loopback names always pass.",
    )
    admin_keys: list[str] = setting(
        factory=list,
        help="Key required by model load/unload/download (repeatable). Default: none, those routes "
        "take the API keys like every other route.",
    )
    limits: RequestLimits = field(default_factory=RequestLimits)  # a group: each of its fields is a flag
    responses_max_stored: int = setting(10_000, help="Stored /v1/responses kept, newest first (0: no limit).")
    responses_max_age: float = setting(30.0, help="Days a stored /v1/responses is kept (0: no limit).")
    responses_max_mib: int = setting(1024, help="MiB stored /v1/responses may hold (0: no limit; 429 above).")
    repack: bool | None = setting(
        None,
        flag="--repack/--no-repack",
        help="Use llama.cpp's extra weight buffer types (repacking, AMX); default: a CPU self-check decides.",
    )
    unload_grace: float = setting(30.0, help="Seconds an unload waits for requests in flight.")
    log_level: str = setting("info", help="Log level (debug, info, warning, error).")
    batch_slots: int = setting(0, help="Slots Message Batches may use at once (0: parallel - 1, min 1).")
    batch_retention_days: float = setting(29.0, help="Days batch results are kept (0: forever).")
    batches_max_mib: int = setting(
        2048, help="MiB Message Batches may hold, requests and results (0: no limit; 429 above)."
    )
    upstreams: list[str] = setting(
        factory=list,
        commas=False,
        help="Serve a model from upstream engines: NAME=URL[,URL...] (repeatable; kind probed).",
    )
    upstream_config: Path | None = setting(
        None, help="Upstream models file (default LMDOCK_HOME/upstreams.toml)."
    )

    def __post_init__(self) -> None:
        if self.threads <= 0:
            self.threads = max(1, os.cpu_count() or 1)
        kv = self.kv_cache.checked()  # an impossible combination stops `serve` before any load
        self.cache_type_k, self.cache_type_v, self.flash_attn = kv.type_k, kv.type_v, kv.flash_attn
        self._check_speculation()

    @property
    def kv_cache(self) -> KvCacheConfig:
        return KvCacheConfig(self.cache_type_k, self.cache_type_v, self.flash_attn)

    def _check_speculation(self) -> None:
        """A bad speculation flag stops `serve` before anything loads."""
        if self.spec_type not in SPEC_TYPES:
            raise InvalidRequest(
                f"spec_type: '{self.spec_type}' is not one of {', '.join(SPEC_TYPES)}", param="spec_type"
            )
        if self.spec_draft_max < 0:
            raise InvalidRequest("spec_draft_max: must be 0 or more", param="spec_draft_max")
        if self.spec_ngram_min < 1:
            raise InvalidRequest("spec_ngram_min: must be 1 or more", param="spec_ngram_min")

    @property
    def is_loopback(self) -> bool:
        return self.host in ("127.0.0.1", "localhost", "::1") or self.host.startswith("127.")


@dataclass(frozen=True)
class Option:
    """One `lmdock serve` flag and the field it sets."""

    field: str  # the field's name, in Settings or (group "limits") in RequestLimits
    group: str | None
    flag: str  # "--ctx-size"; "--repack/--no-repack"
    env: str  # "LMDOCK_CTX_SIZE"
    help: str
    type: Any  # the field's annotation
    default: Any  # the declared default; MISSING where a factory computes it at start-up
    commas: bool  # list fields: each value may hold several, comma-separated

    @property
    def param(self) -> str:
        """The flag as a Python identifier: `ctx_size`, `api_key`, `repack`."""
        return self.flag.split("/")[0].removeprefix("--").replace("-", "_")

    @property
    def is_list(self) -> bool:
        return typing.get_origin(self.type) is list


def _options_of(cls: type, group: str | None) -> list[Option]:
    hints = typing.get_type_hints(cls)
    found: list[Option] = []
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            found += _options_of(hints[f.name], f.name)
            continue
        is_list = typing.get_origin(hints[f.name]) is list
        flag = f.metadata["flag"] or "--" + (f.name.removesuffix("s") if is_list else f.name).replace(
            "_", "-"
        )
        env = ENV_PREFIX + flag.split("/")[0].removeprefix("--").replace("-", "_").upper()
        found.append(
            Option(
                f.name, group, flag, env, f.metadata["help"], hints[f.name], f.default, f.metadata["commas"]
            )
        )
    return found


@cache
def options() -> tuple[Option, ...]:
    """Every `serve` flag, in declaration order."""
    return tuple(_options_of(Settings, None))


def option(field_name: str) -> Option:
    return next(o for o in options() if o.field == field_name)


def settings_from(values: Mapping[str, Any]) -> Settings:
    """Settings from parsed flag values keyed by `Option.param`; a value that is None or absent leaves
    the field at its default."""
    top: dict[str, Any] = {}
    limits: dict[str, Any] = {}
    for opt in options():
        value = values.get(opt.param)
        if value is None:
            continue
        if opt.is_list:
            value = _items(value, opt.commas)
        elif Path in (opt.type, *typing.get_args(opt.type)):
            value = Path(value)
        (limits if opt.group == "limits" else top)[opt.field] = value
    return Settings(**top, limits=RequestLimits(**limits))


def _items(values: Any, commas: bool) -> list[str]:
    parts = (part for raw in values for part in (raw.split(",") if commas else [raw]))
    return [p.strip() for p in parts if p.strip()]


def env_items(field_name: str) -> list[str]:
    """A list setting's values from its variable alone (CLI client commands send the server's keys)."""
    opt = option(field_name)
    return _items([os.environ.get(opt.env, "")], opt.commas)


# --- variables that are not flags -------------------------------------------------------------------


def signing_key_override() -> bytes | None:
    """LMDOCK_SIGNING_KEY: the key that signs thinking blocks (default: LMDOCK_HOME/signing.key)."""
    value = os.environ.get("LMDOCK_SIGNING_KEY")
    return value.encode() if value else None


def ping_interval() -> float:
    """LMDOCK_PING_INTERVAL: seconds between SSE keep-alive pings while nothing else is sent (default 10;
    Claude Code aborts after ~300 s of silence; tests shorten it)."""
    return float(os.environ.get("LMDOCK_PING_INTERVAL", "10"))


def test_crash_switch() -> str:
    """LMDOCK_TEST_CRASH (tests only, never set in use): "probe" | "first_decode", optionally
    "@<model key>": the worker kills itself with SIGSEGV at that point."""
    return os.environ.get("LMDOCK_TEST_CRASH", "")
