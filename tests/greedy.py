"""Comparing greedy outputs that were computed in different batch shapes.

Speculative decoding verifies draft tokens in multi-token batches, and their KV cells land where a
one-token-per-step run would not put them; llama.cpp's sums then run in another order, and a logit may
move in its last bits. Greedy output is the same except where the model's two best tokens were that close:
such a near-tie may break the other way. These helpers accept exactly that and nothing else: the texts are
equal, or they first differ inside a token whose two best candidates (in the reference run's logprobs)
were within `TIE` nats.
"""

from __future__ import annotations

from lmdock.core.events import TokenLogprob

TIE = 0.05  # nats: far above last-bit noise in a logit, far below a real preference


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
