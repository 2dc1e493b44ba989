"""Per-token cost of grammar-constrained decoding against unconstrained decoding, on the default model.

    .venv/bin/python bench/constrained_decoding.py [--tokens 200] [--rounds 5]

Both runs force exactly --tokens generated tokens (greedy, no early stop: a grammar that allows a long
free-text JSON string, and ignore-EOS by a large max_tokens on a prompt that writes a long answer), in
alternating rounds so machine noise hits both alike. Prints decode ms/token for each and the ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

from llguidance import LLMatcher

from lmdock.core.config import MAX_DEFAULT_CTX, default_models_dir
from lmdock.core.request import SamplingParams
from lmdock.engine import (
    ContextParams,
    EngineClient,
    EngineConfig,
    EngineRequest,
    EngineSpec,
    Finished,
    TextChunk,
    make_client,
)
from lmdock.models.default_model import default_model_path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import default_model_repack  # noqa: E402

PROMPT = (
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
    "Describe, in a long JSON document, the history of computing.<|im_end|>\n<|im_start|>assistant\n"
)
SCHEMA = '{"type":"object","properties":{"history":{"type":"string"}},"required":["history"]}'


async def _run(engine: EngineClient, tokens: list[int], n: int, grammar: str | None) -> tuple[float, int]:
    request = EngineRequest(
        prompt=tokens, max_tokens=n, sampling=SamplingParams(temperature=0), grammar=grammar
    )
    first = last = None
    produced = 0
    async for event in await engine.submit(request):
        now = time.perf_counter()
        if isinstance(event, Finished):
            produced = event.generated_tokens
            break
        if isinstance(event, TextChunk):  # not the Admitted event
            first = first or now
            last = now
    return (last - first) / max(1, produced - 1), produced


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    spec = EngineSpec(
        key="default",
        path=str(default_model_path(default_models_dir())),
        params=ContextParams(
            n_ctx=4096,
            n_batch=512,
            n_seq_max=2,
            n_threads=args.threads,
            use_extra_bufts=default_model_repack(args.threads),
        ),
        engine=EngineConfig(parallel=1, max_queue=64),
        cache_ram_bytes=0,
        cache_dir=None,
        max_ctx=MAX_DEFAULT_CTX,
    )
    engine = make_client(spec, in_process=True)
    asyncio.run(engine.start())
    grammar = LLMatcher.grammar_from_json_schema(SCHEMA)
    tokens = engine.vocab.tokenize(PROMPT)
    free, constrained = [], []
    try:
        for _ in range(args.rounds):
            t, n_free = asyncio.run(_run(engine, tokens, args.tokens, None))
            free.append(t)
            t, n_con = asyncio.run(_run(engine, tokens, args.tokens, grammar))
            constrained.append(t)
        f, c = statistics.median(free), statistics.median(constrained)
        print(f"tokens per run: unconstrained {n_free}, constrained {n_con}; {args.rounds} rounds, median")
        print("| decoding | ms/token | tok/s |")
        print("|---|---|---|")
        print(f"| unconstrained | {f * 1000:.2f} | {1 / f:.1f} |")
        print(f"| JSON-schema constrained | {c * 1000:.2f} | {1 / c:.1f} |")
        print(f"| constrained / unconstrained time per token | {c / f:.3f} | |")
    finally:
        asyncio.run(engine.close(0))


if __name__ == "__main__":
    main()
