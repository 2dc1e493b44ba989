"""Llama 3.x: a bare JSON object `{"name": .., "parameters": {..}}`, maybe after <|python_tag|>."""

from __future__ import annotations

from lmdock.chat.formats.base import ChatFormat
from lmdock.chat.grammar import CallSyntax, GrammarBuilder
from lmdock.chat.parser import ParserSpec
from lmdock.chat.sections import JsonSection
from lmdock.core.request import Tool

PYTHON_TAG = "<|python_tag|>"


class Llama3Format(ChatFormat):
    name = "llama3"
    markers = ("<|start_header_id|>ipython<|end_header_id|>",)
    stop = ("<|eom_id|>",)

    def parser_spec(self) -> ParserSpec:
        # Bare JSON is the native format here, so the shared bare-object recognition does the work.
        return ParserSpec(
            think=self.think,
            sections={PYTHON_TAG: lambda: JsonSection(arg_keys=("parameters", "arguments"))},
            arg_keys=("parameters", "arguments"),
        )

    def calls(self, gb: GrammarBuilder, tools: list[Tool], parallel: bool) -> CallSyntax:
        call = gb.call_object(tools, args_key="parameters")
        # Several calls go on separate lines, where the bare-JSON recognition finds each one.
        return CallSyntax(None, gb.repeat(call, gb.rule("CALL_SEP", r"/[ \t]*\n\s*/"), parallel))
