"""Sentence embeddings: a llama.cpp context in embeddings mode, pooling token states (mean by default).

The embedder opens the model file again rather than sharing the chat engine's `llama_model`: the two
then have independent lifetimes (unloading the chat model mid-request cannot free weights under a
running embedding), and with weight repacking off both map the same file pages, so the weights are not
held twice. One lock serialises the context, which is not thread-safe.
"""

from __future__ import annotations

import threading
from pathlib import Path

import llama_cpp as L
import numpy as np

from lmdock.core.errors import InvalidRequest, ModelLoadError
from lmdock.engine.batch import Batch
from lmdock.engine.llama_model import init_backend, model_meta

DEFAULT_EMBED_CTX = 2048


class Embedder:
    """Embeds token sequences with one model; each input is one sequence of at most `n_ctx` tokens."""

    def __init__(self, path: Path, *, n_threads: int, n_ctx: int = DEFAULT_EMBED_CTX) -> None:
        init_backend()
        mparams = L.llama_model_default_params()
        mparams.use_extra_bufts = False  # use the weights in place, from the shared page cache
        self.model = L.llama_model_load_from_file(str(path).encode(), mparams)
        if not self.model:
            raise ModelLoadError(f"failed to load {path.name} for embeddings")
        vocab = L.llama_model_get_vocab(self.model)
        if not vocab:
            L.llama_model_free(self.model)
            raise ModelLoadError(f"failed to load {path.name} for embeddings: it has no vocabulary")
        self.vocab = vocab
        self.n_embd = L.llama_model_n_embd(self.model)
        self.n_ctx = min(n_ctx, L.llama_model_n_ctx_train(self.model) or n_ctx)
        cparams = L.llama_context_default_params()
        cparams.n_ctx = cparams.n_batch = cparams.n_ubatch = self.n_ctx  # one input = one ubatch
        cparams.n_seq_max = 1
        cparams.n_threads = cparams.n_threads_batch = n_threads
        cparams.embeddings = True
        cparams.pooling_type = (
            L.LLAMA_POOLING_TYPE_UNSPECIFIED if self._has_pooling() else L.LLAMA_POOLING_TYPE_MEAN
        )
        cparams.flash_attn_type = 1  # no n_ctx x n_ctx attention matrix per head
        cparams.no_perf = True
        self.ctx = L.llama_init_from_model(self.model, cparams)
        if not self.ctx:
            L.llama_model_free(self.model)
            raise ModelLoadError(f"failed to create an embeddings context for {path.name}")
        self._encoder_only = L.llama_model_has_encoder(self.model) and not L.llama_model_has_decoder(
            self.model
        )
        self._batch = Batch(self.n_ctx)
        self._lock = threading.Lock()

    def _has_pooling(self) -> bool:
        """Embedding models declare their own pooling (CLS, last...); chat models get mean pooling."""
        arch = self._meta("general.architecture")
        return arch is not None and self._meta(f"{arch}.pooling_type") is not None

    def _meta(self, key: str) -> str | None:
        return model_meta(self.model, key)

    def embed(self, tokens: list[int]) -> np.ndarray:
        """The L2-normalised pooled embedding of one token sequence (float32, n_embd values)."""
        if not tokens:
            raise InvalidRequest("input: an input must not be empty", param="input")
        if len(tokens) > self.n_ctx:
            raise InvalidRequest(
                f"input is too long: {len(tokens)} tokens > {self.n_ctx} maximum for embeddings",
                param="input",
            )
        if any(t < 0 or t >= L.llama_vocab_n_tokens(self.vocab) for t in tokens):
            raise InvalidRequest("input: token id out of the model's vocabulary", param="input")
        with self._lock:
            if self.ctx is None:
                raise ModelLoadError("the embeddings context was closed")
            memory = L.llama_get_memory(self.ctx)
            if memory:  # an encoder-only model keeps no KV memory
                L.llama_memory_clear(memory, True)
            self._batch.clear()
            for pos, token in enumerate(tokens):
                self._batch.add(token, pos, 0, True)
            run = L.llama_encode if self._encoder_only else L.llama_decode
            rc = run(self.ctx, self._batch.raw)
            if rc != 0:
                raise ModelLoadError(f"embedding failed (llama.cpp returned {rc})")
            ptr = L.llama_get_embeddings_seq(self.ctx, 0)
            if not ptr:
                raise ModelLoadError("this model produced no pooled embedding")
            vec = np.ctypeslib.as_array(ptr, shape=(self.n_embd,)).astype(np.float32)
        norm = float(np.linalg.norm(vec))
        return vec / norm if norm > 0 else vec

    def close(self) -> None:
        with self._lock:
            if self.ctx:
                self._batch.close()
                L.llama_free(self.ctx)
                self.ctx = None
            if self.model:
                L.llama_model_free(self.model)
                self.model = None
