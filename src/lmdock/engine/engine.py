"""The engine: one thread per loaded model that owns the llama.cpp context and runs the step loop.

Any thread calls `enqueue()` with an `emit` callback (engine clients wrap it in an EventStream) and
`cancel()`. Each pass of the loop asks the `Scheduler` what to do (admit, batch, preempt), restores cached
prefixes through the `CacheMover`, and has the `ModelRunner` apply it to llama.cpp (KV ops, decode,
sample). A failure in one request ends that request with `Finished(reason="error")`; its neighbours go
on. A cancelled sequence is freed before the next step.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import NamedTuple

from lmdock.core.errors import EngineFailed, PromptTooLong
from lmdock.engine.cache_mover import CacheMover
from lmdock.engine.chunk_reuse import reuse_blocker
from lmdock.engine.constraint import ConstraintFactory
from lmdock.engine.llama_model import LlamaModel
from lmdock.engine.lookup import explain
from lmdock.engine.prompt_cache import PromptCache
from lmdock.engine.runner import ModelRunner
from lmdock.engine.scheduler import Evict, Preempt, Scheduler, SchedulerConfig, Step
from lmdock.engine.sequence import Phase, Sequence
from lmdock.engine.slots import Claim, Slot, SlotPool
from lmdock.engine.spec import EngineConfig
from lmdock.engine.speculator import Speculator
from lmdock.engine.types import EngineEvent, EngineRequest, EngineState, EngineStats, FinishReason

log = logging.getLogger(__name__)

INTERNAL_ERROR = "internal error while generating (see the server log)"
_MAX_LOOP_FAILURES = 3  # in a row: then the engine stops and says so instead of failing forever


class _Ending(NamedTuple):
    reason: FinishReason
    stop: str | None = None
    error: str | None = None


class Engine:
    """Continuous-batching generation over one LlamaModel."""

    def __init__(
        self,
        model: LlamaModel,
        config: EngineConfig,
        cache: PromptCache | None = None,
        *,
        on_step: Callable[[], None] | None = None,
        on_failure: Callable[[str], None] | None = None,
        constraints: ConstraintFactory | None = None,
    ) -> None:
        self.model = model
        self.on_step = on_step  # called on the engine thread after each loop turn (the worker flushes events)
        self.on_failure = on_failure  # called once if the engine thread stops on its own (a worker exits)
        self.config = config
        self.n_ctx = model.n_ctx
        self.stats = EngineStats()
        self.constraints = constraints or ConstraintFactory(model.vocab, model.n_vocab)
        self.cache = cache
        self.runner = ModelRunner(model)
        n_seq = model.params.n_seq_max
        self.chunk_reuse_off = reuse_blocker(config.chunk_reuse_min, n_seq, self.runner.shift_blocker)
        if self.chunk_reuse_off is None:
            n_seq -= 1  # the last sequence id is the empty scratch that moved runs pass through
        else:
            log.info("chunk reuse off for %s: %s (prefix reuse only)", model.path.name, self.chunk_reuse_off)
        self.pool = SlotPool(n_seq)
        reuse_min = config.chunk_reuse_min if self.chunk_reuse_off is None else 0
        self.mover = (
            CacheMover(cache, self.runner, self.pool, self.stats, reuse_min) if cache is not None else None
        )
        self.scheduler = Scheduler(
            self.pool,
            SchedulerConfig(
                parallel=config.parallel,
                max_queue=config.max_queue,
                n_batch=model.params.n_batch,
                prefill_chunk_while_decoding=config.prefill_chunk_while_decoding,
                chunk_reuse_min=reuse_min,
                scratch_seq=n_seq,
            ),
        )
        self.speculator = Speculator(config.speculation, model.params.n_batch, self.stats)
        # prompts prefilled this step, while their first tokens are sampled (saved once those are out)
        self._unsaved: list[Sequence] = []
        self._cv = threading.Condition()  # guards the scheduler's waiting queue (shared with submit)
        self._stopping = False
        self.failure: str | None = None  # set if the engine thread stopped on its own
        self.last_activity = time.monotonic()  # when a sequence last finished (idle TTLs count from here)
        self._thread = threading.Thread(target=self._run, name=f"engine-{model.path.stem}", daemon=True)
        self._thread.start()

    # --- any thread ---------------------------------------------------------------------------------

    def enqueue(self, request: EngineRequest, emit: Callable[[EngineEvent], None]) -> Sequence:
        """Queue `request` from any thread; `emit` receives its events on the engine thread. Raises
        PromptTooLong / Overloaded / EngineFailed / InvalidRequest (bad constraint) before anything is
        queued."""
        if len(request.prompt) >= self.n_ctx:
            raise PromptTooLong(len(request.prompt), self.n_ctx)
        max_tokens = min(request.max_tokens, self.n_ctx - len(request.prompt))
        seq = Sequence(request, emit, max_tokens)
        if request.grammar:
            seq.constraint = self.constraints.create(request.grammar)
        with self._cv:
            if self.failure is not None:
                raise EngineFailed(self.failure)
            self.scheduler.add(seq)
            self.stats.requests += 1
            self._cv.notify()
        return seq

    def cancel(self, seq: Sequence) -> None:
        with self._cv:
            seq.cancelled = True
            self._cv.notify()

    def close(self) -> None:
        with self._cv:
            self._stopping = True
            self._cv.notify()
        self._thread.join(timeout=30)
        self._end_all("cancelled")
        self.runner.close()
        self.model.close()

    def state(self) -> EngineState:
        return EngineState(
            len(self.scheduler.waiting), len(self.scheduler.running), self.last_activity, self.stats
        )

    # --- engine thread: the loop -------------------------------------------------------------------

    def _run(self) -> None:
        failures = 0
        try:
            while True:
                try:
                    if not self._iterate():
                        return
                    failures = 0
                except Exception:
                    failures += 1
                    log.exception("engine loop failed (%d in a row); ending its requests", failures)
                    self._end_all("error", error=INTERNAL_ERROR)
                    if failures >= _MAX_LOOP_FAILURES:
                        self.failure = "the engine stopped after repeated internal errors; reload the model"
                        return
        finally:
            if not self._stopping:
                if self.failure is None:
                    self.failure = "the engine thread ended unexpectedly; reload the model"
                log.critical("engine for %s stopped: %s", self.model.path.name, self.failure)
                self._end_all("error", error=INTERNAL_ERROR)
                if self.on_failure is not None:
                    self.on_failure(self.failure)

    def _iterate(self) -> bool:
        """One pass: end cancelled requests, admit waiting ones, run one batch. False when stopping."""
        with self._cv:
            while not self._stopping and not self.scheduler.waiting and not self.scheduler.running:
                self._cv.wait()
            if self._stopping:
                return False
            cancelled = self.scheduler.cancelled()
            yielded = self.scheduler.yield_to_priority()
            if self.mover is not None and (head := self.scheduler.next_admissible()) is not None:
                self.mover.promote(head.prompt)  # a cached source for chunk reuse, back from RAM
            admitted = self.scheduler.admit()
        self.stats.preemptions += len(yielded)  # they resume where they were when admitted again
        for seq in cancelled:
            self._end(seq, "cancelled")
        for seq, claim in admitted:
            self._isolated(seq, self._start, seq, claim)
        if admitted and self.mover is not None:  # before the new prompts take cells
            new_tokens = sum(seq.prefill_work + seq.max_tokens - seq.generated for seq, _ in admitted)
            self.stats.demotions += self.mover.clear_the_way(new_tokens)
        self._splice()
        step = self.scheduler.schedule()
        if step:
            self.speculator.plan(step, self.pool.kv_span(self.runner.kv_version))
            self._step(step)
        if self.on_step is not None:
            self.on_step()
        return True

    def _isolated(self, seq: Sequence, work: Callable, *args) -> None:
        """Run one request's share of the work; if it raises, only that request ends (with "error")."""
        try:
            work(*args)
        except Exception:
            log.exception("request %d failed; ending it", seq.id)
            self._end(seq, "error", error=INTERNAL_ERROR)

    def _start(self, seq: Sequence, claim: Claim) -> None:
        """Set up an admitted sequence's slot: reused prefix, then a longer cached one if there is."""
        self.runner.apply(claim.ops)
        near = self.mover.nearest(seq.prompt, seq.nearest) if self.mover is not None else seq.nearest
        tier = self.mover.restore(claim.slot, seq.prompt) if self.mover is not None and not seq.runs else None
        seq.cursor = len(claim.slot.tokens)  # what the KV really holds, whatever the cache did
        if seq.sampler is None:  # a suspended sequence resumes with its own
            self.runner.start_sampler(seq)
        reused = claim.reused if seq.runs else seq.cursor  # runs move in as the prefill reaches them
        if seq.cached is None:  # the first admission: count the lookup and say how it went
            lookup = explain(seq.prompt, near, tier or "slot", reused, seq.runs, self.model.token_piece)
            seq.admitted(reused, self.stats.counted(len(seq.prompt), lookup))

    def _splice(self) -> None:
        """Move cached runs into prompts whose prefill reached them (chunk reuse)."""
        with self._cv:
            splices = self.scheduler.splice_ready()
        for seq, result in splices:
            self._isolated(seq, self.runner.apply, result.ops)
            self.stats.moved_tokens += result.moved

    def _step(self, step: Step) -> None:
        try:
            decoded = self.runner.decode(step)
        except Exception:
            log.exception("llama_decode failed; ending the %d requests in the batch", len(step.decode))
            for seq in step.decode + [p.seq for p in step.prefill]:
                self._end(seq, "error", error=INTERNAL_ERROR)
            return
        self.stats.decode_seconds = self.runner.decode_seconds
        if not decoded:
            if not self.speculator.retract(step):
                self._make_room(step)
            return
        n_kv = self.pool.kv_span(self.runner.kv_version)  # the cells the slots held before this step
        if step.decode:  # this step's n_kv: those, and its own tokens
            self.stats.decoded_step(n_kv + step.n_tokens, self.runner.last_seconds)
        self.speculator.timed(step, n_kv, self.runner.last_seconds)
        ready = self.scheduler.postprocess(step)
        for plan in step.prefill:
            self.stats.prompt_tokens_processed += plan.n_tokens
            if plan.seq.phase is Phase.DECODE and plan.seq.generated == 0 and self.mover is not None:
                self._unsaved.append(plan.seq)
        try:
            for seq in ready:
                if seq.phase is not Phase.DONE:
                    self._isolated(seq, self._sample, seq)
        finally:
            unsaved, self._unsaved = self._unsaved, []  # only while their KV holds just the prompt
        self._save_prefilled(unsaved)

    def _save_prefilled(self, unsaved: list[Sequence]) -> None:
        """Save the prompts prefilled this step to disk once their first tokens have gone out: writing and
        hashing a long prompt's state takes most of a second (135 MB at 11k tokens on the default
        model), which every Claude Code turn would otherwise wait for before its first token. The KV
        holds just the prompt until the next decode, so what is saved is the same. A sequence that ends
        sooner is saved before its end is sent (`_end`): a finished reply means a saved prompt."""
        if not unsaved:
            return
        if self.on_step is not None:
            self.on_step()  # the worker sends the first tokens now
        for seq in unsaved:  # none has ended: `_end` takes a sequence out of `_unsaved` and saves it
            self._isolated(seq, self._save, seq)

    def _save(self, seq: Sequence) -> None:
        assert self.mover is not None  # only queued with a cache
        self.mover.persist(seq)

    def _sample(self, seq: Sequence) -> None:
        """Sample the next token, then each draft position while the draft holds (every position with
        the sequence's own sampler chain and grammar, so the output is what one token per step gives);
        roll the KV back past the positions not sampled from; end the sequence or leave its last token
        pending."""
        if seq.max_tokens <= 0:
            self._end(seq, seq.limit_reason, keep_cache=True)
            return
        draft, seq.draft = seq.draft, []
        sampled: list[int] = []
        ending: _Ending | None = None
        for i in range(len(draft) + 1):
            token = self.runner.sample(seq)
            sampled.append(token)
            ending = self._take(seq, token)
            if ending is not None or i == len(draft) or token != draft[i]:
                break
            seq.batch_index += 1  # the draft token was right: its row predicts the next position
        rejected = len(draft) + 1 - len(sampled)
        if rejected and seq.slot is not None:
            self.runner.apply(self.pool.truncate(seq.slot, len(seq.slot.tokens) - rejected))
        self.speculator.settle(seq, draft, sampled)
        if ending is not None:
            self._end(seq, ending.reason, keep_cache=True, stop=ending.stop, error=ending.error)

    def _take(self, seq: Sequence, token: int) -> _Ending | None:
        """Emit one sampled token (grammar, text, stops, logprobs); why the sequence ends with it."""
        if seq.constraint is not None and not seq.constraint.consume(token):
            return _Ending("error", error=f"constraint violated: {seq.constraint.error}")
        if self.model.is_eog(token):
            return _Ending("eog")
        self.stats.generated_tokens += 1
        logprob = None
        if seq.request.logprobs is not None:
            logprob = self.runner.logprob(seq, token, seq.request.logprobs)
        stop = seq.push_piece(self.model.token_piece(token), logprob)
        seq.pending = token
        if stop is not None:
            return _Ending("stop", stop=stop)
        if seq.constraint is not None and seq.constraint.done:
            return _Ending("grammar")
        if seq.generated >= seq.max_tokens:
            return _Ending(seq.limit_reason)
        return None

    def _make_room(self, step: Step) -> None:
        """The KV cache is full: let the scheduler pick what gives way, and do it."""
        decision = self.scheduler.on_kv_full(step)
        if isinstance(decision, Evict):
            self.evict(decision.slot)
        elif isinstance(decision, Preempt):
            with self._cv:
                ops = self.scheduler.preempt(decision.seq)
            self.runner.apply(ops)  # its sampler stays: it restarts the prompt, not the request
            self.stats.preemptions += 1
        else:
            self._end(decision.seq, "context")

    def _end(
        self,
        seq: Sequence,
        reason: FinishReason,
        *,
        keep_cache: bool = False,
        stop: str | None = None,
        error: str | None = None,
    ) -> None:
        """Finish a sequence and give back its slot; its KV stays as prefix cache if `keep_cache`."""
        if seq in self._unsaved:  # ends on its first token: saved before the reply is complete
            self._unsaved.remove(seq)
            try:
                self._save(seq)
            except Exception:
                log.exception("request %d: saving its prompt failed", seq.id)
        with self._cv:
            ops = self.scheduler.remove(seq, keep_cache=keep_cache)
        try:
            self.runner.apply(ops)
            self.runner.free_sampler(seq)
        finally:
            self.last_activity = time.monotonic()
            seq.finish(reason, stop=stop, error=error)

    def _end_all(self, reason: FinishReason, *, error: str | None = None) -> None:
        with self._cv:
            seqs = list(self.scheduler.running) + list(self.scheduler.waiting)
        for seq in seqs:
            with contextlib.suppress(Exception):
                self._end(seq, reason, error=error)

    def evict(self, slot: Slot) -> None:
        """Free an idle cached slot, spilling its state to host RAM first (engine thread, or tests on an
        idle engine)."""
        if self.mover is not None:
            self.mover.evict(slot)
        else:
            self.runner.apply(self.scheduler.evict(slot))
            self.stats.evictions += 1
