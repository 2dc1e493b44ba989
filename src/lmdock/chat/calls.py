"""Tool calls found in model output: ids, normalising the JSON shapes models use, and their events."""

from __future__ import annotations

import json
import re
import secrets
import string
from collections.abc import Iterable
from typing import Any, NamedTuple

from lmdock.chat.jsonutil import JsonPrefix, repair_json
from lmdock.core.events import GenerationEvent, ToolCallArgsDelta, ToolCallEnd, ToolCallStart

_BASE62 = string.digits + string.ascii_letters
_ARGS_CHUNK = 256  # a long argument string streams as a few deltas rather than one huge one
# `{"name": "NAME", "arguments": {` (or "parameters"), as grammars write a call: the name comes first.
_CALL_HEAD = re.compile(
    r'\s*\{\s*"name"\s*:\s*("(?:[^"\\]|\\.)*")\s*,\s*"(?:arguments|parameters)"\s*:\s*(?=\{)'
)
_HEAD_LIMIT = 512  # a call object whose arguments have not begun by here is read whole


class RawCall(NamedTuple):
    name: str
    arguments: dict[str, Any]


class CallHead(NamedTuple):
    """A call whose name is known and whose arguments object begins at `args_at` of the text read."""

    name: str
    args_at: int


def call_head(text: str, at: int = 0) -> CallHead | None:
    """The head of a `{"name": .., "arguments": {..}}` object starting at `at`, once it has been written."""
    m = _CALL_HEAD.match(text, at, at + _HEAD_LIMIT)
    return None if m is None else CallHead(json.loads(m.group(1)), m.end())


def new_tool_id() -> str:
    """A fresh Anthropic-style tool-use id."""
    return "toolu_" + "".join(secrets.choice(_BASE62) for _ in range(24))


def coerce_arguments(value: Any) -> dict[str, Any] | None:
    """Arguments as an object: models sometimes send them as a JSON string, or omit them."""
    if value is None:
        return {}
    if isinstance(value, str):
        try:
            value = repair_json(value) if value.strip() else {}
        except ValueError:
            return None
    return value if isinstance(value, dict) else None


def call_from_object(obj: Any, arg_keys: tuple[str, ...] = ("arguments", "parameters")) -> RawCall | None:
    """Read `{"name", "arguments"|"parameters"}`, also OpenAI's `{"function": {...}}` nesting."""
    if not isinstance(obj, dict):
        return None
    if isinstance(obj.get("function"), dict):
        obj = obj["function"]
    name = obj.get("name")
    if not isinstance(name, str) or not name:
        return None
    args = next((obj[k] for k in arg_keys if k in obj), None)
    arguments = coerce_arguments(args)
    return None if arguments is None else RawCall(name, arguments)


def calls_from_value(
    value: Any, arg_keys: tuple[str, ...] = ("arguments", "parameters")
) -> list[RawCall] | None:
    """One call object or a list of them; None if any element is not a call."""
    items = value if isinstance(value, list) else [value]
    calls = [call_from_object(item, arg_keys) for item in items]
    if not calls or any(c is None for c in calls):
        return None
    return [c for c in calls if c is not None]


def calls_from_text(
    text: str, arg_keys: tuple[str, ...] = ("arguments", "parameters")
) -> list[RawCall] | None:
    """Like calls_from_value, on JSON text that may be truncated or sloppy."""
    try:
        value = repair_json(text)
    except ValueError:
        return None
    return calls_from_value(value, arg_keys)


def call_events(index: int, call: RawCall) -> Iterable[GenerationEvent]:
    """Start, argument deltas that concatenate to json.dumps(arguments), then End."""
    yield ToolCallStart(index=index, id=new_tool_id(), name=call.name)
    text = json.dumps(call.arguments)
    for at in range(0, len(text), _ARGS_CHUNK):
        yield ToolCallArgsDelta(index=index, json=text[at : at + _ARGS_CHUNK])
    yield ToolCallEnd(index=index, arguments=call.arguments)


class StreamedCall:
    """A call sent on while the model writes it: Start once its name is known, the arguments' own text
    as it arrives, End when they are complete (or closed where they were cut short)."""

    def __init__(self, index: int, head: CallHead) -> None:
        self.index = index
        self._head = head
        self._read = head.args_at
        self._json = JsonPrefix()
        self._sent: list[str] = []

    def start(self) -> list[GenerationEvent]:
        return [ToolCallStart(index=self.index, id=new_tool_id(), name=self._head.name)]

    def feed(self, text: str) -> list[GenerationEvent]:
        """Arguments text released since the last call; `text` is all that was read (it only grows)."""
        piece = self._json.feed(text[self._read :])
        self._read = len(text)
        return self._send(piece)

    def end(self) -> list[GenerationEvent]:
        """Close the arguments if the output stopped inside them; then End with their value."""
        out = [] if self._json.done else self._send(self._json.closing)
        arguments = json.loads("".join(self._sent))
        return [*out, ToolCallEnd(index=self.index, arguments=arguments)]

    def _send(self, piece: str) -> list[GenerationEvent]:
        if not piece:
            return []
        self._sent.append(piece)
        return [ToolCallArgsDelta(index=self.index, json=piece)]
