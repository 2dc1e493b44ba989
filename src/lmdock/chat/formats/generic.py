"""Templates without a known tool format: tools are described in the system prompt and the model answers
with one JSON object, `{"tool_calls": [{"name": .., "arguments": {..}}]}` or `{"response": ".."}`."""

from __future__ import annotations

import json
import re
from collections.abc import Collection
from typing import Any

from lmdock.chat.calls import RawCall
from lmdock.chat.formats.base import ChatFormat
from lmdock.chat.grammar import WS, CallSyntax, GrammarBuilder
from lmdock.chat.parser import OutputParser, ParserSpec
from lmdock.core.events import GenerationEvent, TextDelta
from lmdock.core.request import Tool

_RESPONSE_OPEN = re.compile(r'\{\s*"response"\s*:\s*"')
_STRING_BODY = re.compile(r'(?:[^"\\]|\\.)*')
# An escape cut short, or a UTF-16 high surrogate whose pair has not arrived yet.
_UNFINISHED_ESCAPE = re.compile(
    r"(?:\\u[dD][89abAB][0-9a-fA-F]{2}(?:\\(?:u[0-9a-fA-F]{0,3})?)?|\\(?:u[0-9a-fA-F]{0,3})?)\Z"
)
_JSON_STRING = r'/"(\\([\"\\\/bfnrt]|u[a-fA-F0-9]{4})|[^\"\\\x00-\x1F\x7F])*"/'

INSTRUCTIONS = (
    "You can call the following tools. Each is given with the JSON Schema of its arguments:\n{tools}\n\n"
    "Respond with exactly one JSON object and nothing else: either "
    '{{"tool_calls": [{{"name": "<tool name>", "arguments": {{<arguments>}}}}]}} to call one or more tools, '
    'or {{"response": "<your answer>"}} to answer directly.'
)


class GenericParser(OutputParser):
    """Unwraps the JSON envelope: streams a `response` string as text, reads `tool_call(s)` as calls."""

    def _step(self, final: bool, out: list[GenerationEvent]) -> bool:
        if self._mode == "response":
            return self._step_response(final, out)
        if self._mode == "bare":
            m = _RESPONSE_OPEN.match(self._buf, self._bare_at)
            if m:
                self._buf, self._mode, self._strip = self._buf[m.end() :], "response", True
                return True
        return super()._step(final, out)

    def _step_response(self, final: bool, out: list[GenerationEvent]) -> bool:
        body = _STRING_BODY.match(self._buf)
        assert body is not None  # the pattern matches the empty string
        end = body.end()
        closed = end < len(self._buf) and self._buf[end] == '"'
        if not closed and not final:
            unfinished = _UNFINISHED_ESCAPE.search(self._buf, 0, end)
            end = unfinished.start() if unfinished else end
        self._emit(out, TextDelta, _decode_string(self._buf[:end]))
        if not closed:
            self._buf = "" if final else self._buf[end:]
            return False
        self._buf = self._buf[end + 1 :]
        self._resume()
        self._skip = "}"
        return True

    def _bare_calls(self, value: Any) -> list[RawCall] | None:
        if isinstance(value, dict) and ("tool_calls" in value or "tool_call" in value):
            value = value.get("tool_calls", value.get("tool_call"))
        return super()._bare_calls(value)


class GenericFormat(ChatFormat):
    name = "generic"

    def __init__(self, source: str, instruct: bool = True) -> None:
        super().__init__(source)
        self.instruct = instruct

    def prepare(self, messages: list[dict[str, Any]], tools: list[Tool]) -> list[dict[str, Any]]:
        """Describe the tools in the system prompt; write earlier calls and results as plain JSON text."""
        if not tools or not self.instruct:
            return messages
        listing = json.dumps(
            [{"name": t.name, "description": t.description, "parameters": t.parameters} for t in tools],
            ensure_ascii=False,
        )
        note = INSTRUCTIONS.format(tools=listing)
        out = [_plain(m) for m in messages]
        if out and out[0]["role"] == "system":
            out[0] = {**out[0], "content": out[0]["content"] + "\n\n" + note}
        else:
            out.insert(0, {"role": "system", "content": note})
        return out

    def parser_spec(self) -> ParserSpec:
        openers = ('{"name"', '{"type"', '{"function"', '{"tool_call', '{"response"')
        return ParserSpec(think=self.think, bare_openers=openers)

    def new_parser(self, tool_names: Collection[str], thinking_open: bool) -> OutputParser:
        return GenericParser(self.parser_spec(), tool_names, thinking_open)

    def calls(self, gb: GrammarBuilder, tools: list[Tool], parallel: bool) -> CallSyntax:
        items = gb.repeat(gb.call_object(tools), f'{WS}? "," {WS}?', parallel)
        envelope = f'"{{" {WS}? "\\"tool_calls\\"" {WS}? ":" {WS}? "[" {WS}? {items} {WS}? "]" {WS}? "}}"'
        return CallSyntax(None, gb.rule("tool_calls", envelope))

    def _auto(self, gb: GrammarBuilder, tools: list[Tool], parallel: bool) -> str | None:
        if not self.instruct:
            return None  # the template describes tools its own way: forcing our JSON would confuse the model
        string = gb.rule("JSON_STRING", _JSON_STRING)
        response = gb.rule("response", f'"{{" {WS}? "\\"response\\"" {WS}? ":" {WS}? {string} {WS}? "}}"')
        return f"({response} | {self.calls(gb, tools, parallel).rest})"


def _decode_string(body: str) -> str:
    """The text of a JSON string body (without quotes); raw if the model escaped it wrongly."""
    try:
        return json.loads('"' + body + '"')
    except ValueError:
        return body


def _plain(msg: dict[str, Any]) -> dict[str, Any]:
    """A tool call or tool result as text for a template that knows neither."""
    if msg["role"] == "tool":
        result = {"tool_call_id": msg.get("tool_call_id"), "name": msg.get("name"), "content": msg["content"]}
        return {"role": "user", "content": json.dumps({"tool_response": result}, ensure_ascii=False)}
    if msg["role"] == "assistant" and msg.get("tool_calls"):
        calls = [
            {"name": c["function"]["name"], "arguments": c["function"]["arguments"]}
            for c in msg["tool_calls"]
        ]
        text = json.dumps({"tool_calls": calls}, ensure_ascii=False)
        rest = {k: v for k, v in msg.items() if k != "tool_calls"}
        return {**rest, "content": (msg["content"] + "\n" if msg["content"] else "") + text}
    return msg
