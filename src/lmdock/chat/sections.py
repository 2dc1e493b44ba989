"""Readers for a tool-call section: the text after its opening marker, up to where the section ends.

A reader is made fresh for each section and is handed the whole buffered section text on every call
(the buffer only grows). It answers None (need more text) or (characters consumed, calls), where calls
is None when the section is malformed and its raw text should be shown as text instead. A reader that
can tell early which tool a call names, and where its arguments begin, says so from `head`: the parser
then streams those arguments as they are written.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Protocol

from lmdock.chat.calls import CallHead, RawCall, call_head, calls_from_text, coerce_arguments
from lmdock.chat.jsonutil import JsonScanner, in_string_at

SectionResult = tuple[int, list[RawCall] | None] | None
_HEADER_LIMIT = 256  # a header longer than this without matching is not a header


class SectionReader(Protocol):
    def read(self, buf: str, final: bool) -> SectionResult: ...

    def head(self, buf: str) -> CallHead | None: ...


class JsonSection:
    """Optional header naming the tool, then a JSON value, then an optional closing marker.

    Without `header` or `name`, the JSON holds the call(s) (`{"name", "arguments"}` or a list of them);
    otherwise `name` (or the header's `name` group) names the tool and the JSON is its arguments.
    A closing marker inside a JSON string does not end the section.
    """

    def __init__(
        self,
        end: str | None = None,
        *,
        header: re.Pattern[str] | None = None,
        name: str | None = None,
        arg_keys: tuple[str, ...] = ("arguments", "parameters"),
    ) -> None:
        self._end = end
        self._header = header
        self._arg_keys = arg_keys
        self._name = name
        self._start: int | None = None if header else 0
        self._scanner: JsonScanner | None = None

    def read(self, buf: str, final: bool) -> SectionResult:
        if self._start is None and not self._match_header(buf):
            return (len(buf), None) if final or len(buf) > _HEADER_LIMIT else None
        start = self._start or 0
        if self._scanner is None:
            self._scanner = JsonScanner(start)
        end = self._scanner.scan(buf)
        if end is not None:
            return self._complete(buf, start, end, final)
        if self._end is not None:
            at = buf.find(self._end, start)
            while at >= 0 and in_string_at(buf[start:], at - start):
                at = buf.find(self._end, at + 1)
            if at >= 0:
                return at + len(self._end), self._calls(buf[start:at])
        if final:
            return len(buf), self._calls(buf[start:])
        return None

    def head(self, buf: str) -> CallHead | None:
        """The call's name and where its arguments object begins, once both are in the buffer."""
        if self._start is None and not self._match_header(buf):
            return None
        if self._name is None:
            return call_head(buf, self._start or 0)
        at = len(buf) - len(buf[self._start or 0 :].lstrip())
        return CallHead(self._name, at) if buf[at : at + 1] == "{" else None

    def _match_header(self, buf: str) -> bool:
        assert self._header is not None
        m = self._header.match(buf)
        if m is None:
            return False
        self._name, self._start = m.group("name"), m.end()
        return True

    def _complete(self, buf: str, start: int, end: int, final: bool) -> SectionResult:
        consumed = end
        if self._end is not None:
            rest = buf[end:].lstrip()
            if rest.startswith(self._end):
                consumed = len(buf) - len(rest) + len(self._end)
            elif self._end.startswith(rest) and not final:
                return None
        return consumed, self._calls(buf[start:end])

    def _calls(self, text: str) -> list[RawCall] | None:
        if self._name is None:
            return calls_from_text(text, self._arg_keys)
        arguments = coerce_arguments(text)
        return None if arguments is None else [RawCall(self._name, arguments)]


class MarkerSection:
    """Everything up to a closing marker, handed to a family-specific parse function."""

    def __init__(self, end: str, parse: Callable[[str], list[RawCall] | None]) -> None:
        self._end = end
        self._parse = parse

    def read(self, buf: str, final: bool) -> SectionResult:
        at = buf.find(self._end)
        if at >= 0:
            return at + len(self._end), self._parse(buf[:at])
        return (len(buf), self._parse(buf)) if final else None

    def head(self, buf: str) -> CallHead | None:
        return None  # the family's parse function reads the calls only once the section is closed
