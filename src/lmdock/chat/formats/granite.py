"""IBM Granite 3.x / 4: `<|tool_call|>[{"name": .., "arguments": {..}}, ..]`, `<think>` and `<response>`."""

from __future__ import annotations

from lmdock.chat.formats.base import ChatFormat
from lmdock.chat.grammar import WS, CallSyntax, GrammarBuilder
from lmdock.chat.parser import ParserSpec
from lmdock.chat.sections import JsonSection
from lmdock.core.request import Tool

OPEN = "<|tool_call|>"


class GraniteFormat(ChatFormat):
    name = "granite"
    markers = (OPEN,)

    def parser_spec(self) -> ParserSpec:
        return ParserSpec(
            think=self.think,
            sections={OPEN: lambda: JsonSection()},
            drop=("<response>", "</response>"),
        )

    def calls(self, gb: GrammarBuilder, tools: list[Tool], parallel: bool) -> CallSyntax:
        items = gb.repeat(gb.call_object(tools), f'{WS}? "," {WS}?', parallel)
        return CallSyntax(OPEN, f'{WS}? "[" {WS}? {items} {WS}? "]"')
