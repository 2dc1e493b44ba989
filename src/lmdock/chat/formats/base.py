"""The shape every tool/reasoning format shares, and the grammar assembly most of them use as is."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from lmdock.chat.grammar import WS, CallSyntax, GrammarBuilder, regex_escape
from lmdock.chat.parser import OutputParser, ParserSpec
from lmdock.core.errors import InvalidRequest
from lmdock.core.request import ChatRequest, ThinkingConfig, Tool

THINK_TAGS = ("<think>", "</think>")
_BLANKS = r"[ \t\r\n]*"


class ChatFormat:
    """A model family's conventions for reasoning and tool calls in output, and how to constrain them.

    Subclasses set `name`, the template substrings that select them (`markers`, all required), and
    implement `parser_spec` and `calls`.
    """

    name = "generic"
    markers: tuple[str, ...] = ()
    stop: tuple[str, ...] = ()

    def __init__(self, source: str) -> None:
        self.think = self._think_markers(source)

    @classmethod
    def detect(cls, source: str) -> bool:
        return bool(cls.markers) and all(m in source for m in cls.markers)

    def _think_markers(self, source: str) -> tuple[str, str] | None:
        """Reasoning markers, if the template knows them (most families use <think> tags)."""
        return THINK_TAGS if THINK_TAGS[0] in source else None

    # -- prompt -----------------------------------------------------------------------------------

    def prepare(self, messages: list[dict[str, Any]], tools: list[Tool]) -> list[dict[str, Any]]:
        """Adjust template messages for this family (most need nothing)."""
        return messages

    def history_call_id(self, call_id: str) -> str:
        """The tool-call id as this family's template expects it in the history."""
        return call_id

    # -- parsing ----------------------------------------------------------------------------------

    def parser_spec(self) -> ParserSpec:
        raise NotImplementedError

    def new_parser(self, tool_names: Collection[str], thinking_open: bool) -> OutputParser:
        return OutputParser(self.parser_spec(), tool_names, thinking_open)

    # -- grammar ----------------------------------------------------------------------------------

    def calls(self, gb: GrammarBuilder, tools: list[Tool], parallel: bool) -> CallSyntax:
        """Grammar of the tool-call part of the output (one call, or one or more when parallel)."""
        raise NotImplementedError

    def grammar(self, req: ChatRequest, special: Mapping[str, int] | None, thinking_open: bool) -> str | None:
        """The llguidance grammar for the whole output, or None when nothing needs constraining."""
        gb = GrammarBuilder(special)
        think = self._think(gb, thinking_open, req.thinking)
        choice = req.tool_choice
        mode = choice.mode if req.tools else "none"
        if mode in ("any", "tool"):
            tools = req.tools if mode == "any" else [t for t in req.tools if t.name == choice.name]
            if not tools:
                raise InvalidRequest(f"tool_choice names an unknown tool: {choice.name}", param="tool_choice")
            syntax = self.calls(gb, tools, choice.parallel)
            body = f"{self._opener(gb, syntax)} {syntax.rest} {WS}?"
        elif req.response_schema is not None:
            body = self._answer(gb, f"{gb.json_rule(req.response_schema, {})} {WS}?")
        elif mode == "auto":
            body = self._auto(gb, req.tools, choice.parallel)
        elif think and req.thinking.budget_tokens:
            body = self._answer(gb, "TEXT?")
        else:
            return None
        return None if body is None else gb.build(f"{think} {body}".strip())

    def _answer(self, gb: GrammarBuilder, body: str) -> str:
        """Wrap the grammar of an answer in whatever the family writes before answer text."""
        return body

    def _opener(self, gb: GrammarBuilder, syntax: CallSyntax) -> str:
        return gb.marker(syntax.open) if syntax.open else ""

    def _auto(self, gb: GrammarBuilder, tools: list[Tool], parallel: bool) -> str | None:
        """Free text, optionally followed by calls whose arguments are constrained."""
        syntax = self.calls(gb, tools, parallel)
        if syntax.open is None:
            plain = gb.rule("PLAIN", r"/\s*[^{\s](?s:.*)/")
            return f"({plain} | {WS}? {syntax.rest} {WS}?)?"
        if gb.is_special(syntax.open):
            # Text may not start with a JSON object: small models write a call as bare (maybe fenced)
            # JSON, which the parser reads as a call, so its arguments are held to the schema too.
            free = gb.rule(
                "FREE", rf"/(?s:.+)/ & ~/{_BLANKS}\{{(?s:.*)/ & ~/{_BLANKS}```(json)?{_BLANKS}\{{(?s:.*)/"
            )
            fence = gb.rule("FENCE", f"/{_BLANKS}```(json)?{_BLANKS}/")  # one lexeme up to the `{`
            obj = gb.call_object(tools)
            bare = f'({WS}? {obj} | {fence} {obj} ({WS}? "```")?) {WS}?'
            return f"({free}? ({gb.marker(syntax.open)} {syntax.rest} {WS}?)? | {bare})"
        pre = gb.rule("pre[lazy]", f"/(?s:.*){regex_escape(syntax.open)}/")
        return f"(TEXT | {pre} {syntax.rest} {WS}?)?"

    def _think(self, gb: GrammarBuilder, opened: bool, thinking: ThinkingConfig) -> str:
        """The reasoning section before the answer ("" when none); a budget caps it in tokens."""
        if self.think is None or (thinking.enabled is False and not opened):
            return ""
        open_marker, close_marker = self.think
        if gb.is_special(close_marker):
            attrs = f"[max_tokens={thinking.budget_tokens}]" if thinking.budget_tokens else ""
            section = f"{gb.rule(f'think_body{attrs}', '/(?s:.*)/')} {gb.marker(close_marker)} {WS}?"
        else:  # a plain-text close marker cannot be forced when a budget runs out
            section = f"{gb.rule('think_body[lazy]', f'/(?s:.*){regex_escape(close_marker)}/')} {WS}?"
        return section if opened else f"({gb.marker(open_marker)} {section})?"
