"""Lenient pydantic models of the Messages request: validate what lmdock uses, ignore the rest.

Claude Code sends an open-ended, growing set of fields, block types and betas, so unknown fields are
accepted everywhere and content blocks of unknown types are accepted (with a string `type`) for the
converter to skip. Every known block is checked against the SDK's param type (anthropic.types), so a
wrong type anywhere is a 400 naming its path, e.g. `messages.2.content.0.source: Field required`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from lmdock.api.validation import BY_TYPE, validate_body
from lmdock.core import safejson
from lmdock.core.errors import InvalidRequest

TOOL_NAME = r"^[a-zA-Z0-9_.:-]{1,128}$"


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="allow")


class UnknownBlock(_Lenient):
    """A block (or source) type lmdock does not know: accepted and ignored."""

    type: str


# --- sources -------------------------------------------------------------------------------------------


class Base64Source(_Lenient):
    type: Literal["base64"]
    media_type: str
    data: str


class URLSource(_Lenient):
    type: Literal["url"]
    url: str


class FileSource(_Lenient):
    type: Literal["file"]
    file_id: str


class PlainTextSource(_Lenient):
    type: Literal["text"]
    data: str
    media_type: str | None = None


class TextBlock(_Lenient):
    type: Literal["text"]
    text: str
    citations: list[dict[str, Any]] | None = None


ImageSource = Annotated[Base64Source | URLSource | FileSource | UnknownBlock, BY_TYPE]


class ImageBlock(_Lenient):
    type: Literal["image"]
    source: ImageSource


class ContentSource(_Lenient):
    type: Literal["content"]
    content: str | list[Annotated[TextBlock | ImageBlock | UnknownBlock, BY_TYPE]]


DocumentSource = Annotated[
    Base64Source | PlainTextSource | ContentSource | URLSource | FileSource | UnknownBlock, BY_TYPE
]


# --- content blocks ------------------------------------------------------------------------------------


class DocumentBlock(_Lenient):
    type: Literal["document"]
    source: DocumentSource
    title: str | None = None
    context: str | None = None


class SearchResultBlock(_Lenient):
    type: Literal["search_result"]
    source: str
    title: str
    content: list[TextBlock]


class ToolReferenceBlock(_Lenient):
    type: Literal["tool_reference"]
    tool_name: str


class ToolResultBlock(_Lenient):
    type: Literal["tool_result"]
    tool_use_id: str
    content: (
        str
        | list[
            Annotated[
                TextBlock
                | ImageBlock
                | SearchResultBlock
                | DocumentBlock
                | ToolReferenceBlock
                | UnknownBlock,
                BY_TYPE,
            ]
        ]
        | None
    ) = None
    is_error: bool | None = None


def _object_input(value: Any) -> Any:
    """`input` is a JSON object; a JSON string holding one is accepted too (some clients send that)."""
    if isinstance(value, str):
        try:
            value = safejson.loads(value, what="input")
        except InvalidRequest as exc:
            raise ValueError(exc.message) from None
        if not isinstance(value, dict):
            raise ValueError("input must be a JSON object")
    return value


ToolInput = Annotated[dict[str, Any], BeforeValidator(_object_input)]


class ToolUseBlock(_Lenient):
    type: Literal["tool_use"]
    id: str
    name: str
    input: ToolInput


class ServerToolUseBlock(_Lenient):
    type: Literal["server_tool_use"]
    id: str
    name: str
    input: ToolInput


class ThinkingBlock(_Lenient):
    type: Literal["thinking"]
    thinking: str
    signature: str = ""


class RedactedThinkingBlock(_Lenient):
    type: Literal["redacted_thinking"]
    data: str


ContentBlock = Annotated[
    TextBlock
    | ImageBlock
    | DocumentBlock
    | SearchResultBlock
    | ToolUseBlock
    | ServerToolUseBlock
    | ToolResultBlock
    | ThinkingBlock
    | RedactedThinkingBlock
    | ToolReferenceBlock
    | UnknownBlock,
    BY_TYPE,
]


# --- request -------------------------------------------------------------------------------------------


class ToolSchema(_Lenient):
    name: str = Field(pattern=TOOL_NAME)
    description: str | None = None
    input_schema: dict[str, Any] | None = None
    type: str | None = None


class ToolChoiceParam(_Lenient):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool | None = None


class ThinkingParam(_Lenient):
    type: Literal["enabled", "disabled", "adaptive"]
    budget_tokens: int | None = Field(default=None, ge=0, le=1 << 30)


class OutputFormat(_Lenient):
    type: str = "json_schema"
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")


class OutputConfig(_Lenient):
    effort: str | None = None
    format: OutputFormat | None = None


class MessageParam(_Lenient):
    role: Literal["user", "assistant", "system"]
    content: str | list[ContentBlock]


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
    max_tokens: int = Field(le=1 << 30)
    stream: bool = False
    stop_sequences: list[str] | None = None
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, ge=0.0, le=1.0)
    top_k: int | None = Field(default=None, ge=0, le=1 << 20)
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
