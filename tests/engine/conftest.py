"""Engine fixtures: the real default model behind a real Engine (no HTTP)."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from lmdock.core.kv_cache import KvCacheConfig
from lmdock.core.request import SamplingParams
from lmdock.engine import (
    ContextParams,
    Engine,
    EngineConfig,
    EngineRequest,
    Finished,
    LlamaModel,
    PromptCache,
    TextChunk,
)
from tests.conftest import DEFAULT_MODEL


def chatml(user: str, system: str = "You are a helpful assistant.") -> str:
    return (
        f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"
    )


def make_engine(
    cache_dir=None,
    *,
    parallel: int = 4,
    n_ctx: int = 8192,
    ram_bytes: int = 256 << 20,
    kv: KvCacheConfig | None = None,
) -> Engine:
    params = ContextParams(n_ctx=n_ctx, n_batch=512, n_seq_max=parallel + 4, n_threads=2)
    model = LlamaModel(DEFAULT_MODEL, params if kv is None else replace(params, kv=kv))
    cache = PromptCache(ram_bytes=ram_bytes, disk_dir=cache_dir, min_tokens=64)
    return Engine(model, EngineConfig(parallel=parallel, max_queue=64), cache)


async def generate(engine: Engine, prompt: str, max_tokens: int = 24, **kw) -> tuple[str, Finished]:
    tokens = engine.model.tokenize(prompt)
    request = EngineRequest(
        prompt=tokens, max_tokens=max_tokens, sampling=SamplingParams(temperature=0), **kw
    )
    text: list[str] = []
    async for event in await engine.submit(request):
        if isinstance(event, Finished):
            return "".join(text), event
        if isinstance(event, TextChunk):
            text.append(event.text)
    raise AssertionError("stream ended without Finished")


def run(coro):
    return asyncio.run(coro)


@pytest.fixture(scope="module")
def engine():
    eng = make_engine()
    yield eng
    eng.close()
