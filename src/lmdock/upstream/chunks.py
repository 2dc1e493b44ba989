"""The shape of what an upstream streams, checked before anything reads it.

The translators read a handful of fields from each chunk (`choices[].delta.content`, tool-call pieces,
`finish_reason`, `usage`, llama-server's `timings`). An upstream is untrusted, so every chunk is
validated against the types those fields must have and passed on in that normalised form: a chunk that
does not fit is a `BadStream` (a 502 before the first chunk, an error event after it), never a
TypeError deep in a translator. Fields lmdock does not read are kept as they came.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from lmdock.upstream.errors import BadStream


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class _Function(_Open):
    name: str | None = None
    arguments: str | None = None


class _ToolCall(_Open):
    index: int = 0
    id: str | None = None
    function: _Function | None = None


class _Delta(_Open):
    content: str | None = None
    reasoning_content: str | None = None
    reasoning: str | None = None
    tool_calls: list[_ToolCall] | None = None


class _Choice(_Open):
    index: int = 0
    delta: _Delta | None = None
    message: _Delta | None = None  # a non-streamed completion's
    text: str | None = None
    finish_reason: str | None = None


class _Details(_Open):
    cached_tokens: int | None = None


class _Usage(_Open):
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    prompt_tokens_details: _Details | None = None


class _Timings(_Open):
    cache_n: int | None = None


class _Chunk(_Open):
    choices: list[_Choice] | None = None
    usage: _Usage | None = None
    timings: _Timings | None = None


def checked_chunk(obj: dict[str, Any]) -> dict[str, Any]:
    """`obj` with the fields lmdock reads checked and normalised (`"3"` tokens become 3)."""
    try:
        return _Chunk.model_validate(obj).model_dump(exclude_unset=True)
    except ValidationError as err:
        first = err.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"])
        raise BadStream(f"upstream sent a chunk lmdock cannot read: {where}: {first['msg']}") from None


def completion_as_chunk(body: dict[str, Any]) -> dict[str, Any]:
    """A non-streamed completion (checked) as one streamed chunk."""
    body = checked_chunk(body)
    choices = []
    for choice in body.get("choices") or []:
        message = dict(choice.get("message") or {})
        if "text" in choice:
            message["content"] = choice["text"]
        for i, call in enumerate(message.get("tool_calls") or []):
            call.setdefault("index", i)
        choices.append(
            {
                "index": choice.get("index", 0),
                "delta": message,
                "text": choice.get("text"),
                "finish_reason": choice.get("finish_reason"),
            }
        )
    return {"choices": choices, "usage": body.get("usage"), "timings": body.get("timings")}
