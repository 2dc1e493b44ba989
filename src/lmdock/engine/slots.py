"""KV sequence slots as plain data, and the pure choice of which slot a prompt uses and what KV it keeps.

Nothing here calls llama.cpp. Every decision returns the KV operations (`KvOp`) that make llama.cpp's
memory match the slot data; the model runner applies them in order. With a unified KV cache
`llama_memory_seq_cp` shares cells instead of copying them, so a prompt can reuse the longest common
prefix of *any* resident sequence, busy or idle, without disturbing it.

A later "reuse plan" (keep several cached runs, shifted to new positions) is more operations of the
same kind: the policy decides the list, the runner executes it.

What gives way when a prompt needs a slot (or the KV cache is full) is decided by what losing it costs
(`keep_rank`), then by least recent use: a slot whose tokens another slot holds too (a superseded turn of
a conversation) goes first, then a short one (a one-off side request: a title, a summary), then a long
one never reused, and a long prefix reused by later prompts (the main loop of an agent session) last.
So short side requests between the turns of a long conversation never push its prefix out.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from lmdock.engine.reuse import common_prefix_len


def is_prefix(short: list[int], long: list[int]) -> bool:
    return len(short) <= len(long) and long[: len(short)] == short


LONG_PREFIX = 1024  # tokens: a prefix this long takes seconds to compute again on a CPU

# Tokens of new work (prompt tokens to compute plus tokens to generate) beside which an idle reused
# prefix costs more where it is than moved to host RAM and back. Both costs grow with its cells: beside a
# 12k-token prefix each decode step took 4.3 ms more (26.2 against 21.9, one stream, 2 EPYC cores), and
# moving its 151 MB out took 0.1 s and back 0.015 s, so they break even near 30 tokens whatever its
# length (several times that where the host RAM it lands in was never touched before: a VM backs such
# pages on first use, 1.3 s for 151 MB here).
MOVE_REUSED_AFTER = 64


@dataclass
class Slot:
    """One llama.cpp sequence id and the tokens whose KV it holds, in position order. `reuses`: how
    many later prompts reused a long prefix of what it holds (carried along when that prefix is copied
    into another slot, moved to host RAM or restored)."""

    seq_id: int
    tokens: list[int] = field(default_factory=list)
    busy: bool = False
    last_used: float = 0.0
    reuses: int = 0


# --- KV operations: what the runner does to llama.cpp's memory, as data ------------------------------


@dataclass(frozen=True)
class Truncate:
    """Drop the KV cells of `seq_id` from position `keep` on (keep=0 empties the sequence)."""

    seq_id: int
    keep: int


@dataclass(frozen=True)
class CopyPrefix:
    """Share the first `n` cells of sequence `src` with sequence `dst` (which is empty)."""

    src: int
    dst: int
    n: int


@dataclass(frozen=True)
class MoveRun:
    """Move the cells of `src` at [src_pos, src_pos + n) to `dst` at [dst_pos, dst_pos + n) through the
    empty sequence `scratch` (engine/chunk_reuse.py); `dst` holds exactly `dst_pos` tokens."""

    src: int
    dst: int
    scratch: int
    src_pos: int
    dst_pos: int
    n: int


KvOp = Truncate | CopyPrefix | MoveRun


@dataclass
class Claim:
    """The slot a prompt got, how many of its leading tokens that slot's KV will hold once `ops` ran."""

    slot: Slot
    reused: int
    ops: list[KvOp]


