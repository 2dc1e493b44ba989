"""The first decodes of a freshly loaded model, and the CPU self-check's probe built on them.

A CPU-specific kernel crash shows here, before a worker says it is ready (engine/crash_policy.py) or in
the throwaway probe process (engine/cpu_check.py), never in a user's request.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import llama_cpp as L

from lmdock.core.config import test_crash_switch
from lmdock.core.errors import LmdockError
from lmdock.core.kv_cache import KvCacheConfig
from lmdock.engine.batch import Batch
from lmdock.engine.llama_model import LlamaModel
from lmdock.engine.spec import ContextParams


def crash_if_asked(point: str, key: str) -> None:
    """Kill this process with SIGSEGV at `point` when the tests' switch asks for it (never set in use)."""
    wanted = test_crash_switch()
    if not wanted:
        return
    what, _, only = wanted.partition("@")
    if what == point and (not only or only == key):
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGSEGV)


def warm_up(llama: LlamaModel, n_prefill: int, n_decode: int) -> None:
    """Decode a short prompt and a few single tokens in sequence 0, then clear the KV: the kernels a real
    request uses have run once."""
    tokens = llama.tokenize("The quick brown fox jumps over the lazy dog. " * 4)[:n_prefill] or [0]
    batch = Batch(max(len(tokens), 1))
    try:
        for i, t in enumerate(tokens):
            batch.add(t, i, 0, i == len(tokens) - 1)
        if L.llama_decode(llama.ctx, batch.raw) != 0:
            raise LmdockError("warm-up decode failed")
        pos = len(tokens)
        for _ in range(n_decode):
            batch.clear()
            batch.add(tokens[pos % len(tokens)], pos, 0, True)
            if L.llama_decode(llama.ctx, batch.raw) != 0:
                raise LmdockError("warm-up decode failed")
            pos += 1
    finally:
        batch.close()
        L.llama_memory_clear(llama.memory, True)


def probe(path: str, key: str, n_threads: int, extra_bufts: bool, kv: KvCacheConfig) -> int:
    """Load with (or without) extra buffer types and decode a few tokens with the KV cache `kv`; exit
    status 0 when that worked."""
    params = ContextParams(n_ctx=512, n_batch=64, n_ubatch=64, n_seq_max=1, n_threads=n_threads, kv=kv)
    params.use_extra_bufts = extra_bufts
    llama = LlamaModel(Path(path), params)
    if extra_bufts:
        crash_if_asked("probe", key)
    warm_up(llama, 32, 4)
    print(
        f"probe ok: buffers {llama.buffer_types}, KV {kv.label}, flash attention {llama.flash_attn}",
        file=sys.stderr,
    )
    llama.close()
    return 0
