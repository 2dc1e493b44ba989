"""Per-request llama.cpp sampler chains, in llama.cpp's default order."""

from __future__ import annotations

import random
from typing import TypeVar

import llama_cpp as L

from lmdock.core.request import SamplingParams

T = TypeVar("T")


def build_sampler_chain(params: SamplingParams, n_vocab: int):
    """Penalties -> top-k -> top-p -> min-p -> temperature -> dist, or greedy when temperature <= 0.

    Penalty samplers are stateful, so every request gets its own chain; the caller frees it. Fields
    still unset here (callers that bypass the chat session) get lmdock's built-in defaults.
    """
    p = params.resolved()
    temperature = _filled(p.temperature)
    repeat, frequency, presence = p.repeat_penalty, p.frequency_penalty, p.presence_penalty
    chain = L.llama_sampler_chain_init(L.llama_sampler_chain_default_params())
    add = L.llama_sampler_chain_add
    if repeat != 1.0 or frequency or presence:
        penalties = [_filled(v) for v in (repeat, frequency, presence)]
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


def free_sampler_chain(chain) -> None:
    if chain:
        L.llama_sampler_free(chain)
