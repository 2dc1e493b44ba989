"""Shared helpers for chat-layer tests: run a parser, normalise its events, check stream invariants."""

from __future__ import annotations

import json
from collections.abc import Callable

import llguidance as llg

from lmdock.chat.parser import OutputParser
from lmdock.core.events import (
    GenerationEvent,
    TextDelta,
    ThinkingDelta,
    ToolCallArgsDelta,
    ToolCallEnd,
    ToolCallStart,
)
from lmdock.core.request import Tool

WEATHER = Tool(
    "get_weather",
    "Current weather for a city",
    {
        "type": "object",
        "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["c", "f"]}},
        "required": ["city"],
        "additionalProperties": False,
    },
)
TIME = Tool("get_time", "The time", {"type": "object", "properties": {}})
TOOLS = [WEATHER, TIME]


def feed(make: Callable[[], OutputParser], text: str, chunk: int | None = None) -> list[GenerationEvent]:
    """All events for `text` fed at once (chunk=None) or `chunk` characters at a time."""
    parser = make()
    step = chunk or max(len(text), 1)
    events: list[GenerationEvent] = []
    for at in range(0, len(text), step):
        events += parser.feed(text[at : at + step])
    events += parser.finish()
    check_invariants(events)
    assert parser.tool_calls == sum(isinstance(e, ToolCallStart) for e in events)
    return events


def summary(events: list[GenerationEvent]) -> list[tuple[str, object]]:
    """Events with adjacent text/thinking merged and ids dropped, to compare different feedings."""
    out: list[tuple[str, object]] = []
    for e in events:
        if isinstance(e, TextDelta | ThinkingDelta):
            kind = "text" if isinstance(e, TextDelta) else "think"
            if out and out[-1][0] == kind:
                out[-1] = (kind, str(out[-1][1]) + e.text)
            else:
                out.append((kind, e.text))
        elif isinstance(e, ToolCallEnd):
            out.append(("call", e.arguments))
        elif isinstance(e, ToolCallStart):
            out.append(("start", e.name))
    return out


def parse_all_ways(make: Callable[[], OutputParser], text: str) -> list[tuple[str, object]]:
    """Summary of the events; asserts that whole, char-by-char and 3-char feeding agree."""
    whole = summary(feed(make, text))
    assert summary(feed(make, text, 1)) == whole
    assert summary(feed(make, text, 3)) == whole
    return whole


def check_invariants(events: list[GenerationEvent]) -> None:
    """Calls are contiguous Start, ArgsDelta+, End runs with ids `toolu_`+24; the deltas add up to JSON
    text of the End's arguments."""
    index = 0
    i = 0
    while i < len(events):
        e = events[i]
        if isinstance(e, ToolCallStart):
            assert e.index == index and e.id.startswith("toolu_") and len(e.id) == 30 and e.id[6:].isalnum()
            i += 1
            args = ""
            while isinstance(events[i], ToolCallArgsDelta):
                assert events[i].index == index
                args += events[i].json
                i += 1
            end = events[i]
            assert isinstance(end, ToolCallEnd) and end.index == index
            assert json.loads(args) == end.arguments
            index += 1
        else:
            assert isinstance(e, TextDelta | ThinkingDelta) and e.text
        i += 1


class ToyTokenizer:
    """A byte-level tokenizer with a few special tokens, enough to drive an llguidance matcher."""

    def __init__(self, special: list[str]) -> None:
        self.special = special
        self.tokens = [bytes([i]) for i in range(256)] + [b"\xff" + s.encode() for s in special]
        self.special_token_ids = list(range(256, 256 + len(special)))
        self.eos_token_id = 256
        self.bos_token_id = None

    def __call__(self, text: str | bytes) -> list[int]:
        return list(text.encode() if isinstance(text, str) else text)

    def ids(self, *parts: str) -> list[int]:
        """Token ids for pieces: a special token's text is that token, anything else is bytes."""
        out: list[int] = []
        for part in parts:
            out += [256 + self.special.index(part)] if part in self.special else list(part.encode())
        return out

    def llg(self) -> llg.LLTokenizer:
        return llg.LLTokenizer(llg.TokenizerWrapper(self))


def accepts(tokenizer: llg.LLTokenizer, grammar: str, tokens: list[int]) -> bool:
    """Whether the grammar accepts exactly this token sequence as a complete output."""
    matcher = llg.LLMatcher(tokenizer, grammar, log_level=0)
    assert not matcher.is_error(), matcher.get_error()
    return matcher.consume_tokens(tokens) and matcher.is_accepting()
