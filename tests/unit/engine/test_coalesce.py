"""Prefill computed once: a prompt whose long prefix another running prompt is still computing waits for
it, then shares those cells (coalescing by prompt prefix, not by request identity; no model)."""

from __future__ import annotations

from lmdock.engine.scheduler import Scheduler, SchedulerConfig
from lmdock.engine.sequence import Phase
from lmdock.engine.slots import CopyPrefix, SlotPool
from tests.unit.engine.test_scheduler import seq

PROMPT = list(range(1000, 4000))  # 3000 tokens


def scheduler(coalesce_min: int = 1024, n_batch: int = 512) -> Scheduler:
    return Scheduler(SlotPool(6), SchedulerConfig(4, 8, n_batch, 64, coalesce_min=coalesce_min))


def prefill(s: Scheduler) -> int:
    """Run one step's prefill as the engine would; the tokens it computed."""
    step = s.schedule()
    for ready in s.postprocess(step):
        ready.pending = 7  # the engine samples a token for each
    return sum(p.n_tokens for p in step.prefill)


def test_an_identical_prompt_waits_for_the_running_prefill_and_then_shares_it():
    s = scheduler()
    first, again = seq(list(PROMPT)), seq(list(PROMPT))
    s.add(first)
    s.add(again)
    assert [a for a, _ in s.admit()] == [first]
    assert s.blocked_by() == f"waiting for request {first.id} to compute the prompt prefix they share"
    computed = 0
    while first.phase is Phase.PREFILL:
        computed += prefill(s)
        admitted = s.admit()
        if first.phase is Phase.PREFILL:
            assert admitted == []  # it keeps waiting while the shared part is computed
    [(late, claim)] = admitted
    assert late is again and claim.reused == len(PROMPT) - 1
    assert CopyPrefix(first.slot.seq_id, claim.slot.seq_id, len(PROMPT) - 1) in claim.ops
    computed += prefill(s)
    assert computed == len(PROMPT) + 1  # the prompt once, and the one token the second evaluates
    assert again.blocked_by is not None and "compute the prompt prefix" in again.blocked_by


def test_a_prompt_sharing_a_long_system_prompt_waits_only_for_that_part():
    s = scheduler()
    system = list(range(1000, 3000))
    first, second = seq(system + [1] * 600), seq(system + [2] * 50)
    s.add(first)
    s.add(second)
    s.admit()
    while first.cursor < len(system):
        assert s.admit() == []
        prefill(s)
    [(late, claim)] = s.admit()
    assert late is second and claim.reused == len(system)


def test_a_short_shared_prefix_does_not_wait_and_coalescing_can_be_off():
    s = scheduler()
    first, second = seq(list(range(500)) + [1]), seq(list(range(500)) + [2])
    s.add(first)
    s.add(second)
    assert len(s.admit()) == 2
    off = scheduler(coalesce_min=0)
    a, b = seq(list(PROMPT)), seq(list(PROMPT))
    off.add(a)
    off.add(b)
    assert len(off.admit()) == 2


def test_waiting_for_a_prefill_preempts_nothing():
    s = scheduler()
    batch = seq(list(PROMPT), priority=1)
    s.add(batch)
    s.admit()
    urgent = seq(list(PROMPT), priority=0)
    s.add(urgent)
    assert s.yield_to_priority() == [] and batch in s.running
