"""Per-request token choice: llama.cpp sampler chains in llama.cpp's default order, or an argmax over the
logits row where that is all the chain would do."""

from __future__ import annotations

import random
from typing import TypeVar

import llama_cpp as L

from lmdock.core.request import SamplingParams
from lmdock.engine.logprobs import logits_row

T = TypeVar("T")


class Sampler:
    """One request's sampler. Greedy without penalties is an argmax over the row: llama.cpp's greedy
    chain first copies the whole vocabulary into a candidate array, which took 390 us a token on the
    default model's 152k vocabulary against 40 us for the argmax (one stream decodes a token in ~25 ms,
    so that is 1.4% of a step, and four times that with four streams). Ties go to the lowest token id in
    both, so the output is the same."""

    def __init__(self, params: SamplingParams, n_vocab: int) -> None:
        self.n_vocab = n_vocab
        self.chain = None if is_plain_greedy(params) else build_sampler_chain(params, n_vocab)

    def sample(self, ctx, index: int) -> int:
        """The token chosen at row `index` of the context's logits (after any grammar mask)."""
        if self.chain is None:
            return int(logits_row(L.llama_get_logits_ith(ctx, index), self.n_vocab).argmax())
        return L.llama_sampler_sample(self.chain, ctx, index)

    def close(self) -> None:
        if self.chain is not None:
            L.llama_sampler_free(self.chain)
            self.chain = None


def is_plain_greedy(params: SamplingParams) -> bool:
    """Whether the chain would be llama.cpp's greedy sampler alone (no penalty sampler before it)."""
    p = params.resolved()
    return _filled(p.temperature) <= 0 and not _penalised(p)


def _penalised(p: SamplingParams) -> bool:
    """Whether the chain starts with llama.cpp's penalties sampler."""
    return p.repeat_penalty != 1.0 or bool(p.frequency_penalty) or bool(p.presence_penalty)


def build_sampler_chain(params: SamplingParams, n_vocab: int):
    """Penalties -> top-k -> top-p -> min-p -> temperature -> dist, or greedy when temperature <= 0.

    Penalty samplers are stateful, so every request gets its own chain; the caller frees it. Fields
    still unset here (callers that bypass the chat session) get lmdock's built-in defaults.
    """
    p = params.resolved()
    temperature = _filled(p.temperature)
    chain = L.llama_sampler_chain_init(L.llama_sampler_chain_default_params())
    add = L.llama_sampler_chain_add
    if _penalised(p):
        penalties = [_filled(v) for v in (p.repeat_penalty, p.frequency_penalty, p.presence_penalty)]
        add(chain, L.llama_sampler_init_penalties(n_vocab, _filled(p.penalty_last_n), *penalties))
    if temperature <= 0:
        add(chain, L.llama_sampler_init_greedy())
        return chain
    if (top_k := _filled(p.top_k)) > 0:
        add(chain, L.llama_sampler_init_top_k(top_k))
    if (top_p := _filled(p.top_p)) < 1.0:
        add(chain, L.llama_sampler_init_top_p(top_p, 1))
    if (min_p := _filled(p.min_p)) > 0:
        add(chain, L.llama_sampler_init_min_p(min_p, 1))
    add(chain, L.llama_sampler_init_temp(temperature))
    seed = p.seed if p.seed is not None else random.getrandbits(32)
    add(chain, L.llama_sampler_init_dist(seed & 0xFFFFFFFF))
    return chain


def _filled(value: T | None) -> T:
    """A field `resolved()` filled in (lmdock's built-in defaults set every one but `seed`)."""
    if value is None:
        raise ValueError("a sampling parameter was left unresolved")
    return value
