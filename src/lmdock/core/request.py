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


@dataclass
class ToolChoice:
    """How tools may be used: `auto` (model decides), `any` (at least one call), `tool` (exactly `name`),
    `none` (no calls). `parallel=False` allows at most one call."""

    mode: Literal["auto", "any", "tool", "none"] = "auto"
    name: str | None = None
    parallel: bool = True


@dataclass
class SamplingParams:
    """Sampling settings; temperature 0 means greedy. Defaults follow llama.cpp's common defaults."""

    temperature: float = 0.8
    top_k: int = 40
    top_p: float = 0.95
    min_p: float = 0.05
    repeat_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    penalty_last_n: int = 64
    seed: int | None = None


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
