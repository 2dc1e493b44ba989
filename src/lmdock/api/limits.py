"""Per-request limits (`RequestLimits`, each a `serve` flag), checked on the protocol-neutral request
before a model is touched, so they hold wherever the engine runs. Every protocol calls these."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request

from lmdock.api.services import settings_of
from lmdock.core import safejson
from lmdock.core.config import RequestLimits
from lmdock.core.errors import InvalidRequest
from lmdock.core.request import ChatRequest


def limits_of(request: Request) -> RequestLimits:
    return settings_of(request).limits


def check_stops(stops: list[str], limits: RequestLimits, param: str) -> None:
    """Stop strings are matched on every generated token, on the engine's shared thread."""
    if len(stops) > limits.max_stop_sequences:
        raise InvalidRequest(
            f"{param}: at most {limits.max_stop_sequences} stop sequences per request "
            f"(got {len(stops)}; see --max-stop-sequences)",
            param=param,
        )
    for i, stop in enumerate(stops):
        if len(stop) > limits.max_stop_length:
            raise InvalidRequest(
                f"{param}.{i}: a stop sequence may have at most {limits.max_stop_length} characters "
                f"(got {len(stop)}; see --max-stop-length)",
                param=f"{param}.{i}",
            )


def check_schema(schema: Any, limits: RequestLimits, param: str) -> None:
    """A tool's or a response format's JSON Schema becomes a grammar: bound its depth and size."""
    if schema is None:
        return
    if safejson.depth_of(schema, limits.max_schema_depth) > limits.max_schema_depth:
        raise InvalidRequest(
            f"{param}: schema too complex: nested more than {limits.max_schema_depth} levels "
            "(see --max-schema-depth)",
            param=param,
        )
    size = len(json.dumps(schema, ensure_ascii=False).encode())
    if size > limits.max_schema_bytes:
        raise InvalidRequest(
            f"{param}: schema too complex: {size} bytes, at most {limits.max_schema_bytes} "
            "(see --max-schema-bytes)",
            param=param,
        )


def check_chat(
    req: ChatRequest,
    limits: RequestLimits,
    *,
    n_messages: int | None = None,
    tool_param: str = "tools",
    schema_key: str = "input_schema",
    stop_param: str = "stop_sequences",
    format_param: str = "output_config.format.schema",
) -> None:
    """Every limit a chat request is subject to; `*_param` name the fields in the client's protocol."""
    count = len(req.messages) if n_messages is None else n_messages
    if count > limits.max_messages:
        raise InvalidRequest(
            f"messages: at most {limits.max_messages} messages per request (got {count}; see --max-messages)",
            param="messages",
        )
    if len(req.tools) > limits.max_tools:
        raise InvalidRequest(
            f"{tool_param}: at most {limits.max_tools} tools per request (got {len(req.tools)}; "
            "see --max-tools)",
            param=tool_param,
        )
    for i, tool in enumerate(req.tools):
        check_schema(tool.parameters, limits, f"{tool_param}.{i}.{schema_key}")
    check_schema(req.response_schema, limits, format_param)
    check_stops(req.stop, limits, stop_param)
