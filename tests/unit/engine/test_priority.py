"""The batch priority class as pure scheduler policy: interactive requests are admitted ahead of batch
work and take a batch sequence's place within one step; the batch sequence resumes where it stopped."""

from __future__ import annotations

import itertools

from lmdock.core.request import PRIORITY_BATCH, PRIORITY_INTERACTIVE
from lmdock.engine.scheduler import Preempt, Scheduler, SchedulerConfig
from lmdock.engine.sequence import Phase, Sequence
from lmdock.engine.types import Admitted, EngineRequest, Finished, TextChunk


def seq(prompt: list[int], priority: int = PRIORITY_INTERACTIVE, events: list | None = None) -> Sequence:
    request = EngineRequest(prompt=prompt, max_tokens=8, priority=priority)
    return Sequence(request, (events.append if events is not None else lambda e: None), 8)


def batch_seq(prompt: list[int], events: list | None = None) -> Sequence:
    return seq(prompt, PRIORITY_BATCH, events)


def scheduler(n_slots: int = 6, *, parallel: int = 2, n_batch: int = 64, cap: int = 16) -> Scheduler:
    from lmdock.engine.slots import SlotPool

    ticks = itertools.count()
    return Scheduler(
        SlotPool(n_slots, clock=lambda: float(next(ticks))), SchedulerConfig(parallel, 16, n_batch, cap)
    )


def admitted(s: Scheduler) -> list[Sequence]:
    return [x for x, _ in s.admit()]


def run_to_decode(s: Scheduler, *tokens: int) -> None:
    """Prefill every admitted prompt, then decode `tokens` (as if sampled) in every running sequence."""
    while any(x.phase is Phase.PREFILL for x in s.running):
        s.postprocess(s.schedule())
    for token in tokens:
        for x in s.running:
            x.pending = token
        s.postprocess(s.schedule())
    for x in s.running:
        x.pending = tokens[-1] + 1 if tokens else 50  # sampled, not yet decoded


def test_waiting_interactive_requests_all_go_before_waiting_batch_work():
    s = scheduler(parallel=1)
    b1, b2 = batch_seq([1, 2]), batch_seq([3, 4])
    i1, i2 = seq([5, 6]), seq([7, 8])
    for x in (b1, b2, i1, i2):
        s.add(x)
    order = []
    while s.waiting:
        (x,) = admitted(s)
        order.append(x)
        s.remove(x, keep_cache=True)
    assert order == [i1, i2, b1, b2]


def test_an_interactive_request_takes_a_running_batch_sequence_place_at_once():
    s = scheduler(parallel=2)
    b_old, b_new = batch_seq([1, 2, 3]), batch_seq([4, 5, 6])
    for x in (b_old, b_new):
        s.add(x)
    admitted(s)
    run_to_decode(s, 40, 41)
    interactive = seq([7, 8, 9])
    s.add(interactive)
    assert s.blocked_by() is not None  # no room: both places are batch work
    assert s.yield_to_priority() == [b_new]  # the newest batch sequence gives way
    assert admitted(s) == [interactive]
    assert s.running == [b_old, interactive]
    assert list(s.waiting) == [b_new] and b_new.phase is Phase.WAITING and b_new.slot is None


def test_a_preempted_batch_sequence_resumes_from_what_it_generated():
    s = scheduler(parallel=1)
    events: list = []
    b = batch_seq([1, 2, 3], events)
    s.add(b)
    admitted(s)
    run_to_decode(s, 40, 41)  # KV holds 1 2 3 40 41; 42 was sampled and not yet decoded
    slot = b.slot
    s.add(seq([9, 9]))
    assert s.yield_to_priority() == [b]
    assert b.prompt == [1, 2, 3, 40, 41, 42] and b.pending is None
    assert slot.tokens == [1, 2, 3, 40, 41] and not slot.busy  # its KV stays as prefix cache
    (interactive,) = admitted(s)
    s.remove(interactive, keep_cache=True)
    ((again, claim),) = s.admit()
    assert again is b and claim.reused == 5  # the KV it had is reused: only 42 is computed again
    b.finish("length")
    done = [e for e in events if isinstance(e, Finished)][0]
    assert done.prompt_tokens == 3  # usage still counts the request's own prompt


def test_batch_work_never_displaces_interactive_work():
    s = scheduler(parallel=1)
    i1 = seq([1, 2])
    s.add(i1)
    admitted(s)
    s.add(batch_seq([3, 4]))
    s.add(seq([5, 6]))
    assert s.yield_to_priority() == []  # only an interactive request runs: the newcomer waits its turn
    assert admitted(s) == []


def test_nothing_is_preempted_while_there_is_room():
    s = scheduler(parallel=2)
    s.add(batch_seq([1, 2]))
    admitted(s)
    s.add(seq([3, 4]))
    assert s.yield_to_priority() == []
    assert len(admitted(s)) == 1 and len(s.running) == 2


def test_a_cancelled_interactive_request_preempts_nothing():
    s = scheduler(parallel=1)
    s.add(batch_seq([1, 2]))
    admitted(s)
    waiting = seq([3, 4])
    waiting.cancelled = True
    s.add(waiting)
    assert s.yield_to_priority() == []


def test_a_preempted_sequence_resumes_ahead_of_other_batch_work():
    s = scheduler(parallel=1)
    first, second = batch_seq([1, 2]), batch_seq([3, 4])
    s.add(first)
    s.add(second)
    admitted(s)
    s.add(seq([5, 6]))
    s.yield_to_priority()
    (interactive,) = admitted(s)
    s.remove(interactive)
    assert admitted(s) == [first]


def test_interactive_prefill_gets_the_token_budget_first():
    s = scheduler(parallel=2, n_batch=32)
    long_batch = batch_seq(list(range(100, 200)))
    s.add(long_batch)
    admitted(s)
    interactive = seq(list(range(300, 320)))
    s.add(interactive)
    admitted(s)
    step = s.schedule()
    assert [(p.seq, p.n_tokens) for p in step.prefill] == [(interactive, 20), (long_batch, 12)]


def test_a_full_kv_cache_preempts_a_decoding_batch_sequence_rather_than_an_interactive_prefill():
    s = scheduler(n_slots=2, parallel=2)
    b = batch_seq([1, 2, 3])
    s.add(b)
    admitted(s)
    run_to_decode(s, 40)
    interactive = seq([7, 8, 9])
    s.add(interactive)
    admitted(s)
    decision = s.on_kv_full(s.schedule())
    assert isinstance(decision, Preempt) and decision.seq is b
    s.preempt(b)
    assert b.prompt == [1, 2, 3, 40, 41] and s.running == [interactive]


def test_text_is_not_repeated_across_a_preemption():
    events: list = []
    b = batch_seq([1, 2, 3], events)
    s = scheduler(parallel=1)
    s.add(b)
    admitted(s)
    b.admitted()
    run_to_decode(s)
    b.push_piece(b"Hello")
    s.add(seq([5]))
    s.yield_to_priority()
    (interactive,) = admitted(s)
    s.remove(interactive)
    admitted(s)
    b.admitted()  # a second admission reports nothing new
    b.push_piece(b" world")
    b.finish("length")
    texts = "".join(e.text for e in events if isinstance(e, TextChunk))
    assert texts == "Hello world"
    assert sum(isinstance(e, Admitted) for e in events) == 1
