"""The engine: one thread per loaded model that owns the llama.cpp context and runs the step loop.

The asyncio side calls `submit()` and iterates events. Each pass of the loop asks the `Scheduler`
what to do (admit, batch, preempt), restores cached prefixes through the `PromptCache`, and has the
`ModelRunner` apply it to llama.cpp (KV ops, decode, sample). A failure in one request ends that
request with `Finished(reason="error")`; its neighbours go on. Cancelling the iterator frees the
sequence before the next step.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from lmdock.core.errors import EngineFailed, PromptTooLong
from lmdock.engine.constraint import ConstraintFactory
from lmdock.engine.llama_model import LlamaModel
from lmdock.engine.prompt_cache import PromptCache
from lmdock.engine.runner import ModelRunner
from lmdock.engine.scheduler import Evict, Preempt, Scheduler, SchedulerConfig, Step
from lmdock.engine.sequence import Phase, Sequence
from lmdock.engine.slots import Claim, Slot, SlotPool
from lmdock.engine.types import EngineEvent, EngineRequest, Finished, FinishReason

log = logging.getLogger(__name__)

INTERNAL_ERROR = "internal error while generating (see the server log)"
_MAX_LOOP_FAILURES = 3  # in a row: then the engine stops and says so instead of failing forever


@dataclass
class EngineConfig:
    """Scheduling settings (from `lmdock.core.config.Settings`; the tuning knob has its own default)."""

    parallel: int
    max_queue: int
    prefill_chunk_while_decoding: int = 128
    chunk_reuse_min: int = 256  # --chunk-reuse-min: shortest cached run moved to a new position; 0: off


@dataclass
class EngineStats:
    """Counters for /metrics and tests; read without locking (ints are atomic enough for reporting)."""

    prompt_tokens: int = 0
    prompt_tokens_processed: int = 0
    generated_tokens: int = 0
    cache_hit_tokens: int = 0
    evictions: int = 0
    moved_tokens: int = 0  # cached tokens moved to new positions (chunk reuse)
    preemptions: int = 0
    requests: int = 0
    decode_seconds: float = 0.0


class EngineStream:
    """The events of one submitted request (TextChunk..., then Finished).

    `cancel()` ends the sequence and frees its slot before the next engine step, whether or not
    iteration ever started (a client that leaves before the response begins never iterates); a consumer
    cancelled while waiting for an event cancels it too."""

    def __init__(self, engine: Engine, seq: Sequence, queue: asyncio.Queue[EngineEvent]) -> None:
        self._engine = engine
        self._seq = seq
        self._queue = queue
        self._finished = False

    def __aiter__(self) -> EngineStream:
        return self

    async def __anext__(self) -> EngineEvent:
        if self._finished:
            raise StopAsyncIteration
        try:
            event = await self._queue.get()
        except BaseException:
            self.cancel()
            raise
        if isinstance(event, Finished):
            self._finished = True
        return event

    def cancel(self) -> None:
        """End the request (idempotent; a no-op once it has finished)."""
        if self._seq.phase is not Phase.DONE and not self._seq.cancelled:
            self._engine.cancel(self._seq)

    async def aclose(self) -> None:
        self.cancel()


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
    ) -> None:
        self.model = model
        self.on_step = on_step  # called on the engine thread after each loop turn (the worker flushes events)
        self.on_failure = on_failure  # called once if the engine thread stops on its own (a worker exits)
        self.config = config
        self.n_ctx = model.n_ctx
        self.stats = EngineStats()
        self.constraints = ConstraintFactory(model.vocab, model.n_vocab)
        self.cache = cache
        self.runner = ModelRunner(model)
        n_seq = model.params.n_seq_max
        self.chunk_reuse_off = "disabled (--chunk-reuse-min 0)" if config.chunk_reuse_min <= 0 else None
        if self.chunk_reuse_off is None:
            self.chunk_reuse_off = self.runner.shift_blocker()
        if self.chunk_reuse_off is None and n_seq < 3:
            self.chunk_reuse_off = "fewer than 3 sequences"
        if self.chunk_reuse_off is None:
            n_seq -= 1  # the last sequence id is the empty scratch that moved runs pass through
        else:
            log.info("chunk reuse off for %s: %s (prefix reuse only)", model.path.name, self.chunk_reuse_off)
        self.pool = SlotPool(n_seq)
        self.scheduler = Scheduler(
            self.pool,
            SchedulerConfig(
                parallel=config.parallel,
                max_queue=config.max_queue,
                n_batch=model.params.n_batch,
                prefill_chunk_while_decoding=config.prefill_chunk_while_decoding,
                chunk_reuse_min=config.chunk_reuse_min if self.chunk_reuse_off is None else 0,
                scratch_seq=n_seq,
            ),
        )
        self._cv = threading.Condition()  # guards the scheduler's waiting queue (shared with submit)
        self._stopping = False
        self.failure: str | None = None  # set if the engine thread stopped on its own
        self.last_activity = time.monotonic()  # when a sequence last finished (idle TTLs count from here)
        self._thread = threading.Thread(target=self._run, name=f"engine-{model.path.stem}", daemon=True)
        self._thread.start()

    # --- asyncio side ------------------------------------------------------------------------------

    def check_prompt(self, n_tokens: int) -> None:
        if n_tokens >= self.n_ctx:
            raise PromptTooLong(n_tokens, self.n_ctx)

    async def submit(self, request: EngineRequest) -> EngineStream:
        """Generate for `request`; raises PromptTooLong / Overloaded / EngineFailed before the first
        event. Events: `Admitted` once a slot is set up, `TextChunk`s, and a last `Finished`."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[EngineEvent] = asyncio.Queue()

        def emit(event: EngineEvent) -> None:
            with contextlib.suppress(RuntimeError):  # the consumer's event loop is gone: nobody listens
                loop.call_soon_threadsafe(queue.put_nowait, event)

        if request.grammar:  # compiling a grammar takes milliseconds: keep it off the event loop
            seq = await asyncio.to_thread(self.enqueue, request, emit)
        else:
            seq = self.enqueue(request, emit)
        return EngineStream(self, seq, queue)

    def enqueue(self, request: EngineRequest, emit: Callable[[EngineEvent], None]) -> Sequence:
        """Queue `request` from any thread; `emit` receives its events on the engine thread. Raises
        PromptTooLong / Overloaded / EngineFailed / InvalidRequest (bad constraint) before anything is
        queued."""
        self.check_prompt(len(request.prompt))
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

    @property
    def queue_depth(self) -> int:
        return len(self.scheduler.waiting)

    @property
    def active_count(self) -> int:
        return len(self.scheduler.running)

    def snapshot(self) -> dict:
        """Engine state for tests: queue depth, active sequences, resident KV per slot (reads llama.cpp's
        memory from this thread, so keep it off hot paths)."""
        return {
            "waiting": len(self.scheduler.waiting),
            "active": len(self.scheduler.running),
            "blocked_by": self.scheduler.blocked_by(),
            "failure": self.failure,
            "slots": [
                {
                    "seq_id": s.seq_id,
                    "busy": s.busy,
                    "tokens": len(s.tokens),
                    "kv_pos_max": self.runner.kv_pos_max(s.seq_id),
                }
                for s in self.pool.slots
            ],
        }

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
            admitted = self.scheduler.admit()
        # preempted for a more urgent request: resumes when admitted again, with its sampler, grammar
        # and text state, and its KV kept as prefix cache
        self.stats.preemptions += len(yielded)
        for seq in cancelled:
            self._end(seq, "cancelled")
        for seq, claim in admitted:
            self._isolated(seq, self._start, seq, claim)
        self._splice()
        step = self.scheduler.schedule()
        if step:
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
        if self.cache is not None and not seq.runs:
            self._restore(seq.slot, seq.prompt)
        seq.cursor = len(seq.slot.tokens)  # what the KV really holds, whatever the cache did
        if seq.sampler is None:  # a suspended sequence resumes with its own
            self.runner.start_sampler(seq)
        reused = claim.reused if seq.runs else seq.cursor  # runs move in as the prefill reaches them
        if seq.cached is None:
            self.stats.prompt_tokens += len(seq.prompt)
            self.stats.cache_hit_tokens += reused
        seq.admitted(reused)

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
            self._make_room(step)
            return
        ready = self.scheduler.postprocess(step)
        for plan in step.prefill:
            self.stats.prompt_tokens_processed += plan.n_tokens
            if plan.seq.phase is Phase.DECODE and plan.seq.generated == 0 and self.cache is not None:
                self._isolated(plan.seq, self._persist, plan.seq)
        for seq in ready:
            if seq.phase is not Phase.DONE:
                self._isolated(seq, self._sample, seq)

    def _sample(self, seq: Sequence) -> None:
        if seq.max_tokens <= 0:
            self._end(seq, seq.limit_reason, keep_cache=True)
            return
        token = self.runner.sample(seq)
        if seq.constraint is not None and not seq.constraint.consume(token):
            self._end(seq, "error", keep_cache=True, error=f"constraint violated: {seq.constraint.error}")
            return
        if self.model.is_eog(token):
            self._end(seq, "eog", keep_cache=True)
            return
        self.stats.generated_tokens += 1
        logprob = None
        if seq.request.logprobs is not None:
            logprob = self.runner.logprob(seq, token, seq.request.logprobs)
        stop = seq.push_piece(self.model.token_piece(token), logprob)
        seq.pending = token
        if stop is not None:
            self._end(seq, "stop", keep_cache=True, stop=stop)
        elif seq.constraint is not None and seq.constraint.done:
            self._end(seq, "grammar", keep_cache=True)
        elif seq.generated >= seq.max_tokens:
            self._end(seq, seq.limit_reason, keep_cache=True)

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

    # --- engine thread: the prompt cache -----------------------------------------------------------

    def _restore(self, slot: Slot, prompt: list[int]) -> None:
        """Load a cached state into `slot` if it holds a longer prefix of `prompt` than the slot does.

        A disk file is verified first: a damaged one is deleted and the slot keeps what it had. If
        llama.cpp then fails to load a state, the slot is left empty (the prompt is computed cold)."""
        hit = self.cache.lookup(prompt, have=len(slot.tokens))
        if hit is None:
            return
        entry = hit.entry
        files = self.cache.files
        if entry.file is not None and not files.verify(entry.file):
            self.cache.discard(entry, "the file is damaged or cut short")
            return
        self.runner.apply(self.pool.clear(slot))
        if entry.data is not None:
            loaded = self.runner.write_state(slot.seq_id, entry.data)
        else:
            loaded = self.runner.load_file(slot.seq_id, files.state_path(entry.file), len(entry.tokens))
        if not loaded:
            self.runner.apply(self.pool.clear(slot))
            self.cache.discard(entry, "llama.cpp could not load it")
            return
        slot.tokens = list(entry.tokens)
        self.runner.apply(self.pool.truncate(slot, hit.n_tokens))
        self.cache.restored(entry)

    def _persist(self, seq: Sequence) -> None:
        """Save a just-prefilled prompt to disk unless a saved entry already covers it."""
        if not self.cache.wants_persist(seq.prompt):
            return
        seq_id = seq.slot.seq_id
        self.cache.persist(
            seq.prompt,
            self.runner.state_size(seq_id),
            lambda path: self.runner.save_file(seq_id, path, seq.prompt),
        )

    def evict(self, slot: Slot) -> None:
        """Free an idle cached slot, spilling its state to host RAM first (engine thread, or tests on an
        idle engine)."""
        if self.cache is not None and self.cache.wants_spill(len(slot.tokens)):
            data = self.runner.read_state(slot.seq_id, self.cache.ram_bytes)
            if data is not None:
                self.cache.add_ram(slot.tokens, data)
        self.runner.apply(self.scheduler.evict(slot))
        self.stats.evictions += 1
