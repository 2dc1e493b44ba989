"""Runs one chat request through a model: render -> tokenize -> engine -> parse -> core events.

`prepare()` does everything that can fail with a client error (rendering, the context check, queue
admission) before the API layer commits to a 200, so errors keep their status and envelope.
"""

from __future__ import annotations

import asyncio
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from llguidance import LLMatcher

from lmdock.chat import ChatFormatter, OutputParser, RenderedPrompt
from lmdock.chat.logprobs import LogprobAligner
from lmdock.chat.parser import ParserSpec
from lmdock.chat.plaintext import ContentGuard
from lmdock.core.errors import InvalidRequest, LmdockError
from lmdock.core.events import Done, GenerationEvent, StopReason, TextDelta, ThinkingDelta, Usage
from lmdock.core.request import ChatRequest, SamplingParams
from lmdock.engine import Admitted, EngineClient, EngineEvent, EngineRequest, EventStream, Finished, TextChunk

log = logging.getLogger(__name__)


class GenerationFailed(LmdockError):
    """The engine failed after the response started (surfaces as a stream `error` event)."""


_REASONS: dict[str, StopReason] = {
    "eog": "end_turn",
    "grammar": "end_turn",
    "length": "max_tokens",
    "stop": "stop_sequence",
    "context": "context_window",
}


@dataclass(kw_only=True)
class PreparedChat(ABC):
    """A submitted request, whoever generates it (the local engine here, an upstream engine in
    upstream/session.py): its prompt size is known and its events can be consumed."""

    input_tokens: int
    rendered: RenderedPrompt
    cached_tokens: int = 0
    sampling: SamplingParams = field(default_factory=SamplingParams)  # effective: request + model defaults
    admission: Admitted | None = None  # the local engine's, once seen: cache lookup, time queued and why
    first_output_at: float | None = None  # time.perf_counter() when the first generated text arrived

    def note_output(self) -> None:
        """Mark the first output (the request log reports the time to it); later calls keep the first."""
        if self.first_output_at is None:
            self.first_output_at = time.perf_counter()

    @abstractmethod
    async def admitted(self) -> Usage:
        """The prompt usage once generation can start (call before `events()`, or not at all)."""

    @abstractmethod
    def events(self) -> AsyncIterator[GenerationEvent]:
        """Core events, ending with Done."""

    @abstractmethod
    def cancel(self) -> None:
        """Stop generating and free what the request holds (idempotent). Routes call it when the client
        goes away or the response ends, even if `events()` was never iterated."""


@dataclass(kw_only=True)
class EngineChat(PreparedChat):
    """A request the local engine has admitted to its queue."""

    user_stops: list[str]
    _stream: EventStream
    _early: EngineEvent | None = None  # what `admitted()` read that was not the admission
    logprobs: bool = False

    async def admitted(self) -> Usage:
        """Wait until the engine has set up the prompt's KV slot; the prompt usage as known then (with
        the cache hit), which `Done.usage` repeats."""
        event = await anext(self._stream, None)
        if isinstance(event, Admitted):
            self.cached_tokens, self.admission = event.cached_tokens, event
        else:
            self._early = event  # the request ended first (cancelled, failed): events() reports it
        return Usage(input_tokens=self.input_tokens, output_tokens=0, cached_tokens=self.cached_tokens)

    async def events(self) -> AsyncIterator[GenerationEvent]:
        """Core events; with logprobs, each TextDelta carries the entries of the tokens of its text."""
        parser = self.rendered.new_parser()
        aligner = LogprobAligner() if self.logprobs else None
        try:
            async for event in self._engine_events():
                if isinstance(event, Admitted):
                    self.cached_tokens, self.admission = event.cached_tokens, event
                    continue
                if isinstance(event, TextChunk):
                    self.note_output()
                    if aligner is not None and event.logprobs:
                        aligner.add(event.logprobs)
                    for out in parser.feed(event.text):
                        yield _aligned(out, aligner)
                    continue
                for out in parser.finish():
                    yield _aligned(out, aligner)
                if aligner is not None and (rest := aligner.flush()):
                    yield TextDelta(text="", logprobs=rest)
                yield self._done(event, parser.tool_calls)
        finally:  # the consumer went away (or we are done): free the engine sequence now
            self.cancel()

    def cancel(self) -> None:
        """End generation and free the engine sequence (a no-op once finished)."""
        self._stream.cancel()

    async def _engine_events(self) -> AsyncIterator[EngineEvent]:
        if self._early is not None:
            yield self._early
        async for event in self._stream:
            yield event

    def _done(self, fin: Finished, tool_calls: int) -> Done:
        if fin.reason in ("error", "cancelled"):
            raise GenerationFailed(fin.error or f"generation {fin.reason}")
        reason = _REASONS[fin.reason]
        stop_sequence = fin.stop_sequence
        if reason == "stop_sequence" and stop_sequence not in self.user_stops:
            reason, stop_sequence = "end_turn", None  # a format's own stop string, not the user's
        if tool_calls and reason in ("end_turn", "stop_sequence"):
            reason, stop_sequence = "tool_use", None
        usage = Usage(
            input_tokens=fin.prompt_tokens,
            output_tokens=fin.generated_tokens,
            cached_tokens=fin.cached_tokens,
            spec_proposed_tokens=fin.spec_proposed,
            spec_accepted_tokens=fin.spec_accepted,
        )
        return Done(stop_reason=reason, usage=usage, stop_sequence=stop_sequence)


