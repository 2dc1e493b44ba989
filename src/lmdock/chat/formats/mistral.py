"""Mistral: `[TOOL_CALLS][{"name": .., "arguments": {..}}]` (Nemo, Small), or `[TOOL_CALLS]name[ARGS]{..}`
(Magistral, Ministral 3, Small 3.2 with `[CALL_ID]`), reasoning in `[THINK]..[/THINK]`."""

from __future__ import annotations

import hashlib
import re
import string

from lmdock.chat.calls import CallHead
from lmdock.chat.formats.base import ChatFormat
from lmdock.chat.grammar import WS, CallSyntax, GrammarBuilder, lit
from lmdock.chat.parser import ParserSpec
from lmdock.chat.sections import JsonSection, SectionResult
from lmdock.core.request import Tool

OPEN, ARGS, CALL_ID = "[TOOL_CALLS]", "[ARGS]", "[CALL_ID]"
THINK = ("[THINK]", "[/THINK]")
_NAMED_HEADER = re.compile(r"\s*(?P<name>[\w.\-]+)(?:\[CALL_ID\][\w\-]*)?\[ARGS\]")
_ALNUM = string.ascii_letters + string.digits


class _ToolCallsSection:
    """Either a JSON array of calls, or `name[ARGS]{..}`; decided by the first non-blank character."""

    def __init__(self) -> None:
        self._inner: JsonSection | None = None

    def read(self, buf: str, final: bool) -> SectionResult:
        if self._inner is None:
            head = buf.lstrip()
            if not head:
                return (len(buf), None) if final else None
            self._inner = JsonSection() if head[0] in "[{" else JsonSection(header=_NAMED_HEADER)
        return self._inner.read(buf, final)

    def head(self, buf: str) -> CallHead | None:
        return None if self._inner is None else self._inner.head(buf)


class MistralFormat(ChatFormat):
    name = "mistral"
    markers = (OPEN,)

    def __init__(self, source: str) -> None:
        super().__init__(source)
        self.named = ARGS in source
        self.call_ids = CALL_ID in source

    def _think_markers(self, source: str) -> tuple[str, str] | None:
        return THINK if THINK[0] in source else None

    def history_call_id(self, call_id: str) -> str:
        """Mistral templates insist on 9 alphanumeric characters; derive them stably from the id."""
        if len(call_id) == 9 and call_id.isalnum():
            return call_id
        digest = hashlib.sha256(call_id.encode()).digest()
        return "".join(_ALNUM[b % len(_ALNUM)] for b in digest[:9])

    def parser_spec(self) -> ParserSpec:
        return ParserSpec(think=self.think, sections={OPEN: _ToolCallsSection})

    def calls(self, gb: GrammarBuilder, tools: list[Tool], parallel: bool) -> CallSyntax:
        if self.named:
            call_id = f"{gb.marker(CALL_ID)} /[A-Za-z0-9]{{9}}/ " if self.call_ids else ""
            branches = " | ".join(
                f"{lit(t.name)} {call_id}{gb.marker(ARGS)} {gb.json_rule(t.parameters)}" for t in tools
            )
            call = gb.rule("named_call", f"({branches})")
            return CallSyntax(OPEN, gb.repeat(call, gb.marker(OPEN), parallel))
        call_id = f'({WS}? "," {WS}? "\\"id\\"" {WS}? ":" {WS}? /"[A-Za-z0-9]{{9}}"/)?'
        items = gb.repeat(gb.call_object(tools, extra=call_id), f'{WS}? "," {WS}?', parallel)
        return CallSyntax(OPEN, f'{WS}? "[" {WS}? {items} {WS}? "]"')
