"""Hermes 2 Pro / Qwen 2.5 / Qwen 3: `<tool_call>{"name": .., "arguments": {..}}</tool_call>`, `<think>`."""

from __future__ import annotations

import re

from lmdock.chat.formats.base import ChatFormat
from lmdock.chat.grammar import WS, CallSyntax, GrammarBuilder
from lmdock.chat.parser import ParserSpec
from lmdock.chat.sections import JsonSection
from lmdock.core.request import Tool

OPEN, CLOSE = "<tool_call>", "</tool_call>"
_FUNCTION_HEADER = re.compile(r"(?P<name>[\w.\-]+)>")  # some fine-tunes write <function=NAME>{..}</function>


class HermesFormat(ChatFormat):
    name = "hermes"
    markers = (OPEN,)

    def parser_spec(self) -> ParserSpec:
        return ParserSpec(
            think=self.think,
            sections={
                OPEN: lambda: JsonSection(CLOSE),
                "<function=": lambda: JsonSection("</function>", header=_FUNCTION_HEADER),
            },
        )

    def calls(self, gb: GrammarBuilder, tools: list[Tool], parallel: bool) -> CallSyntax:
        # Small Qwen models often end the turn right after the JSON, without </tool_call>: allow it, or a
        # grammar that insists makes them pad with blanks until the marker is forced.
        body = f"{WS}? {gb.call_object(tools)} ({WS}? {gb.marker(CLOSE)})?"
        return CallSyntax(OPEN, gb.repeat(body, f"{WS}? {gb.marker(OPEN)}", parallel))
