"""Core ChatRequest -> an OpenAI chat/completions body, and the upstream's streamed chunks -> core events.

The body is the one every OpenAI-compatible engine accepts. Two of them are weak on `tool_choice`
(llama-server loses the tool name and ignores `none`), so for `openai` upstreams a named tool is sent as
the only tool with `required`, and `none` sends no tools at all; an `lmdock` upstream gets the exact form.
Sampling values a client set are passed on; the rest are left to the upstream's own defaults.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from lmdock.chat.calls import coerce_arguments, new_tool_id
from lmdock.chat.messages import template_messages, template_tools
from lmdock.chat.parser import OutputParser, ParserSpec
from lmdock.core.events import (
    Done,
    GenerationEvent,
    StopReason,
    TextDelta,
    ThinkingDelta,
    ToolCallArgsDelta,
    ToolCallEnd,
    ToolCallStart,
    Usage,
)
from lmdock.core.request import ChatRequest, SamplingParams
from lmdock.engine.detokenizer import StopMatcher

_THINK = ("<think>", "</think>")


def explicit_sampling(sampling: SamplingParams) -> dict[str, Any]:
    """The sampling values the client set, for the upstream; unset ones are left to its own defaults."""
    out = {k: v for k, v in sampling.explicit().items() if v is not None}
    if "repeat_penalty" in out:  # llama-server and vLLM call it this
        out["repetition_penalty"] = out.pop("repeat_penalty")
    out.pop("penalty_last_n", None)
    return out


def chat_messages(req: ChatRequest) -> list[dict[str, Any]]:
    """Messages in OpenAI's wire form (arguments as JSON strings, reasoning in `reasoning_content`)."""
    out = []
    for msg in template_messages(req.messages):
        msg.pop("thinking", None)
        for call in msg.get("tool_calls", []):
            call["function"]["arguments"] = json.dumps(call["function"]["arguments"], ensure_ascii=False)
        if msg["role"] == "tool":
            msg.pop("name", None)
        out.append(msg)
    return out


