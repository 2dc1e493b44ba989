"""A model in memory: its engine client (llama.cpp in a worker process, the vocabulary in this one) and
chat session, built from settings and load options. It is a `ServedModel` (models/served.py), and its
own `Embedder`."""

from __future__ import annotations

import asyncio
import os
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass, field

from lmdock.chat import ChatFormatter
from lmdock.chat.session import ChatSession
from lmdock.core.config import MAX_DEFAULT_CTX, Settings
from lmdock.core.kv_cache import KvCacheConfig
from lmdock.engine import (
    ContextParams,
    EngineClient,
    EngineConfig,
    EngineSpec,
    SpecConfig,
    Tokenizer,
    make_client,
)
from lmdock.engine.cpu_check import RepackVerdict, decide_repack
from lmdock.models.load_plan import LoadOptions, LoadPlan
from lmdock.models.sampling_defaults import sampling_defaults
from lmdock.models.store import ModelRecord


@dataclass
class LoadedModel:
    record: ModelRecord
    engine: EngineClient
    session: ChatSession
    options: LoadOptions
    kv_cache: KvCacheConfig
    repack: RepackVerdict
    loaded_at: float = field(default_factory=time.time)
    last_used: float = field(default_factory=time.monotonic)

    @property
    def key(self) -> str:
        return self.record.key

    @property
    def n_ctx(self) -> int:
        return self.engine.n_ctx

    @property
    def flash_attention(self) -> bool | None:
        """Whether flash attention runs (llama.cpp resolves `auto` when it makes the context)."""
        info = self.engine.info
        return info.flash_attn if info else None

    @property
    def vocab(self) -> Tokenizer:
        return self.engine.vocab

    @property
    def busy(self) -> bool:
        return bool(self.engine.in_flight or self.engine.active_count or self.engine.queue_depth)

    def idle_seconds(self, now: float) -> float:
        """Time since the model was last asked for or last finished a request (0 while busy)."""
        if self.busy:
            return 0.0
        return now - max(self.last_used, self.engine.last_activity)

    def touch(self) -> None:
        self.last_used = time.monotonic()

    @property
    def crashes(self) -> int:
        return self.engine.crashes

    # --- Embedder: the embeddings context beside the engine, in the worker process ---------------------

    @property
    def embedder(self) -> LoadedModel:
        return self

    @property
    def n_embd(self) -> int | None:
        return self.engine.info.n_embd if self.engine.info else None

    def embedding_tokens(self, text: str) -> list[int]:
        return self.vocab.tokenize(text, add_special=True, parse_special=False)

    def hold(self) -> AbstractContextManager[None]:
        """Keep the model loaded while a request prepares or embeds."""
        return self.engine.hold()

    async def embed(self, inputs: list[list[int]]) -> tuple[list, int]:
        return await self.engine.embed(inputs)

    def backend(self) -> dict:
        """How llama.cpp runs this model: weight buffer types and the repack decision."""
        info = self.engine.info
        return {
            "buffer_types": dict(info.buffer_types) if info else {},
            "context_buffers": dict(info.context_buffers) if info else {},
            "extra_buffer_types": self.repack.repack,
            "repack_decision": self.repack.as_dict(),
        }

    async def close(self, grace: float = 30.0) -> None:
        """Let in-flight requests finish (up to `grace` seconds), stop the worker, free the vocabulary."""
        await self.engine.close(grace)


async def load(plan: LoadPlan, settings: Settings, on_failed=None) -> LoadedModel:
    """Start a worker process for a checked plan and wait until it has loaded and warmed up."""
    record, options, kv_cache = plan.record, plan.options, plan.kv_cache
    parallel = options.parallel or settings.parallel
    repack = await asyncio.to_thread(
        decide_repack,
        record.path,
        record.key,
        record.metadata.quantization,
        settings.threads,
        settings.repack,
        kv_cache,
    )
    params = ContextParams(
        n_ctx=plan.context_length,
        n_batch=settings.batch_size,
        n_seq_max=parallel
        + settings.cached_slots
        + 1,  # + the scratch sequence chunk reuse moves runs through
        n_threads=settings.threads,
        kv=kv_cache,
        use_extra_bufts=repack.repack,
    )
    spec = EngineSpec(
        key=record.key,
        path=os.path.abspath(record.path),  # the worker runs in another directory
        params=params,
        engine=EngineConfig(
            parallel=parallel,
            max_queue=settings.max_queue,
            chunk_reuse_min=settings.chunk_reuse_min,
            speculation=SpecConfig(settings.spec_type, settings.spec_draft_max, settings.spec_ngram_min),
        ),
        cache_ram_bytes=settings.cache_ram << 20,
        cache_dir=os.path.abspath(settings.cache_dir)
        if settings.cache_dir is not None and settings.cache_disk_mib > 0
        else None,
        cache_disk_bytes=settings.cache_disk_mib << 20,
        max_ctx=MAX_DEFAULT_CTX,
        log_level=settings.log_level,
    )
    engine = make_client(spec, on_failed=on_failed)
    info = await engine.start()
    formatter = ChatFormatter(
        info.chat_template,
        bos_token=info.bos_text,
        eos_token=info.eos_text,
        special_tokens=info.special_tokens,
    )
    return LoadedModel(
        record=record,
        engine=engine,
        session=ChatSession(engine, formatter, lambda: sampling_defaults(record).params),
        options=options,
        kv_cache=kv_cache,
        repack=repack,
    )
