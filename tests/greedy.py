"""Comparing greedy outputs that were computed in different batch shapes.

Speculative decoding verifies draft tokens in multi-token batches, and their KV cells land where a
one-token-per-step run would not put them; llama.cpp's kernels and sums then take other paths (and the
activations are quantized to 8 bits between layers), so a logprob moves: by 0.03 nats measured on the
default Q4_K_M model for the same token with and without a draft behind it, and by more than 0.11 when the
prompt also came from the cache. Greedy output is the same except where the two best tokens were that
close. So a comparison accepts exactly that: the texts are equal, or they first differ inside a token whose
two best candidates (in the reference run's logprobs) were within `TIE` nats. What IS exact is checked by
`assert_greedy_rows`: every emitted token is the best one of the logits row it was sampled from.
"""

from __future__ import annotations

from lmdock.core.events import TokenLogprob

TIE = 0.3  # nats: above the batch-shape noise seen (0.11), below what a real preference usually is


def assert_greedy_rows(entries: list[TokenLogprob]) -> None:
    """Greedy decoding, exactly: each emitted token is the most likely one of the row it came from."""
    for k, entry in enumerate(entries):
        best = entry.top[0]  # logprobs are read from the row the sampler saw (grammar mask applied)
        assert entry.logprob >= best[1], f"token {k}: {entry.token!r} sampled, {best!r} was best"


def first_difference(a: str, b: str) -> int | None:
    """The first index where `a` and `b` differ (the shorter one's length if one extends the other)."""
    if a == b:
        return None
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))


def assert_same_or_tied(reference: list[TokenLogprob], text: str, tie: float = TIE) -> None:
    """`text` is the reference's text, or departs from it at a token the reference chose by a near-tie."""
    ref = "".join(t.token for t in reference)
    at = first_difference(ref, text)
    if at is None:
        return
    start = 0
    for k, entry in enumerate(reference):
        if start + len(entry.token) > at:
            top = entry.top
            assert len(top) >= 2, f"no alternatives reported at token {k}"
            gap = top[0][1] - top[1][1]
            assert gap < tie, (
                f"output differs at char {at} (token {k}: reference {entry.token!r}, best two "
                f"{top[:2]!r}, gap {gap:.4f} nats: not a near-tie)\nreference: {ref[max(0, at - 80) : at + 40]!r}"
                f"\n   output: {text[max(0, at - 80) : at + 40]!r}"
            )
            return
        start += len(entry.token)
    raise AssertionError(f"output runs on past the reference's end at char {at}: {text[at - 40 : at + 40]!r}")
