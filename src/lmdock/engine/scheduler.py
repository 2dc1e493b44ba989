"""Who runs, who waits, and what goes into the next batch: pure policy over Sequences and slots.

Why a request waits (read top to bottom):
1. `add`: the waiting queue already holds `max_queue` requests -> refused at once (Overloaded, a 529).
2. `admit`: the most urgent class first (`EngineRequest.priority`: interactive before batch), then
   first come, first served; the request due next that cannot start blocks those behind it:
   - admission is held after a preemption until a running sequence finishes (`hold_admission`),
     so the preempted prompt is not pushed out again at once;
   - when the request due next is blocked only by room (all `parallel` running, or every KV slot
     busy) while a less urgent class runs, `yield_to_priority` preempts those first: a batch
     sequence gives its place to an interactive request at the next step (it resumes later, where
     it stopped);
   - a running prompt is still computing a long prefix (`coalesce_min` tokens or more) the request's
     prompt starts with: it waits for that prefill and then shares those cells instead of computing them
     a second time (two agents starting at once, a client re-sending a request still in progress);
   - `parallel` sequences are already running;
   - every KV slot is busy (`SlotPool.claim` found none idle).
3. `schedule`: an admitted prompt is prefilled in chunks. Each step first takes one token from every
   decoding sequence, then gives what is left of the `n_batch` token budget to prefills, oldest first;
   while anything decodes, prefill gets at most `prefill_chunk_while_decoding` tokens per step so a
   long prompt cannot freeze running streams. Draft tokens (engine/speculator.py) take what is left.
4. `on_kv_full`: llama.cpp found no room for the batch -> evict the least recently used idle cached
   slot; with none left, send the newest running sequence of a less urgent class than the step's most
   urgent one (else the newest prefilling sequence) back to the head of the queue (preempt);
   with nothing to preempt, end the longest sequence with reason "context".

Nothing here calls llama.cpp: decisions come back as data (`Step`, `KvOp`s) for the engine to apply.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from lmdock.core.errors import Overloaded
from lmdock.engine.chunk_reuse import Splice, claim_with_runs, release_source, splice
from lmdock.engine.lookup import nearest
from lmdock.engine.reuse import common_prefix_len
from lmdock.engine.sequence import Phase, Sequence
from lmdock.engine.slots import LONG_PREFIX, Claim, KvOp, Slot, SlotPool


@dataclass
class SchedulerConfig:
    parallel: int
    max_queue: int
    n_batch: int
    prefill_chunk_while_decoding: int
    chunk_reuse_min: int = 0  # minimum cached run moved to a new position (0: prefix reuse only)
    coalesce_min: int = LONG_PREFIX  # shortest prefix a prompt waits for another's prefill of (0: never)
    scratch_seq: int = -1  # the empty sequence id runs move through


@dataclass
class PrefillPlan:
    seq: Sequence
    n_tokens: int


@dataclass
class Step:
    """One batch: every decoding sequence's pending token, then prefill chunks."""

    decode: list[Sequence] = field(default_factory=list)
    prefill: list[PrefillPlan] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.decode or self.prefill)

    @property
    def n_tokens(self) -> int:
        """Tokens in the batch: each decoding sequence's pending token and draft, and prefill chunks."""
        return sum(1 + len(s.draft) for s in self.decode) + sum(p.n_tokens for p in self.prefill)


@dataclass
class Evict:
    """Free an idle cached slot (spill it to the host cache first)."""

    slot: Slot


@dataclass
class Preempt:
    """Send a prefilling sequence back to wait; its KV is dropped."""

    seq: Sequence


@dataclass
class Abort:
    """Nothing else can give way: end this sequence, the context is full."""

    seq: Sequence


def plan_prefill(
    prefilling: list, prompt_left: list[int], budget: int, n_decoding: int, cap_while_decoding: int
) -> list[PrefillPlan]:
    """Split the token budget left after decodes among prefilling sequences, oldest first.

    While any sequence is decoding, prefill gets at most `cap_while_decoding` tokens per step so a long
    prompt cannot freeze running streams; with nothing decoding it gets the whole budget.
    """
    room = min(budget, cap_while_decoding) if n_decoding else budget
    plans = []
    for seq, left in zip(prefilling, prompt_left, strict=True):
        if room <= 0:
            break
        n = min(left, room)
        if n > 0:
            plans.append(PrefillPlan(seq, n))
            room -= n
    return plans


