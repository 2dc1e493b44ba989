"""Prompt lookup: draft tokens copied from the sequence's own history (its prompt and its output so far).

Coding agents copy: an Edit's `old_string` repeats a file the conversation just read, a Write re-emits a
file with a few changes. When the last `n` tokens occurred before, what followed them then is a good guess
for what follows now. The index maps every n-gram of the history to the positions where it ends, so a
lookup is one dict access plus a few backward comparisons, whatever the history's length; appending a
token adds one entry. Nothing here knows about llama.cpp or sampling.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

MAX_MATCH = 64  # backward comparison stops here: a longer shared suffix says nothing more
CANDIDATES = 4  # earlier occurrences compared per lookup, most recent first


@dataclass(frozen=True)
class Proposal:
    """What the history suggests comes next, and how long a suffix of the history it was found behind."""

    tokens: list[int]
    match: int  # tokens of the current suffix that also precede the copied continuation (>= n)


NO_PROPOSAL = Proposal([], 0)


class NgramIndex:
    """Every n-gram of a growing token history, to find where the current suffix occurred before."""

    def __init__(self, n: int, tokens: Iterable[int] = ()) -> None:
        if n < 1:
            raise ValueError("n-gram length must be at least 1")
        self.n = n
        self.tokens: list[int] = []
        self._ends: dict[tuple[int, ...], list[int]] = {}  # n-gram -> positions of its last token
        self.extend(tokens)

    def __len__(self) -> int:
        return len(self.tokens)

    def append(self, token: int) -> None:
        tokens = self.tokens
        tokens.append(token)
        end = len(tokens) - 1
        if end + 1 >= self.n:
            key = tuple(tokens[end + 1 - self.n :])
            ends = self._ends.get(key)
            if ends is None:
                self._ends[key] = [end]
            else:
                ends.append(end)

    def extend(self, tokens: Iterable[int]) -> None:
        for token in tokens:
            self.append(token)

    def propose(self, limit: int) -> Proposal:
        """Up to `limit` tokens that followed the longest earlier match of the history's suffix (at least
        `n` tokens long; among equally long ones, the most recent). A match that ends close to the suffix
        is a repeating pattern (a row of `=`, a list of similar lines): its period is repeated."""
        tokens, n = self.tokens, self.n
        end = len(tokens) - 1
        if limit <= 0 or end < n:
            return NO_PROPOSAL
        ends = self._ends.get(tuple(tokens[end + 1 - n :]))
        if not ends:
            return NO_PROPOSAL
        best, best_match = -1, 0
        for at in reversed(ends[-(CANDIDATES + 1) :]):
            if at == end:
                continue
            match = n
            while match < MAX_MATCH and at - match >= 0 and tokens[at - match] == tokens[end - match]:
                match += 1
            if match > best_match:
                best, best_match = at, match
        if best < 0:
            return NO_PROPOSAL
        copied = tokens[best + 1 : best + 1 + limit]
        while len(copied) < limit:  # the match overlaps the suffix: the text repeats with that period
            copied.extend(copied[: limit - len(copied)])
        return Proposal(copied, best_match)
