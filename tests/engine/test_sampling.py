"""Greedy requests choose by an argmax over the logits row (engine/sampling.py `Sampler`): the token
llama.cpp's greedy chain picks, at every position of a real decode and on a tie."""

from __future__ import annotations

import llama_cpp as L
import pytest

from lmdock.core.request import SamplingParams
from lmdock.engine import ContextParams
from lmdock.engine.batch import Batch
from lmdock.engine.llama_model import LlamaModel
from lmdock.engine.logprobs import logits_row
from lmdock.engine.sampling import Sampler, build_sampler_chain
from tests.conftest import DEFAULT_MODEL, default_model_repack
from tests.engine.conftest import chatml

GREEDY = SamplingParams(temperature=0.0)


@pytest.fixture(scope="module")
def llama():
    params = ContextParams(
        n_ctx=512, n_batch=64, n_seq_max=1, n_threads=2, use_extra_bufts=default_model_repack()
    )
    model = LlamaModel(DEFAULT_MODEL, params)
    yield model
    model.close()


def decode(llama: LlamaModel, batch: Batch, tokens: list[int], start: int) -> int:
    """Decode `tokens` at positions from `start`; the batch row of the last one's logits."""
    batch.clear()
    for i, token in enumerate(tokens):
        batch.add(token, start + i, 0, i == len(tokens) - 1)
    assert L.llama_decode(llama.ctx, batch.raw) == 0
    return len(tokens) - 1


@pytest.mark.parametrize(
    "params, argmax",
    [
        (GREEDY, True),
        (SamplingParams(temperature=0.0, repeat_penalty=1.1), False),
        (SamplingParams(temperature=0.0, presence_penalty=0.5), False),
        (SamplingParams(temperature=0.7, seed=1), False),
    ],
)
def test_only_plain_greedy_skips_the_chain(llama, params, argmax):
    sampler = Sampler(params, llama.n_vocab)
    try:
        assert (sampler.chain is None) is argmax
    finally:
        sampler.close()


def test_the_argmax_picks_what_the_greedy_chain_picks(llama):
    sampler, chain, batch = (
        Sampler(GREEDY, llama.n_vocab),
        build_sampler_chain(GREEDY, llama.n_vocab),
        Batch(64),
    )
    L.llama_memory_clear(llama.memory, True)
    try:
        prompt = llama.tokenize(chatml("Write a Python function that merges two sorted lists."))
        row, pos = decode(llama, batch, prompt, 0), len(prompt)
        for _ in range(48):
            token = sampler.sample(llama.ctx, row)
            assert token == L.llama_sampler_sample(chain, llama.ctx, row)
            row, pos = decode(llama, batch, [token], pos), pos + 1

        logits = logits_row(L.llama_get_logits_ith(llama.ctx, row), llama.n_vocab)
        logits[:] = 0.0  # a tie between two tokens: both take the lower id
        logits[[90, 17]] = 5.0
        assert sampler.sample(llama.ctx, row) == 17 == L.llama_sampler_sample(chain, llama.ctx, row)
    finally:
        sampler.close()
        L.llama_sampler_free(chain)
        batch.close()
