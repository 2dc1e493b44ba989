"""Tool calls found in model output: ids, normalising the JSON shapes models use, and their events."""

from __future__ import annotations

import json
import secrets
import string
from collections.abc import Iterable
from typing import Any, NamedTuple

from lmdock.chat.jsonutil import repair_json
from lmdock.core.events import GenerationEvent, ToolCallArgsDelta, ToolCallEnd, ToolCallStart

_BASE62 = string.digits + string.ascii_letters
_ARGS_CHUNK = 256  # a long argument string streams as a few deltas rather than one huge one


class RawCall(NamedTuple):
    name: str
    arguments: dict[str, Any]


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
