"""Pure-ASGI middleware: request ids, API-key auth and the request body limit.

Written as ASGI (not BaseHTTPMiddleware) so streaming responses pass through untouched and a client
disconnect reaches the route, which then cancels generation.
"""

from __future__ import annotations

import hmac

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lmdock.server.errors import error_response, new_request_id
from lmdock.server.web import is_public_path

_OPEN_PATHS = ("/health", "/metrics")
# routes whose documented request size exceeds the general limit (Message Batches: 256 MB)
_LARGE_BODY_PATHS = {"/v1/messages/batches": 256 << 20}


class RequestContext:
    """Assigns `request-id`, enforces API keys (constant-time) and caps the body size."""

    def __init__(self, app: ASGIApp, *, api_keys: list[str], max_body_bytes: int) -> None:
        self.app = app
        self.api_keys = [k.encode() for k in api_keys]
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = new_request_id()
        scope.setdefault("state", {})["request_id"] = rid
        request = Request(scope)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                if not any(k.lower() == b"request-id" for k, _ in headers):
                    headers.append((b"request-id", rid.encode()))
                message["headers"] = headers
            await send(message)

        if scope["method"] != "OPTIONS" and self.api_keys and not self._authorized(request):
            response = error_response(
                request, 401, "authentication_error", "invalid x-api-key: provide a valid API key"
            )
            await response(scope, receive, send_with_id)
            return
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > self._limit(scope):
            response = error_response(
                request, 413, "request_too_large", f"request body exceeds {self._limit(scope)} bytes"
            )
            await response(scope, receive, send_with_id)
            return
        await self.app(scope, self._limited(receive, request, send_with_id), send_with_id)

    def _limit(self, scope: Scope) -> int:
        return max(self.max_body_bytes, _LARGE_BODY_PATHS.get(scope["path"], 0))

    def _authorized(self, request: Request) -> bool:
        if request.url.path in _OPEN_PATHS or is_public_path(request.url.path):
            return True
        offered = request.headers.get("x-api-key", "")
        auth = request.headers.get("authorization", "")
        bearer = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
        return any(
            hmac.compare_digest(key, candidate.encode())
            for key in self.api_keys
            for candidate in (offered, bearer)
            if candidate
        )

    def _limited(self, receive: Receive, request: Request, send: Send) -> Receive:
        """Count body bytes as they arrive (chunked uploads have no content-length)."""
        seen = 0
        limit = self._limit(request.scope)

        async def wrapped() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge(limit)
            return message

        return wrapped


class BodyTooLarge(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(f"request body exceeds {limit} bytes")
