"""Core generation events -> Responses API objects: one Response, or its stream of typed events.

Both come from one accumulator, so the streamed events add up to exactly the JSON answer. Every object
is built (and so validated) from the `openai.types.responses` types. A stream is:
response.created, response.in_progress, then per output item output_item.added, its content part and
deltas, their .done events and output_item.done, then response.completed (or response.incomplete when
the output hit max_output_tokens; response.failed after an `error` event when generation fails).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from openai.types.responses import (
    Response,
    ResponseCompletedEvent,
    ResponseContentPartAddedEvent,
    ResponseContentPartDoneEvent,
    ResponseCreatedEvent,
    ResponseErrorEvent,
    ResponseFailedEvent,
    ResponseFunctionCallArgumentsDeltaEvent,
    ResponseFunctionCallArgumentsDoneEvent,
    ResponseFunctionToolCall,
    ResponseIncompleteEvent,
    ResponseInProgressEvent,
    ResponseOutputItemAddedEvent,
    ResponseOutputItemDoneEvent,
    ResponseOutputMessage,
    ResponseOutputText,
    ResponseReasoningItem,
    ResponseReasoningTextDeltaEvent,
    ResponseReasoningTextDoneEvent,
    ResponseTextDeltaEvent,
    ResponseTextDoneEvent,
    ResponseUsage,
)
from openai.types.responses import response_output_text as output_text
from openai.types.responses import response_text_delta_event as text_delta
from openai.types.responses import response_text_done_event as text_done
from openai.types.responses.response_content_part_added_event import PartReasoningText
from openai.types.responses.response_content_part_done_event import (
    PartReasoningText as DonePartReasoningText,
)
from openai.types.responses.response_output_message import Content as MessageContent
from openai.types.responses.response_reasoning_item import Content as ReasoningContent
from openai.types.responses.response_status import ResponseStatus
from openai.types.responses.response_usage import InputTokensDetails, OutputTokensDetails
from pydantic import BaseModel

from lmdock.api.openai.encode import new_id
from lmdock.core import events as ev
from lmdock.core.errors import LmdockError

ItemStatus = Literal["in_progress", "completed", "incomplete"]


@dataclass
class _Item:
    """One output item being built: a message, a reasoning item or a function call."""

    kind: str
    id: str
    text: list[str] = field(default_factory=list)
    logprobs: list[ev.TokenLogprob] = field(default_factory=list)
    call_id: str = ""
    name: str = ""
    arguments: str = ""
    namespace: str | None = None
    done: bool = False


def _wire_logprobs(entries: list[ev.TokenLogprob]) -> list[output_text.Logprob]:
    return [
        output_text.Logprob(
            token=e.token,
            bytes=list(e.token.encode()),
            logprob=e.logprob,
            top_logprobs=[
                output_text.LogprobTopLogprob(token=t, bytes=list(t.encode()), logprob=lp) for t, lp in e.top
            ],
        )
        for e in entries
    ]


def _delta_logprobs(entries: list[ev.TokenLogprob], types: Any = text_delta) -> list[Any]:
    """The events' logprob shape (`types`: the delta or the done event's module, same fields)."""
    return [
        types.Logprob(
            token=e.token,
            logprob=e.logprob,
            top_logprobs=[types.LogprobTopLogprob(token=t, logprob=lp) for t, lp in e.top],
        )
        for e in entries
    ]


class ResponseEncoder:
    """Accumulates one response; `feed()` also returns the stream events for each core event.

    `base` holds the request-derived fields every Response snapshot repeats (model, tools, tool_choice,
    instructions, sampling, metadata...)."""

    def __init__(
        self, base: dict[str, Any], *, logprobs: bool = False, namespaces: dict[str, str] | None = None
    ) -> None:
        self.id = new_id("resp_")
        self.namespaces = namespaces or {}  # function name -> the namespace tool it came in
        self.created_at = int(time.time())
        self.base = base
        self.logprobs = logprobs
        self.items: list[_Item] = []
        self.done: ev.Done | None = None
        self.final: Response | None = None  # the response the terminal event carries
        self.error: str | None = None
        self._seq = 0

    # --- events ------------------------------------------------------------------------------------

    def _event(self, cls: type[BaseModel], **fields: Any) -> BaseModel:
        event = cls(sequence_number=self._seq, **fields)
        self._seq += 1
        return event

    def _part_event(
        self, cls: type[BaseModel], kind: str, item: _Item, index: int, **fields: Any
    ) -> BaseModel:
        """An event about an item's one content part (every message and reasoning item has one, index 0)."""
        return self._event(cls, type=kind, item_id=item.id, output_index=index, content_index=0, **fields)

    def start_events(self) -> list[BaseModel]:
        snapshot = self.response("in_progress")
        return [
            self._event(ResponseCreatedEvent, type="response.created", response=snapshot),
            self._event(ResponseInProgressEvent, type="response.in_progress", response=snapshot),
        ]

    def feed(self, event: ev.GenerationEvent) -> list[BaseModel]:
        if isinstance(event, ev.TextDelta):
            return self._text(event)
        if isinstance(event, ev.ThinkingDelta):
            return self._thinking(event) if event.text else []
        if isinstance(event, ev.ToolCallStart):
            out = self._close()
            item = _Item("function_call", new_id("fc_"), call_id="call_" + event.id.removeprefix("toolu_"))
            item.name = event.name
            item.namespace = self.namespaces.get(event.name)
            self.items.append(item)
            added = self._wire(item, "in_progress")
            out.append(self._added(item, added))
            return out
        if isinstance(event, ev.ToolCallArgsDelta):
            item = self.items[-1]
            item.arguments += event.json
            return [
                self._event(
                    ResponseFunctionCallArgumentsDeltaEvent,
                    type="response.function_call_arguments.delta",
                    item_id=item.id,
                    output_index=len(self.items) - 1,
                    delta=event.json,
                )
            ]
        if isinstance(event, ev.ToolCallEnd):
            self.items[-1].arguments = json.dumps(event.arguments)  # what the deltas add up to
            return self._close()
        if isinstance(event, ev.Done):
            self.done = event
            out = self._close()
            status = self.status
            response = self.final = self.response(status)
            if status == "incomplete":
                out.append(
                    self._event(ResponseIncompleteEvent, type="response.incomplete", response=response)
                )
            else:
                out.append(self._event(ResponseCompletedEvent, type="response.completed", response=response))
            return out
        return []

    def fail(self, exc: BaseException) -> list[BaseModel]:
        """A failure after the stream started: an `error` event, then response.failed."""
        self.error = exc.message if isinstance(exc, LmdockError) else "Internal server error"
        out = [
            self._event(ResponseErrorEvent, type="error", code="server_error", message=self.error, param=None)
        ]
        out.append(self._event(ResponseFailedEvent, type="response.failed", response=self.response("failed")))
        return out

    def _text(self, event: ev.TextDelta) -> list[BaseModel]:
        out: list[BaseModel] = []
        entries = event.logprobs or []
        current = self.items[-1] if self.items and not self.items[-1].done else None
        if not event.text:
            # only logprob entries, for text already sent (a token is handed out once its text is)
            if current is None or current.kind != "message":
                last = next((i for i in reversed(self.items) if i.kind == "message"), None)
                if last is not None:
                    last.logprobs.extend(entries)
                return out
            if not entries:
                return out
        elif current is None or current.kind != "message":
            part = ResponseOutputText(
                type="output_text", text="", annotations=[], logprobs=[] if self.logprobs else None
            )
            current = self._open(out, _Item("message", new_id("msg_")), part)
        current.text.append(event.text)
        current.logprobs.extend(entries)
        out.append(
            self._part_event(
                ResponseTextDeltaEvent,
                "response.output_text.delta",
                current,
                len(self.items) - 1,
                delta=event.text,
                logprobs=_delta_logprobs(entries),
            )
        )
        return out

    def _thinking(self, event: ev.ThinkingDelta) -> list[BaseModel]:
        out: list[BaseModel] = []
        current = self.items[-1] if self.items and not self.items[-1].done else None
        if current is None or current.kind != "reasoning":
            part = PartReasoningText(type="reasoning_text", text="")
            current = self._open(out, _Item("reasoning", new_id("rs_")), part)
        current.text.append(event.text)
        out.append(
            self._part_event(
                ResponseReasoningTextDeltaEvent,
                "response.reasoning_text.delta",
                current,
                len(self.items) - 1,
                delta=event.text,
            )
        )
        return out

    def _open(self, out: list[BaseModel], item: _Item, part: BaseModel) -> _Item:
        """Close the current item, then start `item` with one empty content part (text or reasoning)."""
        out += self._close()
        self.items.append(item)
        out.append(self._added(item, self._wire(item, "in_progress")))
        out.append(
            self._part_event(
                ResponseContentPartAddedEvent,
                "response.content_part.added",
                item,
                len(self.items) - 1,
                part=part,
            )
        )
        return item

    def _added(self, item: _Item, wire: BaseModel) -> BaseModel:
        return self._event(
            ResponseOutputItemAddedEvent,
            type="response.output_item.added",
            output_index=len(self.items) - 1,
            item=wire,
        )

    def _close(self) -> list[BaseModel]:
        """Finish the open item, if any, with its .done events."""
        if not self.items or self.items[-1].done:
            return []
        item, index = self.items[-1], len(self.items) - 1
        item.done = True
        status = self._item_status
        out: list[BaseModel] = []
        if item.kind in ("message", "reasoning"):
            text = "".join(item.text)
            part: BaseModel
            if item.kind == "message":
                text_event = self._part_event(
                    ResponseTextDoneEvent,
                    "response.output_text.done",
                    item,
                    index,
                    text=text,
                    logprobs=_delta_logprobs(item.logprobs, text_done),
                )
                part = self._output_text(item)
            else:
                text_event = self._part_event(
                    ResponseReasoningTextDoneEvent,
                    "response.reasoning_text.done",
                    item,
                    index,
                    text=text,
                )
                part = DonePartReasoningText(type="reasoning_text", text=text)
            out.append(text_event)
            out.append(
                self._part_event(
                    ResponseContentPartDoneEvent,
                    "response.content_part.done",
                    item,
                    index,
                    part=part,
                )
            )
        else:
            out.append(
                self._event(
                    ResponseFunctionCallArgumentsDoneEvent,
                    type="response.function_call_arguments.done",
                    item_id=item.id,
                    output_index=index,
                    arguments=item.arguments,
                )
            )
        out.append(
            self._event(
                ResponseOutputItemDoneEvent,
                type="response.output_item.done",
                output_index=index,
                item=self._wire(item, status),
            )
        )
        return out

    # --- objects -----------------------------------------------------------------------------------

    @property
    def status(self) -> ResponseStatus:
        if self.error is not None:
            return "failed"
        if self.done is None:
            return "in_progress"
        return "incomplete" if self.done.stop_reason in ("max_tokens", "context_window") else "completed"

    @property
    def _item_status(self) -> ItemStatus:
        return "incomplete" if self.status == "incomplete" else "completed"

    def _output_text(self, item: _Item) -> ResponseOutputText:
        return ResponseOutputText(
            type="output_text",
            text="".join(item.text),
            annotations=[],
            logprobs=_wire_logprobs(item.logprobs) if self.logprobs else None,
        )

    def _wire(self, item: _Item, status: ItemStatus) -> BaseModel:
        if item.kind == "message":
            content: list[MessageContent] = [] if status == "in_progress" else [self._output_text(item)]
            return ResponseOutputMessage(
                type="message", id=item.id, role="assistant", status=status, content=content
            )
        if item.kind == "reasoning":
            text = "".join(item.text)
            reasoning = (
                [] if status == "in_progress" else [ReasoningContent(type="reasoning_text", text=text)]
            )
            return ResponseReasoningItem(
                type="reasoning", id=item.id, summary=[], content=reasoning, status=status
            )
        call = ResponseFunctionToolCall(
            type="function_call",
            id=item.id,
            call_id=item.call_id,
            name=item.name,
            arguments="" if status == "in_progress" else item.arguments,
            status=status,
        )
        if item.namespace:  # set only when there is one: the wire leaves unset fields out
            call.namespace = item.namespace
        return call

    def _usage(self) -> ResponseUsage | None:
        if self.done is None:
            return None
        u = self.done.usage
        return ResponseUsage(
            input_tokens=u.input_tokens,
            input_tokens_details=InputTokensDetails(cached_tokens=u.cached_tokens, cache_write_tokens=0),
            output_tokens=u.output_tokens,
            output_tokens_details=OutputTokensDetails(reasoning_tokens=0),
            total_tokens=u.input_tokens + u.output_tokens,
        )

    def response(self, status: ResponseStatus | None = None) -> Response:
        """A snapshot of the response (the final one once Done was fed)."""
        status = status or self.status
        fields: dict[str, Any] = dict(self.base)
        fields.update(
            id=self.id,
            object="response",
            created_at=self.created_at,
            status=status,
            output=[] if status == "in_progress" else [self._wire(i, self._item_status) for i in self.items],
            usage=self._usage(),
            error={"code": "server_error", "message": self.error} if self.error else None,
            incomplete_details={"reason": "max_output_tokens"} if status == "incomplete" else None,
        )
        if status in ("completed", "incomplete"):
            fields["completed_at"] = int(time.time())
        return Response(**fields)
