"""gpt-oss (Harmony): messages `<|channel|>NAME<|message|>..<|end|>`; `analysis` is reasoning, `final` the
answer, and `commentary to=functions.NAME <|constrain|>json<|message|>{..}<|call|>` a tool call."""

from __future__ import annotations

import re
from collections.abc import Collection
from typing import Any

from lmdock.chat.formats.base import ChatFormat
from lmdock.chat.grammar import CallSyntax, GrammarBuilder, lit
from lmdock.chat.parser import OutputParser, ParserSpec
from lmdock.chat.sections import JsonSection
from lmdock.core.events import GenerationEvent, TextDelta, ThinkingDelta
from lmdock.core.request import ThinkingConfig, Tool
from lmdock.core.text import partial_suffix

CHANNEL, MESSAGE, CONSTRAIN = "<|channel|>", "<|message|>", "<|constrain|>"
START, END, CALL = "<|start|>", "<|end|>", "<|call|>"
_BODY_ENDS = (END, CALL, "<|return|>", START)
_RECIPIENT = re.compile(r"to=functions\.([^\s<]+)")
_CHANNEL_NAME = re.compile(re.escape(CHANNEL) + r"\s*(\w+)")
_HEADER_LIMIT = 256  # a "header" this long without <|message|> is plain text from a confused model


class HarmonyParser(OutputParser):
    """Reads message headers up to <|message|>, then streams or buffers the body by channel."""

    def __init__(self, spec: ParserSpec, tool_names: Collection[str]) -> None:
        super().__init__(spec, tool_names)
        self._mode = "header"
        self._kind: type[TextDelta] | type[ThinkingDelta] = TextDelta

    def _step(self, final: bool, out: list[GenerationEvent]) -> bool:
        if self._mode == "header":
            return self._step_header(final)
        if self._mode == "body":
            return self._step_body(final, out)
        return super()._step(final, out)

    def _resume(self) -> None:
        self._mode = "header"

    def _step_header(self, final: bool) -> bool:
        at = self._buf.find(MESSAGE)
        if at < 0:
            if final or (len(self._buf) > _HEADER_LIMIT and "<|" not in self._buf):
                self._mode, self._kind = "body", TextDelta
                return True
            return False
        header, self._buf = self._buf[:at], self._buf[at + len(MESSAGE) :]
        recipient = _RECIPIENT.search(header)
        channel = _CHANNEL_NAME.search(header)
        if recipient and self.tool_names:
            self._mode, self._opener = "section", header + MESSAGE
            self._reader = JsonSection(CALL, name=recipient.group(1))
        else:
            analysis = channel is not None and channel.group(1) == "analysis"
            self._mode, self._kind, self._strip = "body", ThinkingDelta if analysis else TextDelta, True
        return True

    def _step_body(self, final: bool, out: list[GenerationEvent]) -> bool:
        found = min(((self._buf.find(m), m) for m in _BODY_ENDS if m in self._buf), default=None)
        if found is None:
            self._emit_run(out, self._kind, 0 if final else partial_suffix(self._buf, _BODY_ENDS), final)
            return False
        at, marker = found
        self._emit(out, self._kind, self._buf[:at].rstrip())
        self._buf = self._buf[at + (0 if marker == START else len(marker)) :]
        self._mode = "header"
        return True


class HarmonyFormat(ChatFormat):
    name = "harmony"
    markers = (CHANNEL,)

    def _think_markers(self, source: str) -> tuple[str, str] | None:
        return (CHANNEL + "analysis" + MESSAGE, END)

    def prepare(self, messages: list[dict[str, Any]], tools: list[Tool]) -> list[dict[str, Any]]:
        """The template refuses an assistant turn with tool calls and both text and thinking: merge them."""
        out = []
        for msg in messages:
            if msg.get("tool_calls") and msg.get("content") and msg.get("thinking"):
                msg = {**msg, "thinking": msg["thinking"] + "\n\n" + msg["content"], "content": ""}
            out.append(msg)
        return out

    def parser_spec(self) -> ParserSpec:
        return ParserSpec()

    def new_parser(self, tool_names: Collection[str], thinking_open: bool) -> OutputParser:
        return HarmonyParser(self.parser_spec(), tool_names)

    def calls(self, gb: GrammarBuilder, tools: list[Tool], parallel: bool) -> CallSyntax:
        tail = f'{gb.marker(CONSTRAIN)} "json" {gb.marker(MESSAGE)}'
        branches = " | ".join(
            f"{lit('commentary to=functions.' + t.name + ' ')} {tail} {gb.json_rule(t.parameters)}"
            for t in tools
        )
        return CallSyntax(CHANNEL, f"({branches}) {gb.marker(CALL)}")

    def _answer(self, gb: GrammarBuilder, body: str) -> str:
        return f'{gb.marker(CHANNEL)} "final" {gb.marker(MESSAGE)} {body}'

    def _auto(self, gb: GrammarBuilder, tools: list[Tool], parallel: bool) -> str | None:
        return f"({self._answer(gb, 'TEXT?')} | {gb.marker(CHANNEL)} {self.calls(gb, tools, parallel).rest})"

    def _think(self, gb: GrammarBuilder, opened: bool, thinking: ThinkingConfig) -> str:
        if thinking.enabled is False:
            return ""
        attrs = f"[max_tokens={thinking.budget_tokens}]" if thinking.budget_tokens else ""
        body = gb.rule(f"think_body{attrs}", "/(?s:.*)/")
        analysis = f'{gb.marker(CHANNEL)} "analysis" {gb.marker(MESSAGE)} {body} {gb.marker(END)}'
        return f'({analysis} {gb.marker(START)} "assistant")?'
