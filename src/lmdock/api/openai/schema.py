"""Lenient pydantic models of the OpenAI requests lmdock serves: check what is used, keep the rest.

Clients send many fields lmdock has no use for (`user`, `store`, `metadata`, `logit_bias`...), so unknown
fields are accepted everywhere. A validation problem becomes a 400 whose `param` names the field.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from lmdock.api.validation import BY_TYPE


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class StreamOptions(_Lenient):
    include_usage: bool = False


class SamplingFields(_Lenient):
    """Sampling, stops and the JIT `ttl`, the same names and limits on every OpenAI surface (chat and text
    completions, Responses; llama.cpp extensions included)."""

    model: str = Field(min_length=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, ge=0.0, le=1.0)
    top_k: int | None = Field(default=None, ge=0, le=1 << 20)
    min_p: float | None = Field(default=None, ge=0.0, le=1.0)
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    repeat_penalty: float | None = Field(default=None, ge=0.0)
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool = False
    ttl: int | None = Field(default=None, ge=1, le=1 << 31)

    @property
    def stops(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else [s for s in self.stop if s]


class GenerationParams(SamplingFields):
    """What chat and text completions share beyond sampling."""

    max_tokens: int | None = Field(default=None, ge=1, le=1 << 30)
    stream_options: StreamOptions | None = None
    n: int = Field(default=1, ge=1, le=128)

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class FunctionDefinition(_Lenient):
    name: str = Field(pattern=r"^[a-zA-Z0-9_.:-]{1,128}$")
    description: str | None = None
    parameters: dict[str, Any] | None = None


class ToolParam(_Lenient):
    type: Literal["function"] = "function"
    function: FunctionDefinition


class NamedFunction(_Lenient):
    name: str


class NamedToolChoice(_Lenient):
    type: Literal["function"] = "function"
    function: NamedFunction


class JsonSchemaFormat(_Lenient):
    name: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")


class ResponseFormat(_Lenient):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None


class UnknownPart(_Lenient):
    """A content part (or tool call) type lmdock does not know: accepted and ignored."""

    type: str


class TextPart(_Lenient):
    type: Literal["text"]
    text: str


class RefusalPart(_Lenient):
    type: Literal["refusal"]
    refusal: str


class ImageURL(_Lenient):
    url: str | None = None  # images are not used (no vision yet): an empty part is accepted
    detail: str | None = None


class ImagePart(_Lenient):
    type: Literal["image_url"]
    image_url: ImageURL


class InputAudio(_Lenient):
    data: str
    format: str


class AudioPart(_Lenient):
    type: Literal["input_audio"]
    input_audio: InputAudio


class FilePart(_Lenient):
    type: Literal["file"]
    file: dict[str, Any]


ContentPart = Annotated[TextPart | RefusalPart | ImagePart | AudioPart | FilePart | UnknownPart, BY_TYPE]


class FunctionCall(_Lenient):
    name: str
    arguments: str | dict[str, Any] = "{}"


class FunctionToolCall(_Lenient):
    type: Literal["function"]
    id: str = ""
    function: FunctionCall


ToolCallParam = Annotated[FunctionToolCall | UnknownPart, BY_TYPE]


def _default_type(kind: str):
    """Fill a missing `type` (clients often leave out `"type": "function"`), so the union picks the
    function model and reports its real problems."""

    def fill(value: Any) -> Any:
        if isinstance(value, dict) and "type" not in value:
            return {**value, "type": kind}
        return value

    return fill


class ChatMessageParam(_Lenient):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[Annotated[ToolCallParam, BeforeValidator(_default_type("function"))]] | None = None
    tool_call_id: str | None = None
    reasoning_content: str | None = None


class ChatCompletionParams(GenerationParams):
    messages: list[ChatMessageParam] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=1 << 30)
    tools: list[ToolParam] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    reasoning_effort: str | None = None
    chat_template_kwargs: dict[str, Any] | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)


class CompletionParams(GenerationParams):
    prompt: str | list[str] | list[int] | list[list[int]]
    echo: bool = False
    logprobs: int | None = Field(default=None, ge=0, le=20)


class EmbeddingParams(_Lenient):
    model: str = Field(min_length=1)
    input: str | list[str] | list[int] | list[list[int]]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, ge=1, le=1 << 20)
    ttl: int | None = Field(default=None, ge=1)