class Scheduler:
    """Owns the waiting queue and the running list; decides admission, batches and preemption."""

    def __init__(self, pool: SlotPool, config: SchedulerConfig) -> None:
        self.pool = pool
        self.config = config
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.hold_admission = False  # set by a preemption until some running sequence finishes

    def add(self, seq: Sequence) -> None:
        if len(self.waiting) >= self.config.max_queue:
            raise Overloaded("Overloaded: the request queue is full", retry_after=2)
        self.waiting.append(seq)

    def cancelled(self) -> list[Sequence]:
        """The sequences, waiting or running, whose consumer went away (to be ended with `remove`)."""
        return [s for s in self.waiting if s.cancelled] + [s for s in self.running if s.cancelled]

    def next_waiting(self) -> Sequence | None:
        """The request admitted next: the most urgent class, first come first served within it. A
        sequence cancelled while queued is never admitted: it waits to be ended by `remove`."""
        live = [s for s in self.waiting if not s.cancelled]
        return min(live, key=lambda s: s.request.priority) if live else None

    def blocked_by(self) -> str | None:
        """Why the head of the queue is not admitted now (None if it could be, or nothing waits)."""
        if (head := self.next_waiting()) is None:
            return None
        if self.hold_admission and self.running:
            return "admission is held after a preemption until a running sequence finishes"
        if (leader := self.computing_for(head)) is not None:
            return f"waiting for request {leader.id} to compute the prompt prefix they share"
        if len(self.running) >= self.config.parallel:
            return f"all {self.config.parallel} parallel sequences are running"
        if self.pool.free_slot() is None:
            return "every KV slot is busy"
        return None

    def computing_for(self, seq: Sequence) -> Sequence | None:
        """A running prompt still prefilling a prefix of at least `coalesce_min` tokens that `seq`'s
        prompt starts with: `seq` waits until it is computed, then its claim shares those cells."""
        if self.config.coalesce_min <= 0:
            return None
        for other in self.running:
            if other.phase is Phase.PREFILL:
                shared = min(common_prefix_len(other.prompt, seq.prompt), len(seq.prompt) - 1)
                if shared >= self.config.coalesce_min and other.cursor < shared:
                    return other
        return None

    def next_admissible(self) -> Sequence | None:
        """The request `admit` would take next, if nothing blocks it now."""
        return self.next_waiting() if self.waiting and self.blocked_by() is None else None

    def admit(self) -> list[tuple[Sequence, Claim]]:
        """Move waiting sequences into running, in `next_waiting()` order, while `blocked_by()` allows;
        each gets a slot whose KV ops the engine must apply before the sequence's first step."""
        admitted: list[tuple[Sequence, Claim]] = []
        if not self.running:
            self.hold_admission = False
        while (seq := self.next_waiting()) is not None and self.blocked_by() is None:
            claim = self._claim(seq)
            if claim is None:
                break
            self.waiting.remove(seq)
            seq.slot, seq.cursor = claim.slot, claim.reused  # the engine may restore more from cache
            seq.phase = Phase.PREFILL
            self.running.append(seq)
            admitted.append((seq, claim))
        self._note_waits()
        return admitted

    def _note_waits(self) -> None:
        """Give each request still waiting the reason it waits, the first time it has to (the request
        log reports it): the head's `blocked_by()`, or the head itself for those behind it."""
        head, reason = self.next_waiting(), self.blocked_by()
        for seq in self.waiting:
            if seq.blocked_by is None and not seq.cancelled:
                if seq is head and reason is not None:
                    seq.blocked_by = reason
                elif seq is not head and head is not None:
                    seq.blocked_by = f"queued behind an earlier request ({reason or 'being admitted'})"

    def _claim(self, seq: Sequence) -> Claim | None:
        """Chunk reuse if it beats the longest cached prefix by a run or more, else prefix reuse. The
        resident slot nearest the prompt is noted first (claiming may truncate it)."""
        if seq.cached is None:
            seq.nearest = nearest(seq.prompt, [s.tokens for s in self.pool.slots])
        if self.config.chunk_reuse_min > 0:
            _, prefix = self.pool.best_prefix(seq.prompt)
            rc = claim_with_runs(self.pool, seq.prompt, self.config.chunk_reuse_min, prefix)
            if rc is not None:
                seq.source, seq.runs = rc.source, rc.runs
                return rc.claim
        return self.pool.claim(seq.prompt)

    def splice_ready(self) -> list[tuple[Sequence, Splice]]:
        """Move in every cached run a prefill has reached (its prompt is computed up to the run); a
        source slot is unpinned once its last run moved. The engine applies the ops in order."""
        done: list[tuple[Sequence, Splice]] = []
        for seq in self.running:
            while seq.runs and seq.phase is Phase.PREFILL and seq.cursor == seq.runs[0].dst:
                assert seq.source is not None  # cached runs come from a pinned source slot
                run = seq.runs.pop(0)
                result = splice(self.pool, seq.held, seq.source, run, self.config.scratch_seq)
                seq.cursor += result.moved
                if result.rest is not None:
                    seq.runs.insert(0, result.rest)
                seq.cached = (seq.cached or 0) - (
                    run.length - result.moved - (result.rest.length if result.rest else 0)
                )
                if not seq.runs:
                    result.ops += self._release_source(seq)
                done.append((seq, result))
        return done

    def _release_source(self, seq: Sequence) -> list[KvOp]:
        if seq.source is None:
            return []
        ops = release_source(self.pool, seq.source)
        seq.source, seq.runs = None, []
        return ops

    def yield_to_priority(self) -> list[Sequence]:
        """Preempt running sequences of a less urgent class while a more urgent request waits only for
        room, newest first, until it could be admitted. The victims keep their KV as prefix cache and
        wait at the head of their class; the engine frees their samplers. Returns the victims."""
        victims: list[Sequence] = []
        while not (self.hold_admission and self.running) and self.blocked_by() is not None:
            urgent = [s for s in self.waiting if not s.cancelled]
            if not urgent:
                break
            head = min(urgent, key=lambda s: s.priority)
            if self.computing_for(head) is not None:
                break  # it waits for a prefill, not for room
            # a prompt still taking cached runs from a pinned slot finishes its prefill first
            lower = [s for s in self.running if s.priority > head.priority and s.source is None]
            if not lower:
                break
            victim = max(reversed(lower), key=lambda s: s.priority)  # least urgent class, newest
            self.running.remove(victim)
            slot = victim.held
            victim.suspend()
            self.pool.release(slot, keep_cache=True)
            self.waiting.appendleft(victim)
            victims.append(victim)
        return victims

    def schedule(self) -> Step:
        """The next batch: all decodes first, then prefill chunks within the remaining budget: the more
        urgent class first, and within a class the prompt with the least work left (oldest first on a
        tie). A short prompt is not stuck behind long ones: Claude Code's main-loop turn with 1,341 new
        tokens waited 104 s for its first token behind two subagent prompts of ~6k each, oldest first.
        A prompt counts the tokens computed for those ahead of it against its own work, so it waits for
        at most about its own length of other prompts' work, however many short ones arrive."""
        decoding = [s for s in self.running if s.phase is Phase.DECODE]
        prefilling = sorted(
            (s for s in self.running if s.phase is Phase.PREFILL),
            key=lambda s: (s.priority, s.prefill_work - s.passed_over),
        )
        plans = plan_prefill(
            prefilling,
            [s.prompt_left for s in prefilling],
            self.config.n_batch - len(decoding),
            len(decoding),
            self.config.prefill_chunk_while_decoding,
        )
        ahead = 0  # tokens this step gives to the prompts before each one
        given = {p.seq.id: p.n_tokens for p in plans}
        for seq in prefilling:
            seq.passed_over += ahead
            ahead += given.get(seq.id, 0)
        return Step(decode=decoding, prefill=plans)

    def postprocess(self, step: Step) -> list[Sequence]:
        """Record a decoded step in the slot data; return the sequences that now need a token sampled
        (every decoding one, and each prefill that reached the end of its prompt)."""
        for seq in step.decode:
            assert seq.pending is not None  # a decoding sequence has its next token
            seq.held.tokens.append(seq.pending)
            seq.held.tokens.extend(seq.draft)  # the engine truncates the rejected ones after sampling
        ready = list(step.decode)
        for plan in step.prefill:
            seq = plan.seq
            seq.held.tokens.extend(seq.prompt[seq.cursor : seq.cursor + plan.n_tokens])
            seq.cursor += plan.n_tokens
            if seq.cursor == len(seq.prompt):
                seq.phase = Phase.DECODE
                ready.append(seq)
        return ready

    def on_kv_full(self, step: Step) -> Evict | Preempt | Abort:
        """llama.cpp had no room for `step`: what gives way (see the module docstring, point 4)."""
        victims = self.pool.evictable()
        if victims:
            return Evict(victims[0])
        in_step = step.decode + [p.seq for p in step.prefill]
        most_urgent = min((s.priority for s in in_step), default=0)
        lower = [s for s in self.running if s.priority > most_urgent]
        if lower:
            return Preempt(max(reversed(lower), key=lambda s: s.priority))
        newest_first = sorted((p.seq for p in step.prefill), key=lambda s: -s.id)
        if newest_first and len(self.running) > 1:
            return Preempt(max(newest_first, key=lambda s: s.priority))
        return Abort(max(self.running, key=lambda s: s.position))

    def preempt(self, seq: Sequence) -> list[KvOp]:
        """Put a running sequence back at the head of the queue; hold admission until room is made."""
        self.running.remove(seq)
        ops = self._release_source(seq)
        slot = seq.held
        seq.suspend()
        ops += self.pool.release(slot, keep_cache=False)
        self.waiting.appendleft(seq)
        self.hold_admission = True
        return ops

    def evict(self, slot: Slot) -> list[KvOp]:
        return self.pool.clear(slot)

    def remove(self, seq: Sequence, *, keep_cache: bool = False) -> list[KvOp]:
        """Take a sequence out of the queue or the running list and give back its slot."""
        if seq in self.waiting:
            self.waiting.remove(seq)
        if seq in self.running:
            self.running.remove(seq)
            self.hold_admission = False
        ops: list[KvOp] = self._release_source(seq)
        if seq.slot is not None:
            ops += self.pool.release(seq.slot, keep_cache=keep_cache)
            seq.slot = None
        return ops
