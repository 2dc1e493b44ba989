"""What an engine client is made from: which model file, the llama.cpp context, the scheduler's limits and
the prompt cache's budgets. Plain data with no llama.cpp import, so the server builds it cheaply and the
worker process receives it as its first message."""

from __future__ import annotations

from dataclasses import dataclass, field

from lmdock.core.kv_cache import KvCacheConfig

CACHE_DISK_BYTES = 4 << 30  # the prompt-cache folder's budget when none is set
CACHE_MIN_TOKENS = 256  # shorter prompts are not worth a RAM or disk copy


@dataclass
class ContextParams:
    """What the engine asks of llama.cpp for one loaded model. No defaults for what a user sets: those
    come from `lmdock.core.config.Settings` (through models/loaded.py), the one place defaults live."""

    n_ctx: int  # 0: the model's trained context, at most `default_ctx_cap`
    n_batch: int
    n_seq_max: int
    n_threads: int
    n_ubatch: int | None = None  # None: n_batch
    kv: KvCacheConfig = field(default_factory=KvCacheConfig)  # cache types and flash attention
    use_extra_bufts: bool = True  # llama.cpp's extra weight buffer types (CPU repacking, AMX)


@dataclass(frozen=True)
class SpecConfig:
    """Draftless speculative decoding (`--spec-type`, `--spec-draft-max`, `--spec-ngram-min`)."""

    type: str = "none"  # core.config.SPEC_TYPES: "ngram" or "none" (the server's default: Settings.spec_type)
    draft_max: int = 48  # most draft tokens one sequence verifies in one step (bench/speculation.py)
    ngram_min: int = 3  # tokens of the n-gram looked up in the history (a longer match is preferred)

    @property
    def enabled(self) -> bool:
        return self.type != "none" and self.draft_max > 0


@dataclass
class EngineConfig:
    """Scheduling settings (from `lmdock.core.config.Settings`; the tuning knob has its own default)."""

    parallel: int
    max_queue: int
    prefill_chunk_while_decoding: int = 128
    chunk_reuse_min: int = 256  # --chunk-reuse-min: shortest cached run moved to a new position; 0: off
    speculation: SpecConfig = field(default_factory=SpecConfig)  # --spec-type, --spec-draft-max, ...


@dataclass
class EngineSpec:
    """One model's engine: everything `make_client` needs, in or out of process."""

    key: str
    path: str
    params: ContextParams
    engine: EngineConfig
    cache_ram_bytes: int
    cache_dir: str | None  # prompt-cache files go to a subfolder keyed by the model and KV layout
    max_ctx: int  # the cap on a context of 0 (the model's trained context)
    log_level: str = "INFO"
    cache_disk_bytes: int = CACHE_DISK_BYTES  # the whole cache folder's budget (other models' included)
    cache_min_tokens: int = CACHE_MIN_TOKENS
