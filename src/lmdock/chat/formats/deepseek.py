"""DeepSeek R1 and V3 / V3.1: calls between `<｜tool▁calls▁begin｜>` and `<｜tool▁calls▁end｜>`, `<think>`.

R1 writes `<｜tool▁call▁begin｜>function<｜tool▁sep｜>NAME\\n```json\\n{..}\\n```<｜tool▁call▁end｜>`;
V3.1 writes `<｜tool▁call▁begin｜>NAME<｜tool▁sep｜>{..}<｜tool▁call▁end｜>`.
"""

from __future__ import annotations

import re

from lmdock.chat.calls import RawCall, coerce_arguments
from lmdock.chat.formats.base import ChatFormat
from lmdock.chat.grammar import CallSyntax, GrammarBuilder, lit
from lmdock.chat.parser import ParserSpec
from lmdock.chat.sections import MarkerSection
from lmdock.core.request import Tool

CALLS_BEGIN, CALLS_END = "<｜tool▁calls▁begin｜>", "<｜tool▁calls▁end｜>"
CALL_BEGIN, CALL_END, SEP = "<｜tool▁call▁begin｜>", "<｜tool▁call▁end｜>", "<｜tool▁sep｜>"
# Spellings R1 distills are known to produce for the opening marker.
_BEGIN_VARIANTS = (
    CALLS_BEGIN,
    "<｜tool_calls_begin｜>",
    "<｜tool calls begin｜>",
    "<｜tool\\_calls\\_begin｜>",
)
_FENCE = re.compile(r"^\s*```(?:json)?\s*|\s*```\s*$")


_CALL = re.compile(
    r"\s*(?:function" + re.escape(SEP) + r")?(?P<name>[^\n<]+?)\s*(?:\n|" + re.escape(SEP) + r")(?P<args>.*)",
    re.S,
)


def _parse_calls(payload: str) -> list[RawCall] | None:
    """Each `<｜tool▁call▁begin｜>[function<｜tool▁sep｜>]NAME(\\n|<｜tool▁sep｜>)ARGS<｜tool▁call▁end｜>`."""
    calls = []
    for chunk in payload.split(CALL_BEGIN)[1:]:
        m = _CALL.match(chunk.split(CALL_END, 1)[0])
        arguments = coerce_arguments(_FENCE.sub("", m.group("args"))) if m else None
        if m is None or arguments is None:
            return None
        calls.append(RawCall(m.group("name"), arguments))
    return calls or None


class DeepSeekFormat(ChatFormat):
    name = "deepseek"
    markers = (CALLS_BEGIN,)

    def __init__(self, source: str) -> None:
        super().__init__(source)
        self.r1 = "```json" in source
        self.name = "deepseek_r1" if self.r1 else "deepseek_v3"

    def parser_spec(self) -> ParserSpec:
        section = {marker: (lambda: MarkerSection(CALLS_END, _parse_calls)) for marker in _BEGIN_VARIANTS}
        return ParserSpec(think=self.think, sections=section)

    def calls(self, gb: GrammarBuilder, tools: list[Tool], parallel: bool) -> CallSyntax:
        branches = []
        for tool in tools:
            args = gb.json_rule(tool.parameters)
            if self.r1:
                head, tail = lit(tool.name + "\n```json\n"), lit("\n```")
                branches.append(f'"function" {gb.marker(SEP)} {head} {args} {tail}')
            else:
                branches.append(f"{lit(tool.name)} {gb.marker(SEP)} {args}")
        call = gb.rule("ds_call", f"{gb.marker(CALL_BEGIN)} ({' | '.join(branches)}) {gb.marker(CALL_END)}")
        return CallSyntax(CALLS_BEGIN, f"{gb.repeat(call, '', parallel)} {gb.marker(CALLS_END)}")
