"""A model in memory: llama.cpp model + engine + chat session, built from settings and load options."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from lmdock.chat import ChatFormatter, special_tokens_of
from lmdock.chat.session import ChatSession
from lmdock.config import Settings
from lmdock.engine import ContextParams, Engine, EngineConfig, LlamaModel, PromptCache, model_fingerprint
from lmdock.models.sampling_defaults import sampling_defaults
from lmdock.models.store import ModelRecord

MAX_DEFAULT_CTX = 32768


@dataclass
class LoadOptions:
    """Per-load settings (the management API and CLI can override the server defaults)."""

    ctx_size: int | None = None
    parallel: int | None = None
    ttl_seconds: int | None = None
    flash_attn: bool | None = None  # None: llama.cpp's automatic choice


@dataclass
class LoadedModel:
    record: ModelRecord
    llama: LlamaModel
    engine: Engine
    session: ChatSession
    options: LoadOptions
    loaded_at: float = field(default_factory=time.time)
    last_used: float = field(default_factory=time.monotonic)

    @property
    def key(self) -> str:
        return self.record.key

    @property
    def n_ctx(self) -> int:
        return self.llama.n_ctx

    @property
    def busy(self) -> bool:
        return bool(self.engine.active_count or self.engine.queue_depth)

    def idle_seconds(self, now: float) -> float:
        """Time since the model was last asked for or last finished a request (0 while busy)."""
        if self.busy:
            return 0.0
        return now - max(self.last_used, self.engine.last_activity)

    def touch(self) -> None:
        self.last_used = time.monotonic()

    def close(self) -> None:
        self.engine.close()


def load(record: ModelRecord, settings: Settings, options: LoadOptions) -> LoadedModel:
    """Load a model file and start its engine thread (blocking; call from a worker thread)."""
    parallel = options.parallel or settings.parallel
    requested_ctx = options.ctx_size or settings.ctx_size
    params = ContextParams(
        n_ctx=requested_ctx or 0,
        n_batch=settings.batch_size,
        n_ubatch=settings.batch_size,
        n_seq_max=parallel + EngineConfig.cached_slots,
        n_threads=settings.threads,
        flash_attn=options.flash_attn,
    )
    llama = LlamaModel(record.path, params, default_ctx_cap=MAX_DEFAULT_CTX)
    cache_dir = None
    if settings.cache_dir is not None:
        key = model_fingerprint(record.path, f"ctx={llama.n_ctx}|fa={options.flash_attn}|kv=f16")
        cache_dir = settings.cache_dir / key
    cache = PromptCache(ram_bytes=settings.cache_ram_mib << 20, disk_dir=cache_dir)
    engine = Engine(llama, EngineConfig(parallel=parallel, max_queue=settings.max_queue), cache)
    formatter = ChatFormatter(
        llama.chat_template(),
        bos_token=llama.token_text(llama.bos_id),
        eos_token=llama.token_text(llama.eos_id),
        special_tokens=special_tokens_of(engine.constraints.tokenizer),
    )
    return LoadedModel(
        record=record,
        llama=llama,
        engine=engine,
        session=ChatSession(engine, formatter, lambda: sampling_defaults(record).params),
        options=options,
    )
