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


_VALUE, _KEY, _COLON, _AFTER, _STRING, _ESCAPE, _UNICODE, _NUMBER, _LITERAL = range(9)
_STRING_RUN = re.compile(r'[^"\\\x00-\x1f]*')
_NUMBER_CHARS = frozenset("0123456789+-.eE")
_NUMBER_TEXT = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?")
_HEX = frozenset("0123456789abcdefABCDEF")
_BLANK = frozenset(" \t\r\n")
_ESCAPABLE = frozenset('"\\/bfnrt')


class JsonPrefix:
    """One JSON value read as it streams: what of it may be sent on, and how to close it if it stops.

    Strict JSON only (`failed` once the text is not). `feed` releases text up to the last point where
    appending `closing` gives a valid document (inside a string value, after a value, in an empty
    container), so a value cut short (max_tokens) still ends as valid JSON holding all that was sent.
    Text after the value's end is not read (`done`).
    """

    def __init__(self) -> None:
        self._closers = ""  # what closes the open containers, innermost first
        self._state = _VALUE
        self._empty = False  # just inside `{` or `[`: closing now is valid
        self._key = False  # the string being read is a member name
        self._token = ""  # a number, literal or \\u escape read so far
        self._held = ""  # text read but not yet released
        self.closing = ""  # appended to the released text, makes valid JSON
        self.done = False
        self.failed = False

    def feed(self, text: str) -> str:
        """Read more of the value; return the text that may now be sent on."""
        if self.done or self.failed:
            return ""
        held = self._held + text
        at, safe = len(self._held), 0
        while at < len(held) and not self.done:
            at = self._step(held, at)
            if self.failed:
                break
            if self._is_safe():
                safe = at
                self.closing = ('"' if self._state == _STRING else "") + self._closers
        self._held = "" if self.done else held[safe:at]
        return held[:safe]

    def _is_safe(self) -> bool:
        state = self._state
        return (
            (state == _STRING and not self._key)
            or state == _AFTER
            or (self._empty and state in (_KEY, _VALUE))
        )

    def _step(self, text: str, at: int) -> int:
        """Read from `at`; return where reading stopped (one token, or a run of string characters)."""
        state, ch = self._state, text[at]
        if state == _STRING:
            run = _STRING_RUN.match(text, at)
            if run and run.end() > at:
                return run.end()
            if ch == '"':
                self._state = _COLON if self._key else self._after_value()
            elif ch == "\\":
                self._state = _ESCAPE
            else:
                self.failed = True
            return at + 1
        if state == _ESCAPE:
            self._state, self._token = (_UNICODE, "") if ch == "u" else (_STRING, "")
            self.failed = ch not in _ESCAPABLE and ch != "u"
            return at + 1
        if state == _UNICODE:
            self._token += ch
            self.failed = ch not in _HEX
            if len(self._token) == 4:
                self._state = _STRING
            return at + 1
        if state == _NUMBER:
            if ch in _NUMBER_CHARS:
                self._token += ch
                return at + 1
            self.failed = _NUMBER_TEXT.fullmatch(self._token) is None
            self._state = self._after_value()
            return at
        if state == _LITERAL:
            self._token += ch
            literal = next((lit for lit in _LITERALS if lit.startswith(self._token)), None)
            self.failed = literal is None
            if literal == self._token:
                self._state = self._after_value()
            return at + 1
        if ch in _BLANK:
            return at + 1
        self._structural(state, ch)
        return at + 1

    def _structural(self, state: int, ch: str) -> None:
        """A character outside strings, numbers and literals."""
        empty, self._empty = self._empty, False
        if state == _VALUE:
            if ch in "{[":
                self._closers = _CLOSERS[ch] + self._closers
                self._state, self._empty = (_KEY if ch == "{" else _VALUE), True
            elif ch == '"':
                self._state, self._key = _STRING, False
            elif ch == "-" or ch.isdigit():
                self._state, self._token = _NUMBER, ch
            elif ch in "tfn":
                self._state, self._token = _LITERAL, ch
            elif ch == "]" and empty:
                self._close()
            else:
                self.failed = True
        elif state == _KEY:
            if ch == '"':
                self._state, self._key = _STRING, True
            elif ch == "}" and empty:
                self._close()
            else:
                self.failed = True
        elif state == _COLON:
            self._state = _VALUE
            self.failed = ch != ":"
        elif ch == ",":
            self._state = _KEY if self._closers[0] == "}" else _VALUE
        elif ch == self._closers[0]:
            self._close()
        else:
            self.failed = True

    def _close(self) -> None:
        self._closers = self._closers[1:]
        self._state = self._after_value()

    def _after_value(self) -> int:
        self.done = not self._closers
        return _AFTER
