"""Pure-ASGI middleware: request ids, browser safety (Host, Origin, content type), API and admin keys,
HEAD for GET routes, and the request body limit.

Written as ASGI (not BaseHTTPMiddleware) so streaming responses pass through untouched and a client
disconnect reaches the route, which then cancels generation.

Browser safety follows what trusted local servers do (Ollama, Jupyter): a web page the user visits
must not drive the server. A foreign `Host` (DNS rebinding) is refused while lmdock listens on
loopback; a request carrying a foreign `Origin` is refused unless `--cors-origin` allows it (browsers
send `Origin` on every cross-origin POST, even the "simple" ones that skip a preflight); and a POST
with a body that is not `application/json` is refused (415). Same-origin requests — a web app served
by lmdock itself — pass, and so do the SDKs, Claude Code and the CLI, which send no `Origin`.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Iterable
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lmdock.core.errors import RequestTooLarge
from lmdock.core.owner import ANONYMOUS, Principal, key_owner
from lmdock.http.errors import error_response, new_request_id
from lmdock.http.web import is_public_path

_OPEN_PATHS = ("/health", "/metrics")
# Routes that change what the server holds (load, unload, download): --admin-key guards them.
ADMIN_PATHS = ("/api/v1/models/load", "/api/v1/models/unload", "/api/v1/models/download")
_LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


def _host_name(host: str) -> str:
    """`Host`-header value without port, brackets and trailing dot, lower-cased."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host[1:]
    if host.count(":") == 1:
        host = host.split(":", 1)[0]
    return host.rstrip(".")


def _is_loopback_name(name: str) -> bool:
    if name in _LOOPBACK_NAMES or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class HostPolicy:
    """Which `Host` headers are served. While bound to a loopback address, only loopback names, the bound
    address and `--allowed-host` values; bound elsewhere (which requires an API key), any host unless
    `--allowed-host` lists some. `*` allows every host."""

    def __init__(self, bind_host: str, allowed: Iterable[str]) -> None:
        allowed = [a.strip().lower() for a in allowed if a.strip()]
        self.any = "*" in allowed or (not allowed and not _is_loopback_name(_host_name(bind_host)))
        self.names = {_host_name(a) for a in allowed} | {_host_name(bind_host)}

    def allows(self, host: str | None) -> bool:
        if self.any or not host:
            return True
        name = _host_name(host)
        return name in self.names or _is_loopback_name(name)


def _same_origin(origin: str, host: str | None) -> bool:
    parts = urlsplit(origin)
    return bool(host) and parts.scheme in ("http", "https") and parts.netloc.lower() == host.strip().lower()


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


# routes whose documented request size exceeds the general limit (Message Batches: 256 MB)
_LARGE_BODY_PATHS = {"/v1/messages/batches": 256 << 20}


class RequestContext:
    """Assigns `request-id`, applies browser safety, enforces keys (constant-time), caps the body size."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        api_keys: list[str],
        max_body_bytes: int,
        admin_keys: list[str] | None = None,
        hosts: HostPolicy | None = None,
        cors_origins: list[str] | None = None,
    ) -> None:
        self.app = app
        self.api_keys = [k.encode() for k in api_keys]
        self.admin_keys = [k.encode() for k in admin_keys or []]
        self.max_body_bytes = max_body_bytes
        self.hosts = hosts or HostPolicy("127.0.0.1", [])
        self.cors_origins = set(cors_origins or [])

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = new_request_id()
        scope.setdefault("state", {})["request_id"] = rid
        head = scope["method"] == "HEAD"
        if head:  # answered like GET, without the body
            scope = {**scope, "method": "GET"}
        request = Request(scope)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                if not any(k.lower() == b"request-id" for k, _ in headers):
                    headers.append((b"request-id", rid.encode()))
                message["headers"] = headers
            elif head and message["type"] == "http.response.body":
                message = {**message, "body": b""}
            await send(message)

        refusal = self._refusal(request)
        if refusal is not None:
            status, kind, text = refusal
            await error_response(request, status, kind, text)(scope, receive, send_with_id)
            return
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > self._limit(scope):
            response = error_response(
                request, 413, "request_too_large", f"request body exceeds {self._limit(scope)} bytes"
            )
            await response(scope, receive, send_with_id)
            return
        scope["state"]["principal"] = self._principal(request)
        await self.app(scope, self._limited(receive, request, send_with_id), send_with_id)

    def _refusal(self, request: Request) -> tuple[int, str, str] | None:
        """Why a request is refused before it reaches a route, or None."""
        headers = request.headers
        host = headers.get("host")
        if not self.hosts.allows(host):
            return 403, "permission_error", f"host '{host}' is not allowed (see --allowed-host)"
        origin = headers.get("origin")
        if origin is not None and not (
            _same_origin(origin, host) or origin in self.cors_origins or "*" in self.cors_origins
        ):
            return 403, "permission_error", f"origin '{origin}' is not allowed (see --cors-origin)"
        method = request.method
        if method in _BODY_METHODS and self._has_body(request):
            content_type = headers.get("content-type")
            if content_type is not None and not _is_json(content_type):
                return 415, "invalid_request_error", "content-type must be application/json"
        if method == "OPTIONS":
            return None
        path = request.url.path
        if self.admin_keys and method == "POST" and path.startswith(ADMIN_PATHS):
            if not self._offers(request, self.admin_keys):
                return 401, "authentication_error", "this route requires the admin key (--admin-key)"
            return None
        if path in _OPEN_PATHS or is_public_path(path) or not self.api_keys:
            return None
        if not self._offers(request, self.api_keys + self.admin_keys):
            return 401, "authentication_error", "invalid x-api-key: provide a valid API key"
        return None

    def _principal(self, request: Request) -> Principal:
        """Whom the request acts for: the owner of what it stores, and whether it may see everything."""
        admin = self._offered(request, self.admin_keys)
        if admin is not None:
            return Principal(key_owner(admin), admin=True)
        key = self._offered(request, self.api_keys)
        return Principal(key_owner(key)) if key is not None else ANONYMOUS

    @staticmethod
    def _has_body(request: Request) -> bool:
        length = request.headers.get("content-length")
        return "transfer-encoding" in request.headers or (length is not None and length.strip() != "0")

    def _limit(self, scope: Scope) -> int:
        return max(self.max_body_bytes, _LARGE_BODY_PATHS.get(scope["path"], 0))

    @classmethod
    def _offers(cls, request: Request, keys: list[bytes]) -> bool:
        return cls._offered(request, keys) is not None

    @staticmethod
    def _offered(request: Request, keys: list[bytes]) -> bytes | None:
        """The key of `keys` the request offers (x-api-key or bearer), compared in constant time."""
        offered = request.headers.get("x-api-key", "")
        auth = request.headers.get("authorization", "")
        bearer = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
        for key in keys:
            for candidate in (offered, bearer):
                if candidate and hmac.compare_digest(key, candidate.encode("utf-8", "replace")):
                    return key
        return None

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
                    raise RequestTooLarge(f"request body exceeds {limit} bytes")
            return message

        return wrapped
