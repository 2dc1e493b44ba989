"""Engine fixtures: the real default model behind the in-process engine client (no HTTP, no worker):
the EngineClient surface production uses, with the engine itself open for white-box checks."""

from __future__ import annotations

import asyncio

import pytest

from lmdock.core.config import MAX_DEFAULT_CTX
from lmdock.core.kv_cache import KvCacheConfig
from lmdock.core.request import SamplingParams
from lmdock.engine import (
    ContextParams,
    EngineConfig,
    EngineRequest,
    EngineSpec,
    Finished,
    SpecConfig,
    TextChunk,
    make_client,
)
from lmdock.engine.inproc import InProcessClient
from tests.conftest import DEFAULT_MODEL, default_model_repack


def chatml(user: str, system: str = "You are a helpful assistant.") -> str:
    return (
        f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"
    )


def engine_spec(
    cache_dir=None,
    *,
    parallel: int = 4,
    n_ctx: int = 8192,
    ram_bytes: int = 256 << 20,
    kv: KvCacheConfig | None = None,
    speculation: SpecConfig | None = None,
) -> EngineSpec:
    """The default model's spec for the engine tests; prompt-cache files go to a subfolder of `cache_dir`."""
    return EngineSpec(
        key="default",
        path=str(DEFAULT_MODEL),
        params=ContextParams(
            n_ctx=n_ctx,
            n_batch=512,
            n_seq_max=parallel + 4,
            n_threads=2,
            kv=kv or KvCacheConfig(),
            use_extra_bufts=default_model_repack(),
        ),
        engine=EngineConfig(parallel=parallel, max_queue=64, speculation=speculation or SpecConfig()),
        cache_ram_bytes=ram_bytes,
        cache_dir=str(cache_dir) if cache_dir is not None else None,
        max_ctx=MAX_DEFAULT_CTX,
        cache_min_tokens=64,
    )


def make_engine(cache_dir=None, **spec_args) -> InProcessClient:
    """A started in-process client; `spec_args` are `engine_spec`'s."""
    spec = engine_spec(cache_dir, **spec_args)
    client = make_client(spec, in_process=True)
    assert isinstance(client, InProcessClient)
    run(client.start())
    return client


def close(client: InProcessClient) -> None:
    run(client.close(0))


async def generate(engine: InProcessClient, prompt: str, max_tokens: int = 24, **kw) -> tuple[str, Finished]:
    return await complete(engine, engine.vocab.tokenize(prompt), max_tokens, **kw)


async def complete(
    engine: InProcessClient, tokens: list[int], max_tokens: int = 24, **kw
) -> tuple[str, Finished]:
    """Greedy text of a token prompt, and its Finished event."""
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
    close(eng)
