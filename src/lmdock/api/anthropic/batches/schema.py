"""Validation of a Message Batch create request, up front.

The batch itself (the `requests` list, each `custom_id`, the documented limits) is validated strictly: a
problem there is a 400 for the whole batch. Each request's `params` is validated exactly as
`POST /v1/messages` validates a body; a request that fails is stored as an `errored` result with that
error, and the rest of the batch runs.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from typing import Any

from lmdock.api.anthropic.batches.store import NewRequest
from lmdock.api.anthropic.convert import to_chat_request
from lmdock.api.anthropic.schema import MessageCreateParams, parse
from lmdock.api.limits import check_chat
from lmdock.core import safejson
from lmdock.core.config import RequestLimits
from lmdock.core.errors import InvalidRequest, LmdockError
from lmdock.core.request import ChatRequest

MAX_REQUESTS = 100_000  # Anthropic's documented limits per batch
MAX_BATCH_BYTES = 256 << 20
_PARAMS_DEPTH = 3  # {"requests": [{"params": ...}]}: the levels around each request's params
_CUSTOM_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
# error types the SDK's ErrorObject union knows; anything else is reported by status class
_WIRE_KINDS = {
    "invalid_request_error",
    "authentication_error",
    "billing_error",
    "permission_error",
    "not_found_error",
    "rate_limit_error",
    "timeout_error",
    "api_error",
    "overloaded_error",
}


def error_body(exc: LmdockError) -> dict[str, Any]:
    """An ErrorResponse for an `errored` result."""
    kind = (
        exc.kind
        if exc.kind in _WIRE_KINDS
        else ("invalid_request_error" if exc.status < 500 else "api_error")
    )
    return {"type": "error", "error": {"type": kind, "message": exc.message}}


def prefix_key(params: dict[str, Any]) -> str:
    """Requests with the same model, system prompt and tools render the same prompt prefix."""
    head = [params.get("model"), params.get("system"), params.get("tools")]
    return hashlib.sha1(json.dumps(head, sort_keys=True, default=str).encode()).hexdigest()[:16]


def parse_params(params: dict[str, Any], limits: RequestLimits) -> tuple[MessageCreateParams, ChatRequest]:
    """Validate one request's params as /v1/messages validates a body: fields, conversion, and the
    server's per-request limits (so an over-limit request is errored and never reaches the engine)."""
    parsed = parse(MessageCreateParams, params)
    if parsed.stream:
        raise InvalidRequest("stream: streaming is not supported in a Message Batch", param="stream")
    chat = to_chat_request(parsed)
    check_chat(chat, limits, n_messages=len(parsed.messages))
    return parsed, chat


def read_body(raw: bytes) -> Any:
    """The create body, read as every request body is (core.safejson), one level of nesting allowed
    per enclosing `requests[i].params`, so each request's params get the depth /v1/messages allows."""
    return safejson.loads(raw, max_depth=safejson.MAX_DEPTH + _PARAMS_DEPTH)


def _params_error(
    params: dict[str, Any], resolve_model: Callable[[str], object], limits: RequestLimits
) -> dict | None:
    try:
        parsed, _ = parse_params(params, limits)
        resolve_model(parsed.model)
    except LmdockError as exc:
        return error_body(exc)
    return None


def validate_create(
    body: Any, resolve_model: Callable[[str], object], limits: RequestLimits
) -> list[NewRequest]:
    """The batch's requests, each with its per-request error (if any); raises for a malformed batch."""
    if not isinstance(body, dict):
        raise InvalidRequest("request body must be a JSON object")
    requests = body.get("requests")
    if requests is None:
        raise InvalidRequest("requests: Field required", param="requests")
    if not isinstance(requests, list):
        raise InvalidRequest("requests: Input should be a valid list", param="requests")
    if not requests:
        raise InvalidRequest("requests: a batch needs at least one request", param="requests")
    if len(requests) > MAX_REQUESTS:
        raise InvalidRequest(
            f"requests: a batch holds at most {MAX_REQUESTS} requests, got {len(requests)}", param="requests"
        )
    out: list[NewRequest] = []
    seen: set[str] = set()
    for i, item in enumerate(requests):
        where = f"requests.{i}"
        if not isinstance(item, dict):
            raise InvalidRequest(f"{where}: Input should be a valid dictionary", param=where)
        custom_id = item.get("custom_id")
        if custom_id is None:
            raise InvalidRequest(f"{where}.custom_id: Field required", param=f"{where}.custom_id")
        if not isinstance(custom_id, str) or not _CUSTOM_ID.match(custom_id):
            raise InvalidRequest(
                f"{where}.custom_id: String should match pattern '^[a-zA-Z0-9_-]{{1,64}}$'",
                param=f"{where}.custom_id",
            )
        if custom_id in seen:
            raise InvalidRequest(
                f"{where}.custom_id: duplicate custom_id '{custom_id}' (each must be unique in a batch)",
                param=f"{where}.custom_id",
            )
        seen.add(custom_id)
        params = item.get("params")
        if params is None:
            raise InvalidRequest(f"{where}.params: Field required", param=f"{where}.params")
        if not isinstance(params, dict):
            raise InvalidRequest(
                f"{where}.params: Input should be a valid dictionary", param=f"{where}.params"
            )
        out.append(
            NewRequest(
                custom_id=custom_id,
                params=json.dumps(params, separators=(",", ":"), ensure_ascii=False),
                prefix_key=prefix_key(params),
                error=_params_error(params, resolve_model, limits),
            )
        )
    return out
