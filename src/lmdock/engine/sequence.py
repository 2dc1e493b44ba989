"""Per-request state inside the engine: phase, prompt cursor, slot, sampler handles, decoding and stops."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from enum import Enum
from typing import TYPE_CHECKING

from lmdock.engine.constraint import Constraint
from lmdock.engine.detokenizer import IncrementalDecoder, StopMatcher
from lmdock.engine.lookup import Nearest
from lmdock.engine.reuse import Run
from lmdock.engine.slots import Slot
from lmdock.engine.speculation import DraftState
from lmdock.engine.types import (
    Admitted,
    CacheLookup,
    EngineEvent,
    EngineRequest,
    Finished,
    FinishReason,
    TextChunk,
    TokenLogprob,
)

if TYPE_CHECKING:
    from lmdock.engine.sampling import Sampler

_ids = itertools.count(1)


class Phase(Enum):
    WAITING = "waiting"
    PREFILL = "prefill"
    DECODE = "decode"
    DONE = "done"


class Sequence:
    """One request from submission to its Finished event. Touched only by the engine thread,
    except `cancelled`, which the request's consumer may set at any time."""

    def __init__(self, request: EngineRequest, emit: Callable[[EngineEvent], None], max_tokens: int) -> None:
        self.id = next(_ids)
        self.request = request
        self.prompt = request.prompt  # grows by the generated text if the sequence is preempted
        self.prompt_tokens = len(request.prompt)  # what usage reports
        self.emit = emit
        self.max_tokens = max_tokens
        self.clamped_by_context = max_tokens < request.max_tokens
        self.phase = Phase.WAITING
        self.cancelled = False
        self.slot: Slot | None = None
        self.cursor = 0  # prompt tokens already in the slot's KV
        self.source: Slot | None = None  # chunk reuse: the pinned slot the runs below still sit in
        self.runs: list[Run] = []  # cached runs still to move in, in prompt order (chunk_reuse.py)
        self.cached: int | None = None  # prompt tokens found in the cache at the first admission
        self.passed_over = 0  # prefill tokens computed for prompts scheduled ahead of this one
        self.queued_at = time.monotonic()
        self.blocked_by: str | None = None  # the first reason the scheduler gave while it waited
        self.nearest: Nearest | None = None  # the resident slot nearest its prompt, seen at admission
        self.generated = 0
        self.pending: int | None = None  # last sampled token, decoded in the next step
        self.draft: list[int] = []  # proposed tokens verified after `pending` in the step under way
        self.spec: DraftState | None = None  # speculation state (None: speculation off)
        self.batch_index = -1  # the logits row to sample next (a draft's rows follow the pending token's)
        self.sampler: Sampler | None = None  # owned by the model runner
        self.constraint: Constraint | None = None
        self._decoder = IncrementalDecoder()
        self._stops = StopMatcher(request.stop)
        self._logprobs: list[TokenLogprob] = []  # sampled tokens whose text is not emitted yet

    @property
    def held(self) -> Slot:
        """The slot of a running sequence (from admission until it is suspended or ends)."""
        if self.slot is None:
            raise RuntimeError(f"sequence {self.id} holds no slot")
        return self.slot

    @property
    def position(self) -> int:
        """Position of the next token to decode in this sequence."""
        return len(self.slot.tokens) if self.slot else 0

    @property
    def prompt_left(self) -> int:
        """Prompt tokens to compute before the next step can do something else (the next cached run)."""
        end = self.runs[0].dst if self.runs else len(self.prompt)
        return end - self.cursor

    @property
    def prefill_work(self) -> int:
        """Prompt tokens still to compute (the cached runs still to move in cost nothing)."""
        return len(self.prompt) - self.cursor - sum(run.length for run in self.runs)

    @property
    def priority(self) -> int:
        """Scheduling class (core.request.PRIORITY_*): a lower value is admitted and kept first."""
        return self.request.priority

    def suspend(self) -> None:
        """Leave the slot (preempted) and wait again. A decoding sequence will resume by reading back
        what it has generated as prompt (cheap while its KV survives as prefix cache), so its output
        goes on where it stopped and nothing already emitted is repeated."""
        if self.phase is Phase.DECODE and self.slot is not None and self.pending is not None:
            self.prompt = [*self.slot.tokens, self.pending]
            self.pending = None
        self.slot, self.cursor, self.phase = None, 0, Phase.WAITING

    @property
    def limit_reason(self) -> FinishReason:
        """Why generation ends at `max_tokens`: the client's limit, or the end of the context."""
        return "context" if self.clamped_by_context else "length"

    def admitted(self, cached: int | None = None, lookup: CacheLookup | None = None) -> None:
        """The slot is set up (prefix reused or restored, runs planned): report the cache hit, how the
        lookup went and the time spent queued, once per request."""
        if self.cached is None:
            self.cached = self.cursor if cached is None else cached
            self.emit(
                Admitted(
                    prompt_tokens=self.prompt_tokens,
                    cached_tokens=self.cached,
                    lookup=lookup,
                    queue_seconds=time.monotonic() - self.queued_at,
                    blocked_by=self.blocked_by,
                )
            )

    def push_piece(self, piece: bytes, logprob: TokenLogprob | None = None) -> str | None:
        """Feed one sampled token's bytes; emit safe text; return the stop string if one matched.

        A token's logprob entry carries the text that token added to the decoded output and travels
        with the first chunk that emits text at or after it (held-back text keeps its entries waiting)."""
        self.generated += 1
        decoded = self._decoder.feed(piece)
        if logprob is not None:
            logprob.token = decoded
            self._logprobs.append(logprob)
        text = self._stops.feed(decoded)
        if text:
            self.emit(TextChunk(text=text, logprobs=self._take_logprobs()))
        return self._stops.hit

    def _take_logprobs(self) -> list[TokenLogprob] | None:
        if self.request.logprobs is None:
            return None
        taken, self._logprobs = self._logprobs, []
        return taken

    def finish(self, reason: FinishReason, *, stop: str | None = None, error: str | None = None) -> None:
        if self.phase is Phase.DONE:
            return
        self.phase = Phase.DONE
        if reason not in ("stop", "cancelled", "error"):
            tail = self._stops.feed(self._decoder.flush())
            tail += "" if self._stops.hit else self._stops.flush()
            if tail:
                self.emit(TextChunk(text=tail, logprobs=self._take_logprobs()))
        self.emit(
            Finished(
                reason=reason,
                prompt_tokens=self.prompt_tokens,
                cached_tokens=self.cached or 0,
                generated_tokens=self.generated,
                spec_proposed=self.spec.proposed if self.spec is not None else 0,
                spec_accepted=self.spec.accepted if self.spec is not None else 0,
                stop_sequence=stop,
                error=error,
            )
        )
