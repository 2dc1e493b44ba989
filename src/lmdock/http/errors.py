"""Error envelopes: Anthropic's on most routes, OpenAI's on the OpenAI-compatible ones."""

from __future__ import annotations

import secrets

from fastapi import Request
from fastapi.responses import JSONResponse

from lmdock.core.errors import LmdockError, Overloaded

OPENAI_PREFIXES = ("/v1/chat/", "/v1/completions", "/v1/embeddings", "/v1/responses")

_OPENAI_TYPES = {
    "invalid_request_error": "invalid_request_error",
    "authentication_error": "invalid_request_error",
    "not_found_error": "invalid_request_error",
    "permission_error": "invalid_request_error",
    "overloaded_error": "server_error",
    "request_too_large": "invalid_request_error",
    "api_error": "server_error",
}
_STATUS_KINDS = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "request_too_large",
    415: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    529: "overloaded_error",
}


def new_request_id() -> str:
    return "req_" + secrets.token_hex(12)


def request_id_of(request: Request) -> str:
    rid = getattr(request.state, "request_id", None)
    if rid is None:
        rid = request.state.request_id = new_request_id()
    return rid


def kind_for_status(status: int) -> str:
    return _STATUS_KINDS.get(status, "api_error")


def error_response(
    request: Request,
    status: int,
    kind: str,
    message: str,
    *,
    param: str | None = None,
    retry_after: int | None = None,
) -> JSONResponse:
    rid = request_id_of(request)
    headers = {
        "request-id": rid,
        "x-should-retry": "true" if status in (408, 409, 429) or status >= 500 else "false",
    }
    if retry_after is not None:
        headers["retry-after"] = str(retry_after)
    if request.url.path.startswith(OPENAI_PREFIXES):
        body = {
            "error": {
                "message": message,
                "type": _OPENAI_TYPES.get(kind, kind),
                "param": param,
                "code": kind if kind != "invalid_request_error" else None,
            }
        }
    else:
        body = {"type": "error", "error": {"type": kind, "message": message}, "request_id": rid}
    return JSONResponse(body, status_code=status, headers=headers)


def error_from_exception(request: Request, exc: LmdockError) -> JSONResponse:
    retry_after = exc.retry_after if isinstance(exc, Overloaded) else None
    return error_response(
        request, exc.status, exc.kind, exc.message, param=exc.param, retry_after=retry_after
    )


def stream_error_event(exc: Exception) -> dict:
    """The payload of an SSE `error` event for a failure after the response started."""
    if isinstance(exc, LmdockError):
        return {"type": "error", "error": {"type": exc.kind, "message": exc.message}}
    return {"type": "error", "error": {"type": "api_error", "message": "Internal server error"}}
