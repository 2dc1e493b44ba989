"""Core generation events -> Anthropic wire objects (one Message, or the SSE event sequence).

Both paths share one block state machine (`_Blocks`), so a streamed answer accumulates to exactly the
JSON answer. Wire objects are the `anthropic` package's own types, so the shape cannot drift.
"""

from __future__ import annotations

import json
import secrets
import string
from collections.abc import Iterator
from typing import Any

from anthropic.types import (
    InputJSONDelta,
    Message,
    MessageDeltaUsage,
    RawContentBlockDeltaEvent,
    RawContentBlockStartEvent,
    RawContentBlockStopEvent,
    RawMessageDeltaEvent,
    RawMessageStartEvent,
    RawMessageStopEvent,
    SignatureDelta,
    TextBlock,
    ThinkingBlock,
    ToolUseBlock,
    Usage,
)
from anthropic.types import StopReason as WireStopReason
from anthropic.types import TextDelta as WireTextDelta
from anthropic.types import ThinkingDelta as WireThinkingDelta
from anthropic.types.raw_message_delta_event import Delta as MessageDelta

from lmdock.api.anthropic.signature import sign_thinking
from lmdock.core import events as ev

_BASE62 = string.ascii_letters + string.digits
_STOP_REASONS: dict[ev.StopReason, WireStopReason] = {
    "end_turn": "end_turn",
    "max_tokens": "max_tokens",
    "stop_sequence": "stop_sequence",
    "tool_use": "tool_use",
    "context_window": "model_context_window_exceeded",
}


def new_id(prefix: str) -> str:
    return prefix + "01" + "".join(secrets.choice(_BASE62) for _ in range(22))


def wire_usage(usage: ev.Usage) -> Usage:
    """Anthropic counts `input_tokens` as the uncached part of the prompt."""
    return Usage(
        input_tokens=usage.input_tokens - usage.cached_tokens,
        output_tokens=usage.output_tokens,
        cache_read_input_tokens=usage.cached_tokens,
        cache_creation_input_tokens=0,
        service_tier="standard",
    )


class _Blocks:
    """Opens and closes content blocks in strict index order as events arrive."""

    def __init__(self) -> None:
        self.blocks: list[Any] = []
        self.open_kind: str | None = None
        self._thinking: list[str] = []

    def feed(self, event: ev.GenerationEvent) -> Iterator[Any]:
        """Yield the raw stream events for one core event (not for Done)."""
        if isinstance(event, ev.TextDelta):
            if not event.text:
                return
            if self.open_kind != "text":
                yield from self.close()
                yield self._start(TextBlock(type="text", text=""), "text")
            self.blocks[-1].text += event.text
            yield self._delta(WireTextDelta(type="text_delta", text=event.text))
        elif isinstance(event, ev.ThinkingDelta):
            if not event.text:
                return
            if self.open_kind != "thinking":
                yield from self.close()
                yield self._start(ThinkingBlock(type="thinking", thinking="", signature=""), "thinking")
            self.blocks[-1].thinking += event.text
            self._thinking.append(event.text)
            yield self._delta(WireThinkingDelta(type="thinking_delta", thinking=event.text))
        elif isinstance(event, ev.ToolCallStart):
            yield from self.close()
            yield self._start(
                ToolUseBlock(type="tool_use", id=event.id, name=event.name, input={}), "tool_use"
            )
        elif isinstance(event, ev.ToolCallArgsDelta):
            yield self._delta(InputJSONDelta(type="input_json_delta", partial_json=event.json))
        elif isinstance(event, ev.ToolCallEnd):
            if self.open_kind == "tool_use":
                self.blocks[-1].input = event.arguments
            yield from self.close()

    def close(self) -> Iterator[Any]:
        if self.open_kind is None:
            return
        if self.open_kind == "thinking":
            signature = sign_thinking("".join(self._thinking))
            self.blocks[-1].signature = signature
            yield self._delta(SignatureDelta(type="signature_delta", signature=signature))
        self._thinking = []
        self.open_kind = None
        yield RawContentBlockStopEvent(type="content_block_stop", index=len(self.blocks) - 1)

    def _start(self, block: Any, kind: str) -> RawContentBlockStartEvent:
        self.blocks.append(block)
        self.open_kind = kind
        return RawContentBlockStartEvent(
            type="content_block_start", index=len(self.blocks) - 1, content_block=block.model_copy()
        )

    def _delta(self, delta: Any) -> RawContentBlockDeltaEvent:
        return RawContentBlockDeltaEvent(type="content_block_delta", index=len(self.blocks) - 1, delta=delta)


class MessageEncoder:
    """Turns one generation's events into SSE events or a final Message."""

    def __init__(self, model: str) -> None:
        self.id = new_id("msg_")
        self.model = model
        self._blocks = _Blocks()
        self.done: ev.Done | None = None

    def start_event(self, usage: ev.Usage) -> RawMessageStartEvent:
        """`message_start`, sent once the prompt is admitted: its usage is the one `message_delta` ends
        with (uncached `input_tokens`, `cache_read_input_tokens`)."""
        message = Message(
            id=self.id,
            type="message",
            role="assistant",
            model=self.model,
            content=[],
            stop_reason=None,
            stop_sequence=None,
            usage=wire_usage(usage),
        )
        return RawMessageStartEvent(type="message_start", message=message)

    def feed(self, event: ev.GenerationEvent) -> Iterator[Any]:
        if isinstance(event, ev.Done):
            self.done = event
            yield from self._blocks.close()
            usage = wire_usage(event.usage)
            yield RawMessageDeltaEvent(
                type="message_delta",
                delta=MessageDelta(
                    stop_reason=_STOP_REASONS[event.stop_reason], stop_sequence=event.stop_sequence
                ),
                usage=MessageDeltaUsage(
                    output_tokens=usage.output_tokens,
                    input_tokens=usage.input_tokens,
                    cache_read_input_tokens=usage.cache_read_input_tokens,
                    cache_creation_input_tokens=0,
                ),
            )
            yield RawMessageStopEvent(type="message_stop")
        else:
            yield from self._blocks.feed(event)

    def message(self) -> Message:
        """The complete Message, after Done has been fed."""
        assert self.done is not None
        return Message(
            id=self.id,
            type="message",
            role="assistant",
            model=self.model,
            content=self._blocks.blocks,
            stop_reason=_STOP_REASONS[self.done.stop_reason],
            stop_sequence=self.done.stop_sequence,
            usage=wire_usage(self.done.usage),
        )


def sse(event: Any) -> str:
    """One SSE frame; the event name equals the payload's `type`, which the SDKs dispatch on."""
    data = event if isinstance(event, dict) else event.model_dump(mode="json")
    return f"event: {data['type']}\ndata: {json.dumps(data, separators=(',', ':'), ensure_ascii=False)}\n\n"
