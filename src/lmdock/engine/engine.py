"""The engine: one thread per loaded model owning the llama.cpp context, continuous batching.

The asyncio side calls `submit()` and iterates events; the engine thread admits requests into KV
slots (reusing cached prefixes), builds one batch per step (every decoding sequence's next token, then
prefill chunks), decodes, samples and streams text back. Cancelling the iterator frees the sequence
before the next step.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import llama_cpp as L

from lmdock.core.errors import Overloaded, PromptTooLong
from lmdock.engine.batch import Batch
from lmdock.engine.constraint import ConstraintFactory
from lmdock.engine.llama_model import LlamaModel
from lmdock.engine.prompt_cache import PromptCache
from lmdock.engine.sampling import build_sampler_chain, free_sampler_chain
from lmdock.engine.scheduler import plan_prefill
from lmdock.engine.sequence import Phase, Sequence
from lmdock.engine.slots import SlotPool
from lmdock.engine.types import EngineEvent, EngineRequest, Finished

log = logging.getLogger(__name__)


@dataclass
class EngineConfig:
    parallel: int = 4
    max_queue: int = 64
    prefill_chunk_while_decoding: int = 128
    cached_slots: int = 4


@dataclass
class EngineStats:
    """Counters for /metrics and tests; read without locking (ints are atomic enough for reporting)."""

    prompt_tokens: int = 0
    prompt_tokens_processed: int = 0
    generated_tokens: int = 0
    cache_hit_tokens: int = 0
    evictions: int = 0
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
    ) -> None:
        self.model = model
        self.on_step = on_step  # called on the engine thread after each loop turn (the worker flushes events)
        self.config = config
        self.n_ctx = model.n_ctx
        self.n_batch = model.params.n_batch
        self.stats = EngineStats()
        self.constraints = ConstraintFactory(model.vocab, model.n_vocab)
        self.cache = cache
        self.pool = SlotPool(model.memory, model.params.n_seq_max)
        self._batch = Batch(self.n_batch)
        self._waiting: deque[Sequence] = deque()
        self._active: list[Sequence] = []
        self._cv = threading.Condition()
        self._stopping = False
        self._hold_admission = False  # set after a preemption until some sequence frees its cells
        self.last_activity = time.monotonic()  # when a sequence last finished (idle TTLs count from here)
        self._thread = threading.Thread(target=self._run, name=f"engine-{model.path.stem}", daemon=True)
        self._thread.start()

    # --- asyncio side ------------------------------------------------------------------------------

    def check_prompt(self, n_tokens: int) -> None:
        if n_tokens >= self.n_ctx:
            raise PromptTooLong(n_tokens, self.n_ctx)

    async def submit(self, request: EngineRequest) -> EngineStream:
        """Generate for `request`; raises PromptTooLong / Overloaded before the first event."""
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
        PromptTooLong / Overloaded / InvalidRequest (bad constraint) before anything is queued."""
        self.check_prompt(len(request.prompt))
        max_tokens = min(request.max_tokens, self.n_ctx - len(request.prompt))
        seq = Sequence(request, emit, max_tokens)
        if request.grammar:
            seq.constraint = self.constraints.create(request.grammar)
        with self._cv:
            if len(self._waiting) >= self.config.max_queue:
                raise Overloaded("Overloaded: the request queue is full", retry_after=2)
            self._waiting.append(seq)
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
        for seq in list(self._active) + list(self._waiting):
            self._drop(seq, "cancelled")
        self._batch.close()
        self.model.close()

    @property
    def queue_depth(self) -> int:
        return len(self._waiting)

    @property
    def active_count(self) -> int:
        return len(self._active)

    def snapshot(self) -> dict:
        """Engine state for tests: queue depth, active sequences, resident KV per slot (reads llama.cpp's
        memory from this thread, so keep it off hot paths)."""
        return {
            "waiting": len(self._waiting),
            "active": len(self._active),
            "slots": [
                {
                    "seq_id": s.seq_id,
                    "busy": s.busy,
                    "tokens": len(s.tokens),
                    "kv_pos_max": int(L.llama_memory_seq_pos_max(self.model.memory, s.seq_id)),
                }
                for s in self.pool.slots
            ],
        }

    # --- engine thread -----------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._stopping and not self._waiting and not self._active:
                    self._cv.wait()
                if self._stopping:
                    return
                self._reap_cancelled()
                self._admit()
            if self._active:
                try:
                    self._step()
                except Exception as exc:  # a failed step must not kill the engine thread
                    log.exception("engine step failed")
                    for seq in list(self._active):
                        self._drop(seq, "error", error=str(exc))
            if self.on_step is not None:
                self.on_step()

    def _reap_cancelled(self) -> None:
        for seq in [s for s in self._waiting if s.cancelled]:
            self._waiting.remove(seq)
            seq.finish("cancelled")
        for seq in [s for s in self._active if s.cancelled]:
            self._drop(seq, "cancelled")

    def _admit(self) -> None:
        if self._hold_admission and self._active:
            return
        self._hold_admission = False
        while self._waiting and len(self._active) < self.config.parallel:
            seq = self._waiting[0]
            claim = self.pool.claim(seq.prompt)
            if claim is None:
                return
            self._waiting.popleft()
            seq.slot = claim.slot
            reused = claim.reused
            if self.cache is not None:
                restored = self.cache.restore_if_better(
                    self.model.ctx, self.pool, claim.slot, seq.prompt, reused
                )
                reused = max(reused, restored)
            seq.cursor = seq.cached = reused
            seq.phase = Phase.PREFILL
            seq.sampler = build_sampler_chain(seq.request.sampling, self.model.n_vocab)
            self.stats.prompt_tokens += len(seq.prompt)
            self.stats.cache_hit_tokens += reused
            self._active.append(seq)

    def _step(self) -> None:
        batch = self._batch
        batch.clear()
        decoding = [s for s in self._active if s.phase is Phase.DECODE]
        prefilling = [s for s in self._active if s.phase is Phase.PREFILL]
        for seq in decoding:
            seq.batch_index = batch.add(seq.pending, seq.position, seq.slot.seq_id, True)
        plans = plan_prefill(
            prefilling,
            [s.prompt_left for s in prefilling],
            self.n_batch - len(decoding),
            len(decoding),
            self.config.prefill_chunk_while_decoding,
        )
        for plan in plans:
            seq = plan.seq
            start = seq.cursor
            for i in range(start, start + plan.n_tokens):
                last = i == len(seq.prompt) - 1
                idx = batch.add(seq.prompt[i], i, seq.slot.seq_id, last)
                if last:
                    seq.batch_index = idx
        if batch.size == 0:
            return
        started = time.perf_counter()
        rc = L.llama_decode(self.model.ctx, batch.raw)
        self.stats.decode_seconds += time.perf_counter() - started
        if rc == 1:
            self._make_room(plans)
            return
        if rc != 0:
            raise RuntimeError(f"llama_decode failed with code {rc}")
        for seq in decoding:
            seq.slot.tokens.append(seq.pending)
            self._sample(seq)
        for plan in plans:
            seq = plan.seq
            seq.slot.tokens.extend(seq.prompt[seq.cursor : seq.cursor + plan.n_tokens])
            seq.cursor += plan.n_tokens
            self.stats.prompt_tokens_processed += plan.n_tokens
            if seq.cursor == len(seq.prompt):
                seq.phase = Phase.DECODE
                if self.cache is not None:
                    self.cache.maybe_persist(self.model.ctx, seq.slot, seq.prompt)
                self._sample(seq)

    def _sample(self, seq: Sequence) -> None:
        if seq.max_tokens <= 0:
            self._complete(seq, "context" if seq.clamped_by_context else "length")
            return
        if seq.constraint is not None:
            seq.constraint.apply(L.llama_get_logits_ith(self.model.ctx, seq.batch_index))
        token = L.llama_sampler_sample(seq.sampler, self.model.ctx, seq.batch_index)
        if seq.constraint is not None and not seq.constraint.consume(token):
            self._complete(seq, "error", error=f"constraint violated: {seq.constraint.error}")
            return
        if self.model.is_eog(token):
            self._complete(seq, "eog")
            return
        self.stats.generated_tokens += 1
        stop = seq.push_piece(self.model.token_piece(token))
        seq.pending = token
        if stop is not None:
            self._complete(seq, "stop", stop=stop)
        elif seq.constraint is not None and seq.constraint.done:
            self._complete(seq, "grammar")
        elif seq.generated >= seq.max_tokens:
            self._complete(seq, "context" if seq.clamped_by_context else "length")

    def _make_room(self, plans) -> None:
        """The KV cache is full: evict an idle cached slot, else send the newest prefill back to wait."""
        victims = self.pool.evictable()
        if victims:
            victim = victims[0]
            if self.cache is not None:
                self.cache.spill(self.model.ctx, victim)
            self.pool.clear(victim)
            self.stats.evictions += 1
            return
        prefilling = [p.seq for p in plans]
        if prefilling and len(self._active) > 1:
            seq = prefilling[-1]
            self._active.remove(seq)
            self.pool.release(seq.slot, keep_cache=False)
            seq.slot, seq.cursor, seq.phase = None, 0, Phase.WAITING
            free_sampler_chain(seq.sampler)
            seq.sampler = None
            self._waiting.appendleft(seq)
            self._hold_admission = True
            return
        victim = max(self._active, key=lambda s: s.position)
        self._drop(victim, "context")

    def _complete(self, seq: Sequence, reason, *, stop: str | None = None, error: str | None = None) -> None:
        self._release(seq, keep_cache=True)
        seq.finish(reason, stop=stop, error=error)

    def _drop(self, seq: Sequence, reason, *, error: str | None = None) -> None:
        """End a sequence and free its KV cells (cancelled, failed, or pushed out of the context)."""
        self._release(seq, keep_cache=False)
        seq.finish(reason, error=error)

    def _release(self, seq: Sequence, *, keep_cache: bool) -> None:
        if seq in self._active:
            self._active.remove(seq)
            self._hold_admission = False
        self.last_activity = time.monotonic()
        if seq.slot is not None:
            self.pool.release(seq.slot, keep_cache=keep_cache)
            seq.slot = None
        free_sampler_chain(seq.sampler)
        seq.sampler = None
