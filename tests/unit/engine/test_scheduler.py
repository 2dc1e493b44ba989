"""The scheduler as pure policy: admission, batches, preemption, with slots as data (no model)."""

from __future__ import annotations

import itertools

import pytest

from lmdock.core.errors import Overloaded
from lmdock.engine.reuse import common_prefix_len
from lmdock.engine.scheduler import Abort, Evict, Preempt, Scheduler, SchedulerConfig, plan_prefill
from lmdock.engine.sequence import Phase, Sequence
from lmdock.engine.slots import SlotPool, Truncate
from lmdock.engine.types import EngineRequest


def seq(prompt: list[int], max_tokens: int = 8, priority: int = 0) -> Sequence:
    request = EngineRequest(prompt=prompt, max_tokens=max_tokens, priority=priority)
    return Sequence(request, lambda event: None, max_tokens)


def scheduler(n_slots: int = 4, *, parallel: int = 2, max_queue: int = 8, n_batch: int = 64, cap: int = 16):
    ticks = itertools.count()
    pool = SlotPool(n_slots, clock=lambda: float(next(ticks)))
    return Scheduler(pool, SchedulerConfig(parallel, max_queue, n_batch, cap))


# --- the token budget -------------------------------------------------------------------------------


def test_full_budget_when_nothing_decodes():
    plans = plan_prefill(["a", "b"], [1000, 50], budget=512, n_decoding=0, cap_while_decoding=64)
    assert [(p.seq, p.n_tokens) for p in plans] == [("a", 512)]


def test_prefill_is_capped_while_decoding():
    plans = plan_prefill(["a", "b"], [1000, 50], budget=509, n_decoding=3, cap_while_decoding=64)
    assert [(p.seq, p.n_tokens) for p in plans] == [("a", 64)]


def test_short_prompts_share_the_rest_of_the_budget_oldest_first():
    plans = plan_prefill(["a", "b", "c"], [10, 20, 500], budget=100, n_decoding=0, cap_while_decoding=64)
    assert [(p.seq, p.n_tokens) for p in plans] == [("a", 10), ("b", 20), ("c", 70)]


def test_common_prefix_len():
    a = list(range(1000))
    assert common_prefix_len(a, a) == 1000
    assert common_prefix_len(a, a[:300] + [-1]) == 300
    assert common_prefix_len([], a) == 0


# --- why a request waits ----------------------------------------------------------------------------


def test_a_full_queue_refuses_at_once():
    s = scheduler(max_queue=2)
    s.add(seq([1, 2]))
    s.add(seq([1, 2]))
    with pytest.raises(Overloaded):
        s.add(seq([1, 2]))


def test_admission_stops_at_parallel_and_says_why():
    s = scheduler(parallel=2)
    seqs = [seq([i, 1, 2]) for i in range(3)]
    for x in seqs:
        s.add(x)
    admitted = [x for x, _ in s.admit()]
    assert admitted == seqs[:2] and list(s.waiting) == seqs[2:]
    assert all(x.phase is Phase.PREFILL and x.slot is not None for x in admitted)
    assert "parallel" in s.blocked_by()


def test_admission_waits_for_a_free_slot():
    s = scheduler(n_slots=1, parallel=4)
    s.add(seq([1, 2, 3]))
    s.add(seq([4, 5, 6]))
    assert len(s.admit()) == 1
    assert s.blocked_by() == "every KV slot is busy"
    s.remove(s.running[0], keep_cache=True)
    assert len(s.admit()) == 1


def test_first_come_first_served():
    s = scheduler(parallel=1)
    first, second = seq([1, 2]), seq([3, 4])
    s.add(first)
    s.add(second)
    assert [x for x, _ in s.admit()] == [first]
    s.remove(first)
    assert [x for x, _ in s.admit()] == [second]


def test_interactive_requests_are_admitted_before_batch_requests():
    s = scheduler(parallel=1)
    batch, interactive = seq([1, 2], priority=1), seq([3, 4])
    s.add(batch)
    s.add(interactive)
    assert [x for x, _ in s.admit()] == [interactive]


def test_kv_full_preempts_batch_work_before_interactive_work():
    s = scheduler(n_slots=3, parallel=3)
    batch, a, b = seq([1, 2], priority=1), seq([3, 4]), seq([5, 6])
    for x in (batch, a, b):
        s.add(x)
    s.admit()
    decision = s.on_kv_full(s.schedule())
    assert isinstance(decision, Preempt) and decision.seq is batch


def test_suspended_batch_work_resumes_from_its_cached_prompt_and_generated_tokens():
    s = scheduler(n_slots=2, parallel=1)
    batch = seq([1, 2, 3], priority=1)
    s.add(batch)
    s.admit()
    s.postprocess(s.schedule())  # prefilled: now decoding
    batch.pending = 9
    s.postprocess(s.schedule())  # one token decoded, another sampled
    batch.pending = 10
    interactive = seq([7, 8])
    s.add(interactive)
    assert s.yield_to_priority() == [batch]
    assert batch.phase is Phase.WAITING and batch.prompt == [1, 2, 3, 9, 10]
    assert [x for x, _ in s.admit()] == [interactive]
    s.remove(interactive, keep_cache=True)
    ((resumed, claim),) = s.admit()
    assert resumed is batch and claim.reused == 4  # prompt and the decoded token: only 10 is left to do
    assert [(p.seq, p.n_tokens) for p in s.schedule().prefill] == [(batch, 1)]


# --- batches ----------------------------------------------------------------------------------------


