"""Chunk reuse applied to KV slots: which slot a prompt takes cached runs from, and how each run moves.

The plan itself is `reuse.plan_reuse` (pure token lists). This module turns it into slot decisions and
KV operations, still without calling llama.cpp (the model runner applies the `MoveRun` ops):

- `claim_with_runs`: the prompt gets a fresh slot `dst` holding the common prefix (shared from the
  source with `seq_cp`); the idle source slot is pinned (busy) until the prompt is in, because the runs
  still sit in it at their old positions.
- llama.cpp only accepts new tokens of a sequence at `pos_max + 1`, so a run cannot be put in place
  before the tokens in front of it are computed. The engine prefills `dst` up to each run's new
  position, then `splice` moves the run: `seq_cp` to an empty scratch sequence, `seq_rm` from the
  source, `seq_add` (the K-shift, applied by llama.cpp at the next decode) to its new positions,
  `seq_cp` into `dst`, and the scratch is emptied again. Moving through the scratch sequence keeps the
  shifted cells apart from `dst`'s own cells at overlapping positions.
- A shift moves the cell itself, for every sequence that shares it. Cells are shared only through
  prefix copies, so a slot sharing a cell at position p with the source has the same tokens as the
  source up to p: any other slot whose common prefix with the source reaches into a run may share its
  cells. An idle one is cut back to before the run; a busy one keeps its cells and the run starts
  after the shared part (those tokens are computed instead).
- Moved positions become `HOLE`s in the source's token list (they match nothing); when `dst`'s prompt
  is in, the source is cut back to before its first hole and unpinned.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from lmdock.engine.reuse import HOLE, ReusePlan, Run, common_prefix_len, plan_reuse
from lmdock.engine.slots import Claim, CopyPrefix, KvOp, MoveRun, Slot, SlotPool


def reuse_blocker(min_run: int, n_seq: int, shift_blocker: Callable[[], str | None]) -> str | None:
    """Why chunk reuse is off for an engine (None: on): `--chunk-reuse-min 0`, a model whose KV cannot
    shift (`shift_blocker`, the runner's check), or too few sequences for a source, a prompt and the
    scratch sequence."""
    if min_run <= 0:
        return "disabled (--chunk-reuse-min 0)"
    reason = shift_blocker()
    if reason is None and n_seq < 3:
        reason = "fewer than 3 sequences"
    return reason


@dataclass
class RunClaim:
    """A claim whose prompt takes `runs` from the pinned `source` slot as its prefill reaches them."""

    claim: Claim
    source: Slot
    runs: list[Run] = field(default_factory=list)


def best_plan(pool: SlotPool, prompt: list[int], min_run: int) -> tuple[Slot | None, ReusePlan | None]:
    """The idle resident slot whose plan reuses the most of `prompt` with at least one moved run."""
    best: Slot | None = None
    best_plan_: ReusePlan | None = None
    for slot in pool.slots:
        if slot.busy or len(slot.tokens) < min_run:
            continue
        plan = plan_reuse(slot.tokens, prompt, min_run)
        if plan.runs and (best_plan_ is None or plan.reused > best_plan_.reused):
            best, best_plan_ = slot, plan
    return best, best_plan_


def claim_with_runs(pool: SlotPool, prompt: list[int], min_run: int, prefix_reuse: int) -> RunClaim | None:
    """A slot for `prompt` that takes cached runs from another slot, if that beats `prefix_reuse` (what
    plain prefix reuse gets) by at least `min_run` tokens and a second idle slot is free; else None."""
    if len(prompt) - 1 - prefix_reuse < min_run:
        return None
    source, plan = best_plan(pool, prompt, min_run)
    if source is None or plan is None or plan.reused < prefix_reuse + min_run:
        return None
    idle = [s for s in pool.slots if not s.busy and s is not source]
    if not idle:
        return None
    empty = [s for s in idle if not s.tokens]
    dst = empty[0] if empty else min(idle, key=lambda s: s.last_used)
    ops: list[KvOp] = pool.clear(dst)
    if plan.prefix:
        ops.append(CopyPrefix(source.seq_id, dst.seq_id, plan.prefix))
        dst.tokens = source.tokens[: plan.prefix]
    source.busy = True  # pinned: its runs move into dst as the prefill reaches them
    claim = pool._take(dst, plan.reused, ops)
    return RunClaim(claim=claim, source=source, runs=list(plan.runs))


@dataclass
class Splice:
    """What `splice` decided: KV ops to apply, tokens moved into dst now, and what is left of the run to
    splice later (its head is shared with a busy slot, so dst computes that part first)."""

    ops: list[KvOp]
    moved: int = 0
    rest: Run | None = None


def splice(pool: SlotPool, dst: Slot, source: Slot, run: Run, scratch: int) -> Splice:
    """Move `run` into `dst`, which holds exactly `run.dst` prompt tokens now."""
    assert len(dst.tokens) == run.dst, "splice only at the prefill frontier"
    ops: list[KvOp] = []
    start = run.src
    end = run.src + run.length
    for other in pool.slots:
        if other is source or other is dst or not other.tokens:
            continue
        shared = common_prefix_len(other.tokens, source.tokens)
        if shared <= start:
            continue
        if other.busy:
            start = min(shared, end)
        else:
            ops += pool.truncate(other, start)
    if start > run.src:  # a busy slot shares the head of the run: compute it, move the rest later
        rest = Run(src=start, dst=run.dst + (start - run.src), length=end - start)
        return Splice(ops, 0, rest if rest.length > 0 else None)
    ops.append(MoveRun(source.seq_id, dst.seq_id, scratch, run.src, run.dst, run.length))
    dst.tokens.extend(source.tokens[run.src : end])
    source.tokens[run.src : end] = [HOLE] * run.length
    return Splice(ops, run.length)


def release_source(pool: SlotPool, source: Slot) -> list[KvOp]:
    """Unpin a source slot once the prompt that took runs from it is in: cut it back to before its first
    moved cell (its KV and its token list must agree position by position)."""
    ops: list[KvOp] = []
    if HOLE in source.tokens:
        ops = pool.truncate(source, source.tokens.index(HOLE))
    ops += pool.release(source, keep_cache=True)
    return ops
