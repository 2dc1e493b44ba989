"""KV sequence slots and the choice of which one a new prompt uses (prefix reuse across all slots).

With a unified KV cache, `llama_memory_seq_cp` shares cells instead of copying them, so a prompt can
reuse the longest common prefix of *any* resident sequence, busy or idle, without disturbing it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import llama_cpp as L


def common_prefix_len(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    # compare in chunks first: prompts share long prefixes, Python-level loops are slow
    step = 256
    while i + step <= n and a[i : i + step] == b[i : i + step]:
        i += step
    while i < n and a[i] == b[i]:
        i += 1
    return i


@dataclass
class Slot:
    """One llama.cpp sequence id and the tokens whose KV it holds, in position order."""

    seq_id: int
    tokens: list[int] = field(default_factory=list)
    busy: bool = False
    last_used: float = 0.0


@dataclass
class Claim:
    """The slot a prompt got and how many of its leading tokens are already in that slot's KV."""

    slot: Slot
    reused: int


class SlotPool:
    """All sequence slots of one context; picks, truncates, shares and evicts them."""

    def __init__(self, memory, n_slots: int) -> None:
        self.memory = memory
        self.slots = [Slot(seq_id=i) for i in range(n_slots)]

    def best_prefix(self, prompt: list[int]) -> tuple[Slot | None, int]:
        """The resident slot sharing the longest prefix with `prompt` (at most len(prompt) - 1)."""
        best: Slot | None = None
        best_len = 0
        limit = len(prompt) - 1
        for slot in self.slots:
            n = min(common_prefix_len(slot.tokens, prompt), limit)
            if n > best_len:
                best, best_len = slot, n
        return best, best_len

    def free_slot(self) -> Slot | None:
        """An idle slot to take: an empty one first, else the least recently used."""
        idle = [s for s in self.slots if not s.busy]
        if not idle:
            return None
        empty = [s for s in idle if not s.tokens]
        return empty[0] if empty else min(idle, key=lambda s: s.last_used)

    def claim(self, prompt: list[int]) -> Claim | None:
        """Reserve a slot for `prompt`, reusing the best resident prefix; None if every slot is busy."""
        src, reuse = self.best_prefix(prompt)
        if src is not None and not src.busy and not self._has_empty_idle():
            self.truncate(src, reuse)
            return self._take(src, reuse)
        dst = self.free_slot()
        if dst is None:
            return None
        if dst is src:
            self.truncate(dst, reuse)
            return self._take(dst, reuse)
        self.clear(dst)
        if src is not None and reuse > 0:
            L.llama_memory_seq_cp(self.memory, src.seq_id, dst.seq_id, 0, reuse)
            dst.tokens = src.tokens[:reuse]
        else:
            reuse = 0
        return self._take(dst, reuse)

    def _has_empty_idle(self) -> bool:
        return any(not s.busy and not s.tokens for s in self.slots)

    def _take(self, slot: Slot, reused: int) -> Claim:
        slot.busy = True
        slot.last_used = time.monotonic()
        return Claim(slot=slot, reused=reused)

    def truncate(self, slot: Slot, keep: int) -> None:
        if keep < len(slot.tokens):
            L.llama_memory_seq_rm(self.memory, slot.seq_id, keep, -1)
            del slot.tokens[keep:]

    def clear(self, slot: Slot) -> None:
        if slot.tokens or L.llama_memory_seq_pos_max(self.memory, slot.seq_id) >= 0:
            L.llama_memory_seq_rm(self.memory, slot.seq_id, -1, -1)
        slot.tokens = []

    def release(self, slot: Slot, *, keep_cache: bool) -> None:
        """Give a slot back; its KV stays as prefix cache unless `keep_cache` is False."""
        if not keep_cache:
            self.clear(slot)
        slot.busy = False
        slot.last_used = time.monotonic()

    def evictable(self) -> list[Slot]:
        """Idle slots holding KV, least recently used first."""
        return sorted((s for s in self.slots if not s.busy and s.tokens), key=lambda s: s.last_used)

    @property
    def resident_tokens(self) -> int:
        return sum(len(s.tokens) for s in self.slots)