def test_decodes_come_first_and_prefill_gets_the_capped_rest():
    s = scheduler(parallel=3, n_batch=64, cap=16)
    dec, pre = seq([1, 2, 3]), seq(list(range(100, 200)))
    s.add(dec)
    s.add(pre)
    s.admit()
    dec.phase, dec.pending = Phase.DECODE, 7
    step = s.schedule()
    assert step.decode == [dec]
    assert [(p.seq, p.n_tokens) for p in step.prefill] == [(pre, 16)]


def test_the_prompt_with_the_least_work_left_is_prefilled_first():
    s = scheduler(parallel=3, n_batch=64, cap=16)
    long, short = seq(list(range(1000, 1400))), seq(list(range(100, 140)))
    s.add(long)
    s.add(short)  # arrives second
    s.admit()
    assert [(p.seq, p.n_tokens) for p in s.schedule().prefill] == [(short, 40), (long, 24)]


def test_a_long_prompt_passed_over_waits_at_most_about_its_own_length_of_other_work():
    s = scheduler(parallel=2, n_batch=64, cap=16)
    long = seq(list(range(1000, 1200)))  # 200 tokens of work
    s.add(long)
    s.admit()
    firsts = []
    for i in itertools.count():  # a stream of 60-token prompts, one after another
        short = seq([5000 + i] + list(range(59)))
        s.add(short)
        s.admit()
        step = s.schedule()
        firsts.append(step.prefill[0].seq is long)
        s.postprocess(step)
        for x in [p.seq for p in step.prefill if p.seq.phase is Phase.DECODE and p.seq is not long]:
            s.remove(x, keep_cache=False)
        if long.phase is Phase.DECODE:
            break
    # shorts go first while the long prompt's work left, less what went to those ahead of it, is larger
    assert firsts == [False, False, False, True, True, True]
    assert long.passed_over == 3 * 60


def test_postprocess_moves_cursors_and_returns_who_samples():
    s = scheduler(n_batch=64, cap=16)
    short = seq([1, 2, 3])
    s.add(short)
    s.admit()
    step = s.schedule()
    ready = s.postprocess(step)
    assert ready == [short] and short.phase is Phase.DECODE
    assert short.cursor == 3 and short.slot.tokens == [1, 2, 3]
    short.pending = 9
    assert s.postprocess(s.schedule()) == [short] and short.slot.tokens == [1, 2, 3, 9]


# --- when the KV cache is full ----------------------------------------------------------------------


def test_kv_full_evicts_the_least_recently_used_idle_slot_first():
    s = scheduler(n_slots=4, parallel=2)
    for prompt in ([1, 2, 3], [4, 5, 6]):
        x = seq(prompt)
        s.add(x)
        s.admit()
        x.slot.tokens = list(prompt)
        s.remove(x, keep_cache=True)
    older = next(sl for sl in s.pool.slots if sl.tokens == [1, 2, 3])
    running = seq([7, 8, 9])
    s.add(running)
    s.admit()
    decision = s.on_kv_full(s.schedule())
    assert isinstance(decision, Evict) and decision.slot is older
    assert s.evict(older) == [Truncate(older.seq_id, 0)] and older.tokens == []


def test_kv_full_without_idle_slots_preempts_the_newest_prefill_and_holds_admission():
    s = scheduler(n_slots=2, parallel=2)
    old, new, later = seq([1, 2, 3]), seq([4, 5, 6]), seq([7, 8])
    for x in (old, new, later):
        s.add(x)
    s.admit()
    decision = s.on_kv_full(s.schedule())
    assert isinstance(decision, Preempt) and decision.seq is new
    s.preempt(new)
    assert new.phase is Phase.WAITING and new.slot is None and s.waiting[0] is new
    assert s.admit() == [] and "preemption" in s.blocked_by()
    s.remove(old, keep_cache=True)  # a running sequence finished: room again
    assert [x for x, _ in s.admit()] == [new, later]


def test_kv_full_with_a_single_sequence_ends_it():
    s = scheduler()
    only = seq([1, 2, 3])
    s.add(only)
    s.admit()
    only.phase = Phase.DECODE
    decision = s.on_kv_full(s.schedule())
    assert isinstance(decision, Abort) and decision.seq is only


def test_cancelled_sequences_are_found_waiting_or_running():
    s = scheduler(parallel=1)
    a, b = seq([1, 2]), seq([3, 4])
    s.add(a)
    s.add(b)
    s.admit()
    a.cancelled = b.cancelled = True
    assert set(s.cancelled()) == {a, b}
    for x in s.cancelled():
        s.remove(x)
    assert not s.waiting and not s.running and not any(sl.busy for sl in s.pool.slots)


def test_a_sequence_cancelled_while_queued_is_never_admitted():
    """The engine collects cancelled sequences and admits in the same pass: one cancelled in between
    must stay queued (to be ended), take no slot, and not block those behind it."""
    s = scheduler(n_slots=2, parallel=1)
    gone, next_one = seq([1, 2]), seq([3, 4])
    s.add(gone)
    s.add(next_one)
    gone.cancelled = True
    assert [x for x, _ in s.admit()] == [next_one]
    assert gone.slot is None and gone.phase is Phase.WAITING and list(s.waiting) == [gone]
    assert s.cancelled() == [gone]
    s.remove(gone)
    assert sum(sl.busy for sl in s.pool.slots) == 1


def test_only_cancelled_sequences_waiting_block_nothing():
    s = scheduler(parallel=1)
    gone = seq([1, 2])
    s.add(gone)
    gone.cancelled = True
    assert s.admit() == [] and s.blocked_by() is None
