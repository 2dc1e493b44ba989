"""Lenient pydantic models of the Messages request: validate what lmdock uses, ignore the rest.

Claude Code sends an open-ended, growing set of fields, block types and betas, so unknown fields are
accepted everywhere and unknown content blocks are kept as raw dicts for the converter to skip.
"""

from __future__ import annotations

from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from lmdock.api.validation import validate_body
from lmdock.core.errors import InvalidRequest


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="allow")


class TextBlock(_Lenient):
    type: Literal["text"]
    text: str


class ToolSchema(_Lenient):
    name: str = Field(pattern=r"^[a-zA-Z0-9_.:-]{1,128}$")
    description: str | None = None
    input_schema: dict[str, Any] | None = None
    type: str | None = None


class ToolChoiceParam(_Lenient):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool | None = None


class ThinkingParam(_Lenient):
    type: Literal["enabled", "disabled", "adaptive"]
    budget_tokens: int | None = None


class OutputFormat(_Lenient):
    type: str = "json_schema"
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")


class OutputConfig(_Lenient):
    effort: str | None = None
    format: OutputFormat | None = None


class MessageParam(_Lenient):
    role: Literal["user", "assistant", "system"]
    content: str | list[dict[str, Any]]


class CountTokensParams(_Lenient):
    model: str = Field(min_length=1)
    messages: list[MessageParam]
    system: str | list[TextBlock] | None = None
    tools: list[ToolSchema] | None = None
    tool_choice: ToolChoiceParam | None = None
    thinking: ThinkingParam | None = None
    output_config: OutputConfig | None = None
    output_format: OutputFormat | None = None


class MessageCreateParams(CountTokensParams):
    max_tokens: int
    stream: bool = False
    stop_sequences: list[str] | None = None
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, ge=0.0, le=1.0)
    top_k: int | None = Field(default=None, ge=0)
    metadata: dict[str, Any] | None = None


_P = TypeVar("_P", bound=CountTokensParams)


def parse(model: type[_P], body: Any) -> _P:
    """Validate a Messages request body, then the constraints a schema cannot express."""
    parsed = validate_body(model, body)
    if not parsed.messages:
        raise InvalidRequest("messages: at least one message is required", param="messages")
    if isinstance(parsed, MessageCreateParams) and parsed.max_tokens < 1:
        raise InvalidRequest("max_tokens: must be greater than or equal to 1", param="max_tokens")
    return parsed
