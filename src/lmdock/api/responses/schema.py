"""Lenient pydantic model of a Responses API request: check what is used, keep the rest.

Clients (Codex, the Agents SDK) send fields lmdock has no use for (`prompt_cache_key`, `service_tier`,
`safety_identifier`...), so unknown fields are accepted. `input` items and `tools` stay plain dicts here:
convert.py checks them one by one so an error names the exact item (`input.3.type`).
"""

from __future__ import annotations

from typing import Any, Literal

from openai.types.shared import ReasoningEffort
from pydantic import BaseModel, ConfigDict, Field

from lmdock.api.openai.schema import SamplingFields

LOGPROBS_INCLUDE = "message.output_text.logprobs"


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class TextFormat(_Lenient):
    type: Literal["text", "json_object", "json_schema"]
    name: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    description: str | None = None
    strict: bool | None = None


class TextConfig(_Lenient):
    format: TextFormat | None = None
    verbosity: str | None = None


class ReasoningConfig(_Lenient):
    """The values the Response repeats must be the ones the SDK's `Reasoning` type allows."""

    effort: ReasoningEffort = None
    summary: Literal["auto", "concise", "detailed"] | None = None


class ResponseCreateParams(SamplingFields):
    input: str | list[dict[str, Any]] | None = None
    instructions: str | None = None
    previous_response_id: str | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    text: TextConfig | None = None
    reasoning: ReasoningConfig | None = None
    max_output_tokens: int | None = Field(default=None, ge=1)
    metadata: dict[str, str] | None = Field(default=None, max_length=16)
    truncation: Literal["auto", "disabled"] | None = None
    store: bool | None = None
    include: list[str] | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    user: str | None = None

    @property
    def stored(self) -> bool:
        return self.store is not False  # OpenAI's default is to store

    @property
    def wants_logprobs(self) -> bool:
        return LOGPROBS_INCLUDE in (self.include or [])
