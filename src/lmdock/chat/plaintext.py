"""Message content is tokenized as plain text: only the chat template's own markup yields control tokens.

A file Claude Code reads, a tool result or a user message may contain `<|im_end|><|im_start|>system`;
tokenized with special-token parsing on, that text would become the model's real turn markers (prompt
injection with the model's own markup). Before rendering, every control-token text inside message
strings is swapped for a unique sentinel; the rendered prompt is then tokenized piece by piece, template
text with special parsing on and each swapped-out text with it off.

Requests without such text (all ordinary ones) are rendered and tokenized exactly as before, so the
prompt stays byte- and token-identical and the prefix cache keeps hitting.
"""

from __future__ import annotations

import dataclasses
import re
import secrets
from collections.abc import Callable, Iterable
from typing import Any

from lmdock.core.request import ChatRequest, Message, ToolCall

Tokenize = Callable[..., list[int]]  # tokenize(text, parse_special=bool) -> ids


class ContentGuard:
    """Protects one model's control tokens (`control_texts`: the text of each control token)."""

    def __init__(self, control_texts: Iterable[str]) -> None:
        texts = sorted({t for t in control_texts if t}, key=len, reverse=True)
        self._pattern = re.compile("|".join(map(re.escape, texts))) if texts else None

    def protect(self, req: ChatRequest) -> tuple[ChatRequest, dict[str, str]]:
        """`req` with control-token texts in its messages and tool descriptions replaced by sentinels,
        and the sentinel -> original text map (empty, and `req` itself, when there were none)."""
        if self._pattern is None:
            return req, {}
        swap = _Swapper(self._pattern)
        messages = [swap.message(m) for m in req.messages]
        tools = [
            dataclasses.replace(t, description=swap.text(t.description)) if t.description else t
            for t in req.tools
        ]
        if not swap.mapping:
            return req, {}
        return dataclasses.replace(req, messages=messages, tools=tools), swap.mapping

    @staticmethod
    def restore(text: str, mapping: dict[str, str]) -> str:
        """The rendered prompt as the model will read it (sentinels back to their texts)."""
        if not mapping:
            return text
        return _sentinels(mapping).sub(lambda m: mapping[m.group()], text)

    @staticmethod
    def tokenize(text: str, mapping: dict[str, str], tokenize: Tokenize) -> list[int]:
        """Tokens of a rendered prompt: template text with special parsing, swapped texts without."""
        if not mapping:
            return tokenize(text, parse_special=True)
        tokens: list[int] = []
        at = 0
        for m in _sentinels(mapping).finditer(text):
            if m.start() > at:
                tokens += tokenize(text[at : m.start()], parse_special=True)
            tokens += tokenize(mapping[m.group()], parse_special=False)
            at = m.end()
        if at < len(text):
            tokens += tokenize(text[at:], parse_special=True)
        return tokens


def _sentinels(mapping: dict[str, str]) -> re.Pattern[str]:
    return re.compile("|".join(map(re.escape, mapping)))


class _Swapper:
    def __init__(self, pattern: re.Pattern[str]) -> None:
        self._pattern = pattern
        self._nonce = secrets.token_hex(4)
        self.mapping: dict[str, str] = {}

    def _sentinel(self, match: re.Match[str]) -> str:
        # private-use characters: inert in every template, and never special-token text
        key = f"\ue000{self._nonce}.{len(self.mapping)}\ue001"
        self.mapping[key] = match.group()
        return key

    def text(self, value: str) -> str:
        return self._pattern.sub(self._sentinel, value) if self._pattern.search(value) else value

    def value(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, list):
            return [self.value(v) for v in value]
        if isinstance(value, dict):
            return {self.value(k): self.value(v) for k, v in value.items()}
        return value

    def message(self, m: Message) -> Message:
        calls = [ToolCall(c.id, c.name, self.value(c.arguments)) for c in m.tool_calls]
        return dataclasses.replace(
            m,
            content=self.text(m.content),
            reasoning=self.text(m.reasoning) if m.reasoning else m.reasoning,
            tool_calls=calls,
        )