class SlotPool:
    """All sequence slots of one context: picks, truncates, shares and evicts them (as data + KvOps)."""

    def __init__(
        self, n_slots: int, *, clock: Callable[[], float] = time.monotonic, long_prefix: int = LONG_PREFIX
    ) -> None:
        self.slots = [Slot(seq_id=i) for i in range(n_slots)]
        self._clock = clock
        self.long_prefix = long_prefix
        self._shared, self._shared_at = 0, -1  # cells the slots share, as of a KV-operations count

    def best_prefix(self, prompt: list[int]) -> tuple[Slot | None, int]:
        """The resident slot sharing the longest prefix with `prompt` (at most len(prompt) - 1, so at
        least one prompt token is evaluated and there are logits to sample from)."""
        best: Slot | None = None
        best_len = 0
        limit = len(prompt) - 1
        for slot in self.slots:
            n = min(common_prefix_len(slot.tokens, prompt), limit)
            if n > best_len:
                best, best_len = slot, n
        return best, best_len

    def free_slot(self, besides: Slot | None = None) -> Slot | None:
        """An idle slot to take (other than `besides`): an empty one first, else the one whose KV costs
        least to lose (`keep_rank`, then least recently used)."""
        idle = [s for s in self.slots if not s.busy and s is not besides]
        if not idle:
            return None
        empty = [s for s in idle if not s.tokens]
        return empty[0] if empty else min(idle, key=self._give_way_order)

    def keep_rank(self, slot: Slot) -> int:
        """What losing `slot`'s KV costs, for choosing what gives way: 0 little (a slot holding at least
        as much shares most and all but a few of its tokens: a superseded turn), 1 a short prefix, 2 a long one
        no later prompt reused yet, 3 a long prefix later prompts reused (a conversation's, kept while
        anything else can go)."""
        n = len(slot.tokens)
        longer = [s.tokens for s in self.slots if s is not slot and len(s.tokens) >= n]
        shared = max((common_prefix_len(slot.tokens, t) for t in longer), default=0)
        if 2 * shared >= n > 0 and n - shared < self.long_prefix:
            return 0
        if n < self.long_prefix:
            return 1
        return 3 if slot.reuses else 2

    def _give_way_order(self, slot: Slot) -> tuple[int, float]:
        return self.keep_rank(slot), slot.last_used

    def reused_from(self, src: Slot, n_tokens: int) -> int:
        """The reuse count a slot continuing `n_tokens` of `src`'s KV carries on: one more for a long
        prefix, none for a short one (the rest of what it held is replaced)."""
        return src.reuses + 1 if n_tokens >= self.long_prefix else 0

    def claim(self, prompt: list[int]) -> Claim | None:
        """Reserve a slot for `prompt`, reusing the best resident prefix; None if every slot is busy.

        An idle slot holding the best prefix is continued in place unless an empty slot is free (then
        the prefix is shared into the empty one and stays cached for the next prompt too), or unless
        that would drop a long part of it another slot can give way for instead (a side request that
        shares only a chat header with a conversation's prefix must not truncate it)."""
        src, reuse = self.best_prefix(prompt)
        keeps_most = src is not None and len(src.tokens) - reuse < self.long_prefix
        if src is not None and not src.busy and not self._has_empty_idle() and keeps_most:
            src.reuses = self.reused_from(src, reuse)
            return self._take(src, reuse, self.truncate(src, reuse))
        dst = self.free_slot()
        if dst is None:
            return None
        if dst is src:
            dst.reuses = self.reused_from(dst, reuse)
            return self._take(dst, reuse, self.truncate(dst, reuse))
        ops = self.clear(dst)
        if src is not None and reuse > 0:
            ops.append(CopyPrefix(src.seq_id, dst.seq_id, reuse))
            dst.tokens = src.tokens[:reuse]
            dst.reuses = self.reused_from(src, reuse)
        else:
            reuse = 0
        return self._take(dst, reuse, ops)

    def _has_empty_idle(self) -> bool:
        return any(not s.busy and not s.tokens for s in self.slots)

    def _take(self, slot: Slot, reused: int, ops: list[KvOp]) -> Claim:
        slot.busy = True
        slot.last_used = self._clock()
        return Claim(slot=slot, reused=reused, ops=ops)

    def truncate(self, slot: Slot, keep: int) -> list[KvOp]:
        if keep >= len(slot.tokens):
            return []
        del slot.tokens[keep:]
        return [Truncate(slot.seq_id, keep)]

    def clear(self, slot: Slot) -> list[KvOp]:
        """Empty a slot (always emitted: cells may exist that the slot data does not know of)."""
        slot.tokens, slot.reuses = [], 0
        return [Truncate(slot.seq_id, 0)]

    def release(self, slot: Slot, *, keep_cache: bool) -> list[KvOp]:
        """Give a slot back; its KV stays as prefix cache unless `keep_cache` is False."""
        ops = [] if keep_cache else self.clear(slot)
        slot.busy = False
        slot.last_used = self._clock()
        return ops

    def evictable(self) -> list[Slot]:
        """Idle slots holding KV, the one that costs least to lose first (`keep_rank`, then least
        recently used)."""
        return sorted((s for s in self.slots if not s.busy and s.tokens), key=self._give_way_order)

    def resident_cells(self, besides: Slot | None = None) -> int:
        """KV cells all slots (but `besides`) hold together: each slot's tokens past the longest prefix it
        has in common with a slot before it (prefix copies share cells; llama.cpp attends over all of
        them)."""
        total = 0
        held: list[list[int]] = []
        for slot in sorted(self.slots, key=lambda s: -len(s.tokens)):
            if not slot.tokens:
                break
            if slot is besides:
                continue
            total += len(slot.tokens) - max((common_prefix_len(slot.tokens, t) for t in held), default=0)
            held.append(slot.tokens)
        return total

    def kv_span(self, kv_version: int) -> int:
        """The KV cells a decode step attends over now: every cell the slots hold (llama.cpp's unified
        cache masks other sequences' cells but still walks them). What the slots share is counted again
        only when `kv_version` (the runner's count of KV operations) moved; decoded tokens just add cells."""
        held = sum(len(s.tokens) for s in self.slots)
        if self._shared_at != kv_version:
            self._shared, self._shared_at = held - self.resident_cells(), kv_version
        return held - self._shared

    def own_cells(self, slot: Slot) -> int:
        """The KV cells `slot` holds that no busy slot shares: its tokens past the longest prefix it has
        in common with one (cells are shared only through prefix copies)."""
        shared = max((common_prefix_len(slot.tokens, s.tokens) for s in self.slots if s.busy), default=0)
        return len(slot.tokens) - shared

    def in_the_way(self, min_cells: int, new_tokens: int = 0) -> list[Slot]:
        """Idle slots whose own cells would slow every decode step of the busy ones, largest first.

        llama.cpp's unified KV cache attends over every used cell up to the highest one, masking other
        sequences' cells instead of skipping them (measured: a 16k-token idle prefix costs a short chat
        about a fifth of its decode speed). A slot counts when it owns at least `min_cells` cells and
        at least half of its KV: one that mostly shares a busy slot's prefix (an agent conversation
        beside another on the same system prompt) frees little and would be restored as a full copy.
        A conversation's reused prefix counts only when the admitted work (`new_tokens`) would pay
        more for it than its move to host RAM and back costs (`MOVE_REUSED_AFTER`): a subagent or a
        long side request decoding beside an idle Claude Code main loop, not a one-line title."""
        found = []
        for slot in self.slots:
            if slot.busy or not slot.tokens:
                continue
            if self.keep_rank(slot) == 3 and new_tokens < MOVE_REUSED_AFTER:
                continue  # cheaper to keep where its next turn finds it
            own = self.own_cells(slot)
            if own >= min_cells and 2 * own >= len(slot.tokens):
                found.append((own, slot))
        return [slot for _, slot in sorted(found, key=lambda x: -x[0])]
