"""Why a prompt found what it found in the cache: where its reused prefix came from, and where it left
the cached entry nearest to it (the token index, and the text on each side), so a slow turn explains
itself (a timestamp, a changed status line, a reminder that moved). Pure: tokens in, a `CacheLookup`
out; the text is decoded by the function the caller passes."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from lmdock.engine.reuse import Run, common_prefix_len
from lmdock.engine.types import CacheLookup, CacheTier

SNIPPET_CHARS = 40  # text shown on each side of a divergence
SNIPPET_TOKENS = SNIPPET_CHARS  # tokens decoded for it: a token is at least a character of text, mostly


@dataclass
class Nearest:
    """The cached entry sharing the longest prefix with a prompt: that length (`common`), and a copy of
    the entry's tokens from there on, at most SNIPPET_TOKENS (empty: the prompt extends the entry)."""

    common: int
    after: list[int] = field(default_factory=list)

    @property
    def diverges(self) -> bool:
        return bool(self.after)


def nearest(prompt: list[int], entries: Iterable[list[int]]) -> Nearest | None:
    """The entry of `entries` sharing the longest prefix with `prompt` (None if none shares a token).
    Between equal prefixes, one the prompt simply extends wins: nothing diverged there."""
    best: Nearest | None = None
    for tokens in entries:
        n = common_prefix_len(tokens, prompt)
        if n == 0:
            continue
        found = Nearest(n, list(tokens[n : n + SNIPPET_TOKENS]) if n < len(prompt) else [])
        if best is None or n > best.common or (n == best.common and best.diverges and not found.diverges):
            best = found
    return best


def nearer(a: Nearest | None, b: Nearest | None) -> Nearest | None:
    if a is None or b is None:
        return a or b
    return a if (a.common, not a.diverges) >= (b.common, not b.diverges) else b


def explain(
    prompt: list[int],
    near: Nearest | None,
    tier: CacheTier,
    cached: int,
    runs: list[Run],
    piece: Callable[[int], bytes],
) -> CacheLookup:
    """The lookup outcome of one admitted prompt: `cached` tokens reused as a prefix from `tier` (chunk
    reuse `runs` come from resident slots), and where it left the nearest entry if it did."""
    chunk = sum(r.length for r in runs)
    lookup = CacheLookup(
        tier=tier if cached or chunk else None, cached_tokens=cached, chunk_reused_tokens=chunk
    )
    if near is not None and near.diverges:
        at = near.common
        lookup.diverged_at = at
        lookup.before = _text(prompt[max(0, at - SNIPPET_TOKENS) : at], piece)[-SNIPPET_CHARS:]
        lookup.prompt_after = _text(prompt[at : at + SNIPPET_TOKENS], piece)[:SNIPPET_CHARS]
        lookup.cached_after = _text(near.after, piece)[:SNIPPET_CHARS]
    return lookup


def _text(tokens: list[int], piece: Callable[[int], bytes]) -> str:
    return b"".join(piece(t) for t in tokens).decode("utf-8", errors="replace")