def _aligned(event: GenerationEvent, aligner: LogprobAligner | None) -> GenerationEvent:
    if aligner is not None:
        if isinstance(event, TextDelta):
            event.logprobs = aligner.take(event.text)
        elif isinstance(event, ThinkingDelta):
            aligner.skip(event.text)
    return event


class ChatSession:
    """Chat generation for one loaded model.

    `engine` is the model's engine client: it tokenizes (`engine.vocab`), holds the model while a
    request prepares (so an unload waits for it), and generates (`submit`).

    Message content is tokenized as plain text (chat/plaintext.py). `grammar_timeout` bounds rendering
    plus grammar compilation (set from `--grammar-timeout`); past it the request is a 400 `schema too
    complex`. That work runs on a thread of the server process, never on the engine's."""

    grammar_timeout: float = 10.0

    def __init__(
        self,
        engine: EngineClient,
        formatter: ChatFormatter,
        sampling_defaults: Callable[[], SamplingParams] | None = None,
    ) -> None:
        self.engine = engine
        self.formatter = formatter
        self.sampling_defaults = sampling_defaults
        self._guard: ContentGuard | None = None

    @property
    def guard(self) -> ContentGuard:
        if self._guard is None:
            self._guard = ContentGuard(self.engine.vocab.control_texts())
        return self._guard

    def effective_sampling(self, requested: SamplingParams) -> SamplingParams:
        """The request's sampling fields, the unset ones from the model's defaults."""
        defaults = self.sampling_defaults() if self.sampling_defaults else None
        sampling = requested.resolved(defaults)
        log.debug("sampling: %s (request set %s)", sampling.as_dict(), requested.explicit() or "nothing")
        return sampling

    def _tokenize(self, req: ChatRequest) -> tuple[RenderedPrompt, list[int]]:
        """Render and tokenize; message content is plain text (see chat/plaintext.py)."""
        safe, swapped = self.guard.protect(req)
        rendered = self.formatter.render(safe)
        if rendered.grammar:
            error = LLMatcher.validate_grammar(rendered.grammar)
            if error:
                raise InvalidRequest(f"schema too complex or invalid: {error}")
        tokens = self.guard.tokenize(rendered.text, swapped, self.engine.vocab.tokenize)
        if swapped:
            rendered.text = self.guard.restore(rendered.text, swapped)
        return rendered, tokens

    async def _render(self, req: ChatRequest) -> tuple[RenderedPrompt, list[int]]:
        work = asyncio.ensure_future(asyncio.to_thread(self._tokenize, req))
        try:
            return await asyncio.wait_for(asyncio.shield(work), self.grammar_timeout)
        except TimeoutError:
            work.add_done_callback(lambda f: f.cancelled() or f.exception())  # finish unobserved
            raise InvalidRequest(
                f"schema too complex: preparing the prompt and its output grammar took more than "
                f"{self.grammar_timeout:g} s (see --grammar-timeout)"
            ) from None

    async def count_tokens(self, req: ChatRequest) -> int:
        _, tokens = await self._render(req)
        return len(tokens)

    async def prepare(self, req: ChatRequest) -> PreparedChat:
        with self.engine.hold():
            return await self._prepare(req)

    async def _prepare(self, req: ChatRequest) -> PreparedChat:
        rendered, tokens = await self._render(req)
        sampling = self.effective_sampling(req.sampling)
        stream = await self.engine.submit(
            EngineRequest(
                prompt=tokens,
                max_tokens=req.max_tokens,
                sampling=sampling,
                stop=list(req.stop) + list(rendered.stop),
                grammar=rendered.grammar,
                logprobs=req.logprobs,
                priority=req.priority,
            )
        )
        return EngineChat(
            input_tokens=len(tokens),
            rendered=rendered,
            user_stops=req.stop,
            _stream=stream,
            logprobs=req.logprobs is not None,
            sampling=sampling,
        )

    async def prepare_raw(
        self,
        prompt: str | list[int],
        max_tokens: int,
        sampling: SamplingParams,
        stop: list[str],
        logprobs: int | None = None,
    ) -> PreparedChat:
        """Continue a prompt as-is, without the chat template (OpenAI /v1/completions).

        Text gets the vocabulary's BOS as llama-server's /completion does; token ids pass through."""
        with self.engine.hold():
            return await self._prepare_raw(prompt, max_tokens, sampling, stop, logprobs)

    async def _prepare_raw(
        self,
        prompt: str | list[int],
        max_tokens: int,
        sampling: SamplingParams,
        stop: list[str],
        logprobs: int | None,
    ) -> PreparedChat:
        if isinstance(prompt, str):
            tokens = await asyncio.to_thread(self.engine.vocab.tokenize, prompt, add_special=True)
        else:
            tokens = list(prompt)
            if any(not 0 <= t < self.engine.vocab.n_vocab for t in tokens):
                raise InvalidRequest("prompt: token id outside the model's vocabulary", param="prompt")
        if not tokens:
            raise InvalidRequest("prompt: must not be empty", param="prompt")
        sampling = self.effective_sampling(sampling)
        stream = await self.engine.submit(
            EngineRequest(
                prompt=tokens, max_tokens=max_tokens, sampling=sampling, stop=list(stop), logprobs=logprobs
            )
        )
        text = prompt if isinstance(prompt, str) else ""
        plain = RenderedPrompt(text, None, [], False, lambda: OutputParser(ParserSpec()))
        return EngineChat(
            input_tokens=len(tokens),
            rendered=plain,
            user_stops=stop,
            _stream=stream,
            sampling=sampling,
            logprobs=logprobs is not None,
        )
