"""Per-request llama.cpp sampler chains, in llama.cpp's default order."""

from __future__ import annotations

import random

import llama_cpp as L

from lmdock.core.request import SamplingParams


def build_sampler_chain(params: SamplingParams, n_vocab: int):
    """Penalties -> top-k -> top-p -> min-p -> temperature -> dist, or greedy when temperature <= 0.

    Penalty samplers are stateful, so every request gets its own chain; the caller frees it. Fields
    still unset here (callers that bypass the chat session) get lmdock's built-in defaults.
    """
    params = params.resolved()
    chain = L.llama_sampler_chain_init(L.llama_sampler_chain_default_params())
    add = L.llama_sampler_chain_add
    if params.repeat_penalty != 1.0 or params.frequency_penalty or params.presence_penalty:
        add(
            chain,
            L.llama_sampler_init_penalties(
                n_vocab,
                params.penalty_last_n,
                params.repeat_penalty,
                params.frequency_penalty,
                params.presence_penalty,
            ),
        )
    if params.temperature <= 0:
        add(chain, L.llama_sampler_init_greedy())
        return chain
    if params.top_k > 0:
        add(chain, L.llama_sampler_init_top_k(params.top_k))
    if params.top_p < 1.0:
        add(chain, L.llama_sampler_init_top_p(params.top_p, 1))
    if params.min_p > 0:
        add(chain, L.llama_sampler_init_min_p(params.min_p, 1))
    add(chain, L.llama_sampler_init_temp(params.temperature))
    seed = params.seed if params.seed is not None else random.getrandbits(32)
    add(chain, L.llama_sampler_init_dist(seed & 0xFFFFFFFF))
    return chain


def free_sampler_chain(chain) -> None:
    if chain:
        L.llama_sampler_free(chain)
