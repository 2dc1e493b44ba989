"""POST /v1/completions: raw prompts continued without the chat template (the legacy OpenAI API).

Several prompts give several choices; they run one after another, each a contiguous run of events.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from openai.types import Completion, CompletionChoice
from openai.types.completion_choice import Logprobs

from lmdock.api.limits import check_stops, limits_of
from lmdock.api.openai.convert import (
    TextOrTokens,
    check_unsupported,
    logprobs_of,
    sampling_of,
    text_or_token_items,
)
from lmdock.api.openai.encode import FINISH_REASONS, FinishReason, new_id, wire_usage
from lmdock.api.openai.schema import CompletionParams
from lmdock.api.openai.shared import model_for, read_json, sse_response, stream_frames
from lmdock.api.request_log import note_sampling, note_usage
from lmdock.api.validation import validate_body
from lmdock.chat.session import PreparedChat
from lmdock.core import events as ev
from lmdock.core.errors import InvalidRequest
from lmdock.http.streaming import unless_disconnected

router = APIRouter()

DEFAULT_MAX_TOKENS = 16  # OpenAI's documented default for this endpoint


class _Encoder:
    """Accumulates the choices of one request; `feed()` also returns the chunks to stream."""

    def __init__(
        self, model: str, n_prompts: int, *, echo: bool, include_usage: bool, logprobs: bool = False
    ) -> None:
        self.id = new_id("cmpl-")
        self.created = int(time.time())
        self.model = model
        self.echo = echo
        self.include_usage = include_usage
        self.texts: list[list[str]] = [[] for _ in range(n_prompts)]
        self.logprobs: list[Logprobs] | None = (
            [
                Logprobs(tokens=[], token_logprobs=[], top_logprobs=[], text_offset=[])
                for _ in range(n_prompts)
            ]
            if logprobs
            else None
        )
        self.finish: list[FinishReason] = []
        self.usage = ev.Usage()
        self._echo_pending: str | None = None
        self.current: PreparedChat | None = None  # the prompt generating now

    def cancel(self) -> None:
        """End the generation under way (the client left, or the response ended)."""
        if self.current is not None:
            self.current.cancel()

    def begin(self, prepared: PreparedChat) -> None:
        """A new prompt's events follow; with `echo`, its text opens the choice."""
        if self.echo:
            self._echo_pending = prepared.rendered.text
            self.texts[len(self.finish)].append(prepared.rendered.text)

    def feed(self, event: ev.GenerationEvent) -> list[Completion]:
        index = len(self.finish)
        out = []
        if self._echo_pending is not None:
            out.append(self._chunk(index, self._echo_pending))
            self._echo_pending = None
        if isinstance(event, ev.TextDelta) and (event.text or event.logprobs):
            self.texts[index].append(event.text)
            out.append(self._chunk(index, event.text, logprobs=self._logprobs(index, event)))
        elif isinstance(event, ev.Done):
            self.usage.add(event.usage)
            self.finish.append(FINISH_REASONS[event.stop_reason])
            out.append(self._chunk(index, "", self.finish[-1]))
            if len(self.finish) == len(self.texts) and self.include_usage:
                out.append(self._completion([], usage=wire_usage(self.usage)))
        return out

    def _logprobs(self, index: int, event: ev.TextDelta) -> Logprobs | None:
        """The legacy shape for this delta's tokens (also added to the choice's running total). The
        tokens concatenate to the text, so a token's offset is the length of the tokens before it."""
        if self.logprobs is None:
            return None
        entries = event.logprobs or []
        total = self.logprobs[index]
        offset = total.text_offset[-1] + len(total.tokens[-1]) if total.tokens and total.text_offset else 0
        offsets = []
        for e in entries:
            offsets.append(offset)
            offset += len(e.token)
        delta = Logprobs(
            tokens=[e.token for e in entries],
            token_logprobs=[e.logprob for e in entries],
            top_logprobs=[dict(e.top) for e in entries],
            text_offset=offsets,
        )
        for name in ("tokens", "token_logprobs", "top_logprobs", "text_offset"):
            getattr(total, name).extend(getattr(delta, name))
        return delta

    def _chunk(
        self,
        index: int,
        text: str,
        finish_reason: FinishReason | None = None,
        logprobs: Logprobs | None = None,
    ) -> Completion:
        # unvalidated: a stream chunk carries `finish_reason: null`, which the type does not allow
        choice = CompletionChoice.model_construct(
            index=index, text=text, finish_reason=finish_reason, logprobs=logprobs
        )
        return self._completion([choice])

    def _completion(self, choices: list[CompletionChoice], **extra) -> Completion:
        return Completion.model_construct(
            id=self.id,
            object="text_completion",
            created=self.created,
            model=self.model,
            choices=choices,
            **extra,
        )

    def completion(self) -> Completion:
        """The whole answer, after every prompt's Done."""
        choices = [
            CompletionChoice(
                index=i,
                text="".join(text),
                finish_reason="length" if finish == "length" else "stop",  # the legacy API has no tools
                logprobs=self.logprobs[i] if self.logprobs is not None else None,
            )
            for i, (text, finish) in enumerate(zip(self.texts, self.finish, strict=True))
        ]
        return Completion(
            id=self.id,
            object="text_completion",
            created=self.created,
            model=self.model,
            choices=choices,
            usage=wire_usage(self.usage),
        )


async def _events(
    first: PreparedChat,
    rest: list[TextOrTokens],
    prepare: Callable[[TextOrTokens], Awaitable[PreparedChat]],
    encoder: _Encoder,
) -> AsyncIterator[ev.GenerationEvent]:
    """Every prompt's events in turn; a later prompt is admitted once the one before it is done."""
    for item in [first, *rest]:
        prepared = item if isinstance(item, PreparedChat) else await prepare(item)
        encoder.current = prepared
        encoder.begin(prepared)
        async for event in prepared.events():
            yield event


@router.post("/v1/completions")
async def create_completion(request: Request):
    params = validate_body(CompletionParams, await read_json(request))
    check_unsupported(params)
    check_stops(params.stops, limits_of(request), "stop")
    logprobs = logprobs_of(params)
    if logprobs is not None and params.echo:
        raise InvalidRequest("logprobs: not supported together with echo", param="logprobs")
    prompts = text_or_token_items(params.prompt, "prompt")
    model = await model_for(request, params.model, params.ttl)
    sampling = sampling_of(params)

    async def prepare(prompt: TextOrTokens) -> PreparedChat:
        max_tokens = params.max_tokens or DEFAULT_MAX_TOKENS
        return await model.session.prepare_raw(prompt, max_tokens, sampling, params.stops, logprobs)

    first = await prepare(prompts[0])  # a bad (first) prompt is still a plain 400
    note_sampling(request, first.sampling)
    encoder = _Encoder(
        params.model,
        len(prompts),
        echo=params.echo,
        include_usage=params.include_usage,
        logprobs=logprobs is not None,
    )
    encoder.current = first
    events = _events(first, prompts[1:], prepare, encoder)
    if params.stream:
        return sse_response(
            stream_frames(request, model.key, events, encoder.feed, usage=lambda: encoder.usage),
            on_close=encoder.cancel,
        )

    async def run() -> dict:
        async for event in events:
            encoder.feed(event)
        return encoder.completion().model_dump(mode="json", exclude_unset=True)

    try:
        result = await unless_disconnected(request, run)
    finally:
        encoder.cancel()
    note_usage(request, model.key, encoder.usage)
    return JSONResponse(result)
