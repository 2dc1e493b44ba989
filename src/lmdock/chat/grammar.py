"""Building blocks for llguidance Lark grammars: markers, JSON tool-call objects, text and thinking.

Markers that are special tokens in the model's vocabulary must be referenced as tokens (`<[id]>`, or
`<name>` when ids are unknown): llguidance never lets a string literal match a special token, and a model
emits `<tool_call>` as its single added token, not spelled out.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lmdock.chat.schema import guided_schema
from lmdock.core.request import Tool

_ANY_OBJECT: dict[str, Any] = {"type": "object"}
_TOKEN_NAME = re.compile(r"<[^<>\s\[\]]+>")
WS = "WS"


@dataclass(frozen=True)
class CallSyntax:
    """How tool calls are written: `open` (a marker, or None when they start with `{`), then `rest`."""

    open: str | None
    rest: str


def lit(text: str) -> str:
    """A Lark string literal."""
    return json.dumps(text, ensure_ascii=False)


def regex_escape(text: str) -> str:
    """Escape text for use inside a Lark `/.../` regex."""
    return re.sub(r"([\\/.^$|?*+()\[\]{}-])", r"\\\1", text)


class GrammarBuilder:
    """Collects the rules of one grammar and renders markers the way the vocabulary needs.

    `special` maps special-token texts to ids (from the model's llguidance tokenizer). When it is None,
    markers shaped like `<...>` are assumed to be special tokens and referenced by name.
    """

    def __init__(self, special: Mapping[str, int] | None) -> None:
        self._special = special
        # Blanks between structural parts are bounded so a model cannot pad them endlessly.
        self._rules: dict[str, str] = {WS: r"/[ \t\r\n]{1,8}/", "TEXT": r"/(?s:.+)/"}
        self._json: dict[str, str] = {}
        self._objects: dict[tuple[tuple[str, ...], str, str], str] = {}

    def is_special(self, marker: str) -> bool:
        if self._special is None:
            return _TOKEN_NAME.fullmatch(marker) is not None
        return marker in self._special

    def marker(self, marker: str) -> str:
        """A marker as a grammar item: a special-token reference or a string literal."""
        if not self.is_special(marker):
            return lit(marker)
        return marker if self._special is None else f"<[{self._special[marker]}]>"

    def rule(self, name: str, body: str) -> str:
        self._rules[name] = body
        return name.split("[", 1)[0]

    def json_rule(self, schema: dict[str, Any], fallback: dict[str, Any] = _ANY_OBJECT) -> str:
        """A rule matching JSON valid for `schema` (shared between identical schemas)."""
        text = guided_schema(schema, fallback)
        if text not in self._json:
            self._json[text] = self.rule(f"json{len(self._json)}", f"%json {text}")
        return self._json[text]

    def call_object(self, tools: Sequence[Tool], args_key: str = "arguments", extra: str = "") -> str:
        """A rule for `{"name": <one of tools>, "<args_key>": <that tool's arguments>}`; `extra` may
        add members after the arguments."""
        shape = (tuple(t.name for t in tools), args_key, extra)
        if shape in self._objects:
            return self._objects[shape]
        n = len(self._objects)
        sep = f'{WS}? ":" {WS}?'
        branches = []
        for i, tool in enumerate(tools):
            name, key = lit(json.dumps(tool.name, ensure_ascii=False)), lit(json.dumps(args_key))
            body = f'{name} {WS}? "," {WS}? {key} {sep} {self.json_rule(tool.parameters)}'
            branches.append(self.rule(f"call{n}_{i}", body))
        self._objects[shape] = self.rule(
            f"call_obj{n}", f'"{{" {WS}? "\\"name\\"" {sep} ({" | ".join(branches)}) {extra} {WS}? "}}"'
        )
        return self._objects[shape]

    def repeat(self, item: str, sep: str, parallel: bool) -> str:
        """One item, or (when parallel) one or more separated by `sep`."""
        return f"{item} ({sep} {item})*" if parallel else item

    def build(self, start: str) -> str:
        lines = [f"start: {start}"] + [f"{name}: {body}" for name, body in self._rules.items()]
        return "\n".join(lines) + "\n"