def chat_body(req: ChatRequest, model: str, *, exact_tool_choice: bool, max_tokens: int | None) -> dict:
    body: dict[str, Any] = {
        "model": model,
        "messages": chat_messages(req),
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if max_tokens:
        body["max_tokens"] = max_tokens
    tools = req.tools
    choice = req.tool_choice
    if tools and choice.mode == "tool" and not exact_tool_choice:
        tools = [t for t in tools if t.name == choice.name]
    if tools and (choice.mode != "none" or exact_tool_choice):
        body["tools"] = template_tools(tools)
        if choice.mode == "any" or (choice.mode == "tool" and not exact_tool_choice):
            body["tool_choice"] = "required"
        elif choice.mode == "tool":
            body["tool_choice"] = {"type": "function", "function": {"name": choice.name}}
        else:
            body["tool_choice"] = choice.mode
        if not choice.parallel:
            body["parallel_tool_calls"] = False
    if req.response_schema is not None:
        body["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "output", "schema": req.response_schema, "strict": True},
        }
    if req.messages and req.messages[-1].role == "assistant" and not req.messages[-1].tool_calls:
        body["continue_final_message"] = True  # vLLM / SGLang; llama-server continues it by itself
        body["add_generation_prompt"] = False
    if req.thinking.enabled is not None:
        body["chat_template_kwargs"] = {"enable_thinking": req.thinking.enabled}
    if req.thinking.effort:
        body["reasoning_effort"] = req.thinking.effort
    body.update(explicit_sampling(req.sampling))
    return body


@dataclass
class StreamResult:
    """What the end of an upstream stream said."""

    finish_reason: str | None = None
    usage: Usage = field(default_factory=Usage)
    usage_seen: bool = False
    chunks: int = 0


def read_usage(chunk: dict[str, Any], result: StreamResult) -> None:
    usage = chunk.get("usage")
    if isinstance(usage, dict) and usage.get("prompt_tokens") is not None:
        result.usage_seen = True
        result.usage.input_tokens = int(usage.get("prompt_tokens") or 0)
        result.usage.output_tokens = int(usage.get("completion_tokens") or 0)
        details = usage.get("prompt_tokens_details") or {}
        if details.get("cached_tokens") is not None:
            result.usage.cached_tokens = int(details["cached_tokens"])
    timings = chunk.get("timings")  # llama-server
    if isinstance(timings, dict) and timings.get("cache_n") is not None and not result.usage.cached_tokens:
        result.usage.cached_tokens = int(timings["cache_n"])


class CallGate:
    """What lmdock's grammars guarantee for local models, applied to an upstream that does not constrain:
    once a tool call is complete only more calls may follow (one, without parallel calls); text after it
    ends the turn, as it would under the grammar."""

    def __init__(self, parallel: bool = True) -> None:
        self.parallel = parallel
        self.calls_done = 0
        self.cut = False

    def __call__(self, events: list[GenerationEvent]) -> list[GenerationEvent]:
        out: list[GenerationEvent] = []
        for e in events:
            if self.cut:
                break
            if self.calls_done and isinstance(e, TextDelta | ThinkingDelta):
                if isinstance(e, TextDelta) and not e.text.strip():
                    continue  # blanks between calls
                self.cut = True
                break
            if self.calls_done and not self.parallel and isinstance(e, ToolCallStart):
                self.cut = True
                break
            if isinstance(e, ToolCallEnd):
                self.calls_done += 1
            out.append(e)
        return out


class _Call:
    def __init__(self, index: int, name: str) -> None:
        self.index = index
        self.name = name
        self.args: list[str] = []


class ChatTranslator:
    """Upstream chat chunks -> core events with lmdock's guarantees: contiguous runs, Anthropic tool
    ids, client stop sequences applied here, and a bare JSON object naming a declared tool recovered as a
    call (as for local models)."""

    def __init__(self, tool_names: list[str], stops: list[str], parallel: bool = True) -> None:
        self.tool_names = tool_names
        self.stop = StopMatcher(stops)
        self.gate = CallGate(parallel)
        self.result = StreamResult()
        self._parser = self._new_parser()
        self._calls: dict[int, _Call] = {}
        self._open: _Call | None = None
        self._pending: dict[int, dict[str, Any]] = {}
        self.tool_calls = 0
        self._text_calls = 0

    def _new_parser(self) -> OutputParser:
        return OutputParser(ParserSpec(think=_THINK), self.tool_names)

    def _renumber(self, events: list[GenerationEvent]) -> list[GenerationEvent]:
        for e in events:
            if isinstance(e, ToolCallStart | ToolCallArgsDelta | ToolCallEnd):
                if isinstance(e, ToolCallStart):
                    self.tool_calls += 1
                e.index = self.tool_calls - 1
        return events

    def _close_call(self) -> list[GenerationEvent]:
        call, self._open = self._open, None
        if call is None:
            return []
        arguments = coerce_arguments("".join(call.args)) or {}
        return [ToolCallEnd(index=call.index, arguments=arguments)]

    def _flush_text(self) -> list[GenerationEvent]:
        out = self._renumber(self._parser.feed(self.stop.flush()) + self._parser.finish())
        self._parser = self._new_parser()
        return out

    @property
    def ended(self) -> bool:
        """Whether lmdock ended the turn (a client stop sequence, or text after a finished tool call)."""
        return self.stop.hit is not None or self.gate.cut

    def feed(self, chunk: dict[str, Any]) -> list[GenerationEvent]:
        read_usage(chunk, self.result)
        return self.gate(self._feed(chunk))

    def _feed(self, chunk: dict[str, Any]) -> list[GenerationEvent]:
        out: list[GenerationEvent] = []
        for choice in chunk.get("choices") or []:
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            reasoning = delta.get("reasoning_content") or delta.get("reasoning")
            if isinstance(reasoning, str) and reasoning:
                out += self._close_call()
                out.append(ThinkingDelta(reasoning))
            content = delta.get("content")
            if isinstance(content, str) and content:
                self.result.chunks += 1
                out += self._close_call()
                out += self._renumber(self._parser.feed(self.stop.feed(content)))
            for tc in delta.get("tool_calls") or []:
                out += self._tool_delta(tc)
            if choice.get("finish_reason"):
                self.result.finish_reason = choice["finish_reason"]
        return out

    def _tool_delta(self, tc: dict[str, Any]) -> list[GenerationEvent]:
        index = tc.get("index", 0)
        fn = tc.get("function") or {}
        out: list[GenerationEvent] = []
        call = self._calls.get(index)
        if call is None:
            pending = self._pending.setdefault(index, {"name": "", "args": []})
            if fn.get("name"):
                pending["name"] += fn["name"]
            if fn.get("arguments"):
                pending["args"].append(fn["arguments"])
            if not pending["name"]:
                return out
            out += self._flush_text() + self._close_call()
            self._pending.pop(index)
            call = self._calls[index] = _Call(self.tool_calls, pending["name"])
            self.tool_calls += 1
            self._open = call
            out.append(ToolCallStart(index=call.index, id=new_tool_id(), name=call.name))
            for piece in pending["args"]:
                call.args.append(piece)
                out.append(ToolCallArgsDelta(index=call.index, json=piece))
            return out
        if fn.get("arguments") and call is self._open:
            call.args.append(fn["arguments"])
            out.append(ToolCallArgsDelta(index=call.index, json=fn["arguments"]))
        return out

    def finish(self, clamped: bool = False) -> list[GenerationEvent]:
        """The events after the upstream's last chunk (or after a client stop sequence cut it short)."""
        out: list[GenerationEvent] = []
        if not self.gate.cut:
            if self.stop.hit is None:
                out += self._parser.feed(self.stop.flush())
            out = self.gate(self._renumber(out + self._parser.finish()) + self._close_call())
        usage = self.result.usage
        if not self.result.usage_seen:
            usage.output_tokens = self.result.chunks + self.tool_calls
        reason: StopReason
        stop_sequence = None
        if self.gate.cut:
            reason = "tool_use"
        elif self.stop.hit is not None:
            reason, stop_sequence = "stop_sequence", self.stop.hit
        elif self.result.finish_reason == "length":
            reason = "context_window" if clamped else "max_tokens"
        else:
            reason = "end_turn"
        if self.tool_calls and reason in ("end_turn", "stop_sequence"):
            reason, stop_sequence = "tool_use", None
        out.append(Done(stop_reason=reason, usage=usage, stop_sequence=stop_sequence))
        return out


async def translate(
    chunks: AsyncIterator[dict[str, Any]], translator: ChatTranslator, clamped: bool = False
) -> AsyncIterator[GenerationEvent]:
    async for chunk in chunks:
        for event in translator.feed(chunk):
            yield event
        if translator.ended:
            break
    for event in translator.finish(clamped):
        yield event
