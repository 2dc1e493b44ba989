"""A reusable llama_batch that the scheduler fills token by token."""

from __future__ import annotations

import llama_cpp as L


class Batch:
    """Wraps llama_batch_init; one token per entry, each in exactly one sequence."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.raw = L.llama_batch_init(capacity, 0, 1)
        self._freed = False

    @property
    def size(self) -> int:
        return self.raw.n_tokens

    def clear(self) -> None:
        self.raw.n_tokens = 0

    def add(self, token: int, pos: int, seq_id: int, logits: bool) -> int:
        """Append a token; return its index in the batch (the index to read its logits at)."""
        b = self.raw
        i = b.n_tokens
        b.token[i] = token
        b.pos[i] = pos
        b.n_seq_id[i] = 1
        b.seq_id[i][0] = seq_id
        b.logits[i] = logits
        b.n_tokens = i + 1
        return i

    def close(self) -> None:
        if not self._freed:
            self._freed = True
            L.llama_batch_free(self.raw)
