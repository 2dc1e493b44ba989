"""Events a generation produces, in order, for an API layer to encode.

A stream is: any number of TextDelta / ThinkingDelta / ToolCall* events, then exactly one Done.
Text, thinking and each tool call arrive as contiguous runs, never interleaved.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Literal

StopReason = Literal["end_turn", "max_tokens", "stop_sequence", "tool_use", "context_window"]


@dataclass
class Usage:
    """Token accounting. `input_tokens` is the whole prompt; `cached_tokens` the part reused from cache."""

    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    spec_proposed_tokens: int = 0  # speculative decoding: draft tokens verified (no protocol reports it)
    spec_accepted_tokens: int = 0  # of those, the ones emitted (counted in output_tokens)

    def add(self, other: Usage) -> None:
        """Add another generation's counts (several prompts in one response)."""
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


@dataclass
class TokenLogprob:
    """One generated token: the text it contributes, its log-probability, and the most likely
    alternatives at that position (token text, logprob), best first. A plain picklable dataclass."""

    token: str
    logprob: float
    top: list[tuple[str, float]] = field(default_factory=list)


@dataclass
class TextDelta:
    """Answer text. With logprobs requested, `logprobs` covers exactly this text's tokens (an entry may be
    delivered on the delta after the one its text started in, and a final delta may carry only entries)."""

    text: str
    logprobs: list[TokenLogprob] | None = None


@dataclass
class ThinkingDelta:
    text: str


@dataclass
class ToolCallStart:
    index: int
    id: str
    name: str


@dataclass
class ToolCallArgsDelta:
    """A piece of the call's JSON arguments; the concatenation is always a prefix of valid JSON."""

    index: int
    json: str


@dataclass
class ToolCallEnd:
    index: int
    arguments: dict[str, Any] = field(default_factory=dict)


@dataclass
class Done:
    stop_reason: StopReason
    usage: Usage
    stop_sequence: str | None = None


GenerationEvent = TextDelta | ThinkingDelta | ToolCallStart | ToolCallArgsDelta | ToolCallEnd | Done
