"""JSON decoding for untrusted text: bounded nesting and number size, no NaN/Infinity, no lone surrogates.

Every request body and every JSON string a client embeds (OpenAI `arguments`, a string `tool_use.input`)
goes through `loads`, so a hostile document is a client error (InvalidRequest) rather than a
RecursionError, a 4300-digit integer or a string that cannot be encoded as UTF-8 deeper in the server.

Lone UTF-16 surrogates (`"\\ud800"`) are replaced with U+FFFD rather than refused: JavaScript clients
produce them when they cut a long text at a string index (Claude Code truncates tool output that way),
and a 400 there would wedge the whole conversation on every retry. A lone surrogate is not a character,
so the replacement loses nothing a model could read.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from lmdock.core.errors import InvalidRequest

MAX_DEPTH = 128  # nesting levels of arrays/objects in one document
MAX_NUMBER_CHARS = 64  # digits (and sign, point, exponent) of one number literal

_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_SURROGATE_ESCAPE_STR = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")


class _Refused(ValueError):
    pass


def _parse_int(text: str) -> int:
    if len(text) > MAX_NUMBER_CHARS:
        raise _Refused(f"a number has more than {MAX_NUMBER_CHARS} digits")
    return int(text)


def _parse_float(text: str) -> float:
    if len(text) > MAX_NUMBER_CHARS:
        raise _Refused(f"a number has more than {MAX_NUMBER_CHARS} digits")
    value = float(text)
    if not math.isfinite(value):
        raise _Refused(f"number {text} is out of range")
    return value


def _parse_constant(name: str) -> Any:
    raise _Refused(f"{name} is not valid JSON")


_DECODER = json.JSONDecoder(parse_int=_parse_int, parse_float=_parse_float, parse_constant=_parse_constant)


def loads(data: bytes | str, *, what: str = "request body", max_depth: int = MAX_DEPTH) -> Any:
    """Decode `data`; raise InvalidRequest("<what>: <problem>") for anything but a sane JSON document.
    `what` is the field path of an embedded JSON string, or "request body"."""
    param = None if what == "request body" else what
    if isinstance(data, bytes):
        if not data.strip():
            raise InvalidRequest(f"{what}: empty, expected a JSON document", param=param)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidRequest(f"{what}: not valid UTF-8", param=param) from None
        may_have_surrogates = _SURROGATE_ESCAPE.search(data) is not None
    else:
        text = data
        if not text.strip():
            raise InvalidRequest(f"{what}: empty, expected a JSON document", param=param)
        may_have_surrogates = _SURROGATE_ESCAPE_STR.search(text) is not None or _SURROGATE.search(text)
    try:
        value = _DECODER.decode(text)
    except _Refused as exc:
        raise InvalidRequest(f"{what}: {exc}", param=param) from None
    except RecursionError:
        raise InvalidRequest(
            f"{what}: nested too deeply (more than {max_depth} levels)", param=param
        ) from None
    except ValueError as exc:
        raise InvalidRequest(f"{what}: not valid JSON ({exc})", param=param) from None
    if depth_of(value, max_depth) > max_depth:
        raise InvalidRequest(f"{what}: nested too deeply (more than {max_depth} levels)", param=param)
    if may_have_surrogates:
        value = replace_surrogates(value)
    return value


def depth_of(value: Any, limit: int) -> int:
    """Nesting depth of a decoded JSON value (a scalar is 0), counting no further than `limit + 1`."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        depth += 1
        if depth > deepest:
            deepest = depth
            if deepest > limit:
                return deepest
        stack.extend((child, depth) for child in children if isinstance(child, (dict, list)))
    return deepest


def replace_surrogates(value: Any) -> Any:
    """`value` with every lone surrogate in its strings (and object keys) replaced by U+FFFD."""
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value) if _SURROGATE.search(value) else value
    if isinstance(value, list):
        return [replace_surrogates(v) for v in value]
    if isinstance(value, dict):
        return {replace_surrogates(k): replace_surrogates(v) for k, v in value.items()}
    return value
