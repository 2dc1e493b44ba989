"""The protocol-neutral chat request every API maps into.

Messages follow the Hugging Face chat-template convention (system / user / assistant / tool roles,
assistant tool calls with object arguments) because that is what model templates consume.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Role = Literal["system", "user", "assistant", "tool"]

# Scheduling classes, most urgent first: an engine admits (and keeps) a lower value before a higher one.
PRIORITY_INTERACTIVE = 0
PRIORITY_BATCH = 1  # Message Batches: runs in idle capacity, yields its slots to interactive requests


@dataclass
class ToolCall:
    """A tool call made by the assistant in the conversation history."""

    id: str
    name: str
    arguments: dict[str, Any]


@dataclass
class Message:
    """One chat turn. `reasoning` holds an assistant's thinking text; `tool_call_id` marks a tool result."""

    role: Role
    content: str = ""
    reasoning: str | None = None
    tool_calls: list[ToolCall] = field(default_factory=list)
    tool_call_id: str | None = None
    name: str | None = None
    is_error: bool = False


@dataclass
class Tool:
    """A function the model may call; `parameters` is its JSON Schema (an object schema)."""

    name: str
    description: str = ""
    parameters: dict[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})


ToolMode = Literal["auto", "any", "tool", "none"]


@dataclass
class ToolChoice:
    """How tools may be used: `auto` (model decides), `any` (at least one call), `tool` (exactly `name`),
    `none` (no calls). `parallel=False` allows at most one call."""

    mode: ToolMode = "auto"
    name: str | None = None
    parallel: bool = True


_SAMPLING_FIELDS = (
    "temperature",
    "top_k",
    "top_p",
    "min_p",
    "repeat_penalty",
    "presence_penalty",
    "frequency_penalty",
    "penalty_last_n",
    "seed",
)


@dataclass
class SamplingParams:
    """Sampling settings as a request gave them: `None` means unset, and the model's defaults fill it in
    (`resolved`). Temperature 0 means greedy. The API layers never fill in their protocol's documented
    defaults, so the model layer can tell "unset" from "set"."""

    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    min_p: float | None = None
    repeat_penalty: float | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    penalty_last_n: int | None = None
    seed: int | None = None

    def resolved(self, defaults: SamplingParams | None = None) -> SamplingParams:
        """Every unset field from `defaults`, then from lmdock's built-in defaults."""
        out = {}
        for name in _SAMPLING_FIELDS:
            value = getattr(self, name)
            if value is None and defaults is not None:
                value = getattr(defaults, name)
            if value is None:
                value = getattr(BUILTIN_SAMPLING, name)
            out[name] = value
        return SamplingParams(**out)

    def explicit(self) -> dict[str, float | int]:
        """The fields the request set."""
        return {n: getattr(self, n) for n in _SAMPLING_FIELDS if getattr(self, n) is not None}

    def as_dict(self) -> dict[str, float | int | None]:
        return {n: getattr(self, n) for n in _SAMPLING_FIELDS}


# lmdock's own defaults for requests that set nothing and models that recommend nothing, for agentic tool
# use on small models: a low temperature with the tail cut. Anthropic's and OpenAI's documented default is
# temperature 1.0 over the whole vocabulary; replaying Claude Code's first request to a 1.5B model gave 0/5
# right tool calls at 1.0, 3/5 at 0.8 with top-k/top-p, 3/3 at 0.2 (issue 11), so lmdock departs from it
# on purpose. bench/sampling_replay.py and bench/agent_tasks.py measure it (see the README). Explicit
# request values always win.
BUILTIN_SAMPLING = SamplingParams(
    temperature=0.2,
    top_k=40,
    top_p=0.95,
    min_p=0.05,
    repeat_penalty=1.0,
    presence_penalty=0.0,
    frequency_penalty=0.0,
    penalty_last_n=64,
    seed=None,
)


@dataclass
class ThinkingConfig:
    """Reasoning switches. `enabled=None` keeps the template's default; `budget_tokens` caps thinking."""

    enabled: bool | None = None
    budget_tokens: int | None = None
    effort: str | None = None


@dataclass
class ChatRequest:
    """A chat generation request, independent of the wire protocol it arrived on."""

    model: str
    messages: list[Message]
    max_tokens: int
    tools: list[Tool] = field(default_factory=list)
    tool_choice: ToolChoice = field(default_factory=ToolChoice)
    sampling: SamplingParams = field(default_factory=SamplingParams)
    stop: list[str] = field(default_factory=list)
    thinking: ThinkingConfig = field(default_factory=ThinkingConfig)
    response_schema: dict[str, Any] | None = None
    logprobs: int | None = None
    priority: int = PRIORITY_INTERACTIVE
