"""Batch policy: decodes first, then prefill chunks, capped while others are decoding."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class PrefillPlan:
    seq: object
    n_tokens: int


def plan_prefill(
    prefilling: list, prompt_left: list[int], budget: int, n_decoding: int, cap_while_decoding: int
) -> list[PrefillPlan]:
    """Split the token budget left after decodes among prefilling sequences, oldest first.

    While any sequence is decoding, prefill gets at most `cap_while_decoding` tokens per step so a long
    prompt cannot freeze running streams; with nothing decoding it gets the whole budget.
    """
    room = min(budget, cap_while_decoding) if n_decoding else budget
    plans = []
    for seq, left in zip(prefilling, prompt_left, strict=True):
        if room <= 0:
            break
        n = min(left, room)
        if n > 0:
            plans.append(PrefillPlan(seq, n))
            room -= n
    return plans
