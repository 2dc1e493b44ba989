"""Everything that runs llama.cpp for one model in one process, built from an `EngineSpec`: the weights
and context, the warm-up, the prompt cache, the step loop, and (on first use) the embeddings context.

The worker process serves one of these over its channel; the in-process client wraps one directly. Both
build it here, so tests run the engine that production runs.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from lmdock.engine.constraint import ConstraintFactory, special_tokens_of
from lmdock.engine.embeddings import Embedder
from lmdock.engine.engine import Engine
from lmdock.engine.llama_model import LlamaModel
from lmdock.engine.omp import on_own_thread
from lmdock.engine.prompt_cache import PromptCache, model_fingerprint
from lmdock.engine.spec import EngineSpec
from lmdock.engine.types import EngineInfo
from lmdock.engine.warmup import crash_if_asked, warm_up

log = logging.getLogger(__name__)


def _build_tokenizer(constraints: ConstraintFactory) -> None:
    try:
        constraints.tokenizer  # noqa: B018  (the property builds and keeps it)
    except Exception:
        log.exception("building the llguidance tokenizer failed; it is retried on first use")


def cache_layout(llama: LlamaModel) -> str:
    """Everything besides the model file that decides whether a saved KV state can be loaded into this
    context: the K and V element types, and whether flash attention runs (without it V is stored
    transposed); llama.cpp also rotates quantized K/V unless LLAMA_ATTN_ROT_DISABLE is set. States saved
    under another layout live in another folder, so they are misses, never loaded. The context size is
    not part of it: a state loads into any context with room for it (PromptCache skips longer ones), so
    a context chosen from the free memory may change without losing the cache."""
    kv = llama.params.kv
    rot = os.environ.get("LLAMA_ATTN_ROT_DISABLE", "")
    return f"k={kv.type_k}|v={kv.type_v}|fa={llama.flash_attn}|rot={rot}"


class LocalEngine:
    """One model's engine in this process; `close()` frees everything it holds."""

    def __init__(
        self,
        spec: EngineSpec,
        *,
        on_step: Callable[[], None] | None = None,
        on_failure: Callable[[str], None] | None = None,
    ) -> None:
        """Load, warm up and start the step loop (`on_step`, `on_failure`: see `Engine`)."""
        self.spec = spec
        started = time.monotonic()
        llama = LlamaModel(Path(spec.path), spec.params, default_ctx_cap=spec.max_ctx)
        try:
            # llguidance's tokenizer (about 1 s of Python) builds while the warm-up decode holds no GIL
            constraints = ConstraintFactory(llama.vocab, llama.n_vocab)
            builder = threading.Thread(target=_build_tokenizer, args=(constraints,), name="lltokenizer")
            builder.start()
            try:
                crash_if_asked("first_decode", spec.key)
                on_own_thread(lambda: warm_up(llama, 4, 1), "warm-up")  # no OpenMP pool stays (omp.py)
            finally:
                builder.join()
            self.engine = Engine(
                llama,
                spec.engine,
                self._prompt_cache(llama),
                on_step=on_step,
                on_failure=on_failure,
                constraints=constraints,
            )
        except BaseException:
            llama.close()
            raise
        self.info = EngineInfo(
            pid=os.getpid(),
            n_ctx=llama.n_ctx,
            n_vocab=llama.n_vocab,
            n_embd=llama.n_embd,
            chat_template=llama.chat_template(),
            bos_text=llama.token_text(int(llama.bos_id)),
            eos_text=llama.token_text(int(llama.eos_id)),
            special_tokens=special_tokens_of(constraints.tokenizer),
            buffer_types=dict(llama.buffer_types),
            load_seconds=time.monotonic() - started,
            flash_attn=llama.flash_attn,
            context_buffers=dict(llama.context_buffers),
        )
        self._embedder: Embedder | None = None
        self._embedder_lock = threading.Lock()

    def _prompt_cache(self, llama: LlamaModel) -> PromptCache:
        spec = self.spec
        cache_dir = None
        if spec.cache_dir is not None:
            cache_dir = Path(spec.cache_dir) / model_fingerprint(llama.path, cache_layout(llama))
        return PromptCache(
            ram_bytes=spec.cache_ram_bytes,
            disk_dir=cache_dir,
            disk_bytes=spec.cache_disk_bytes,
            min_tokens=spec.cache_min_tokens,
            max_tokens=llama.n_ctx,
        )

    def embed(self, inputs: list[list[int]]) -> tuple[list, int]:
        """Pooled, normalised embeddings of token lists, and the number of tokens embedded (on a thread of
        its own, so the caller's thread keeps no OpenMP pool: engine/omp.py)."""
        return on_own_thread(lambda: self._embed(inputs), "embed")

    def _embed(self, inputs: list[list[int]]) -> tuple[list, int]:
        with self._embedder_lock:
            if self._embedder is None:
                self._embedder = Embedder(Path(self.spec.path), n_threads=self.spec.params.n_threads)
            embedder = self._embedder
        vectors, n_tokens = [], 0
        for tokens in inputs:
            vectors.append(embedder.embed(tokens))
            n_tokens += len(tokens)
        return vectors, n_tokens

    def close(self) -> None:
        self.engine.close()
        with self._embedder_lock:
            if self._embedder is not None:
                self._embedder.close()
