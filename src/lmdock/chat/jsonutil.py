"""JSON helpers for model output: find where a streamed value ends, and repair truncated or sloppy JSON."""

from __future__ import annotations

import json
import re
from typing import Any

_DECODER = json.JSONDecoder()
_STRUCT = re.compile(r'["{}\[\]]')
_STRING_STOP = re.compile(r'["\\]')
_CLOSERS = {"{": "}", "[": "]"}
_LITERALS = ("true", "false", "null")
_PARTIAL_ESCAPE = re.compile(r"\\(u[0-9a-fA-F]{0,3})?$")


class JsonScanner:
    """Finds the end of a JSON object or array in a buffer that only grows, rescanning nothing.

    It tracks strings and nesting only; it does not validate. `invalid` is set when the first
    non-blank character cannot start an object or array.
    """

    def __init__(self, start: int = 0) -> None:
        self._pos = start
        self._depth = 0
        self._in_str = False
        self._started = False
        self.invalid = False
        self.end: int | None = None

    def scan(self, buf: str) -> int | None:
        """Index just past the value's last character once it is complete, else None."""
        while self.end is None and not self.invalid and self._pos < len(buf):
            if self._in_str:
                m = _STRING_STOP.search(buf, self._pos)
                if m is None:
                    self._pos = len(buf)
                elif m.group() == "\\":
                    if m.end() >= len(buf):
                        self._pos = m.start()  # wait for the escaped character
                        break
                    self._pos = m.end() + 1
                else:
                    self._in_str = False
                    self._pos = m.end()
            elif not self._started:
                stripped = len(buf) - len(buf[self._pos :].lstrip())
                if stripped >= len(buf):
                    self._pos = len(buf)
                    break
                self._pos = stripped
                self.invalid = buf[self._pos] not in "{["
                self._started = True
            else:
                m = _STRUCT.search(buf, self._pos)
                if m is None:
                    self._pos = len(buf)
                    break
                self._pos = m.end()
                ch = m.group()
                if ch == '"':
                    self._in_str = True
                elif ch in "{[":
                    self._depth += 1
                else:
                    self._depth -= 1
                    if self._depth == 0:
                        self.end = self._pos
        return self.end

    @property
    def in_string(self) -> bool:
        return self._in_str


def in_string_at(text: str, index: int) -> bool:
    """Whether `text[index]` lies inside a JSON string of the object/array that `text` starts."""
    scanner = JsonScanner()
    scanner.scan(text[:index])
    return scanner.in_string


def loads_prefix(text: str) -> Any:
    """Decode the first JSON value in `text`, ignoring anything after it; raises ValueError if none."""
    stripped = text.lstrip()
    value, _ = _DECODER.raw_decode(stripped)
    return value


def repair_json(text: str) -> Any:
    """Best-effort decode of truncated JSON: close strings and brackets, drop a dangling member.

    Raises ValueError when nothing sensible remains.
    """
    try:
        return loads_prefix(text)
    except ValueError:
        pass
    body = text.strip()
    if not body or body[0] not in "{[":
        raise ValueError("not a JSON object or array")
    for candidate in _repair_candidates(body):
        try:
            return json.loads(candidate)
        except ValueError:
            continue
    raise ValueError("cannot repair JSON")


def _repair_candidates(body: str) -> list[str]:
    """Completions to try, best first: the whole text closed, then cuts back at each member boundary."""
    stack: list[str] = []
    cuts: list[tuple[int, str]] = []
    in_str = False
    i = 0
    while i < len(body):
        ch = body[i]
        if in_str:
            if ch == "\\":
                i += 2
                continue
            in_str = ch != '"'
        elif ch == '"':
            in_str = True
        elif ch in "{[":
            stack.append(_CLOSERS[ch])
            cuts.append((i + 1, "".join(reversed(stack))))
        elif ch in "}]":
            if stack:
                stack.pop()
        elif ch == ",":
            cuts.append((i, "".join(reversed(stack))))
        i += 1
    tail = body if i == len(body) else body[:-1]  # drop an escape cut in half
    if in_str:
        tail = _PARTIAL_ESCAPE.sub("", tail) + '"'
    else:
        tail = _complete_literal(tail.rstrip().rstrip(",:").rstrip())
    full = tail + "".join(reversed(stack))
    return [full] + [body[:pos].rstrip() + closers for pos, closers in reversed(cuts)]


def _complete_literal(text: str) -> str:
    """Finish a literal cut short at the end (`tru` -> `true`) and drop a number's dangling sign or dot."""
    m = re.search(r"[A-Za-z]+$", text)
    if m:
        for lit in _LITERALS:
            if lit.startswith(m.group()):
                return text[: m.start()] + lit
    return text.rstrip("-+.eE") if re.search(r"[0-9][-+.eE]+$|-$", text) else text
