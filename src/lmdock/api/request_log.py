"""A live log of finished requests (`lmdock log stream`): one entry per request, fanned out to listeners.

An ASGI middleware times every request and publishes an entry when its response ends (for a stream:
after the last event). Routes add what only they know, the model and the token counts, with
`note_usage()`; the entry picks it up from the request state when the response completes.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lmdock.chat.session import PreparedChat
from lmdock.core.events import Usage

LOG_STREAM_PATH = "/api/v1/logs/stream"
_QUEUE_SIZE = 1000


class RequestLogHub:
    """Publishes entries to every current subscriber; a subscriber that falls behind loses entries."""

    def __init__(self) -> None:
        self._queues: set[asyncio.Queue[dict[str, Any]]] = set()

    def publish(self, entry: dict[str, Any]) -> None:
        for queue in self._queues:
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(entry)

    @contextlib.asynccontextmanager
    async def subscribe(self) -> AsyncIterator[asyncio.Queue[dict[str, Any]]]:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=_QUEUE_SIZE)
        self._queues.add(queue)
        try:
            yield queue
        finally:
            self._queues.discard(queue)


def hub_of(app: Any) -> RequestLogHub:
    """The app's hub (created in the app's lifespan; the middleware and the stream route share it)."""
    return app.state.request_log


def note_prepared(request: Request, prepared: PreparedChat) -> None:
    """Record the effective sampling settings (the request's own plus the model's defaults), and the
    submitted request, whose admission (cache lookup, time queued and why) the entry reports."""
    request.state.log_sampling = prepared.sampling.as_dict()
    request.state.log_prepared = prepared


def note_usage(request: Request, model: str, usage: Usage | None = None) -> None:
    """Record the model a request used and, once generation is done, its token counts."""
    request.state.log_model = model
    if usage is not None:
        request.state.log_usage = usage


class RequestLogMiddleware:
    """Times each HTTP request and publishes its log entry when the response is complete."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] == LOG_STREAM_PATH:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            hub_of(scope["app"]).publish(_entry(scope, status, started))


def _entry(scope: Scope, status: int, started: float) -> dict[str, Any]:
    """The log entry of a request that began at `started` (time.perf_counter()) and ends now."""
    state = scope.get("state", {})
    usage: Usage | None = state.get("log_usage")
    prepared: PreparedChat | None = state.get("log_prepared")
    first = prepared.first_output_at if prepared is not None else None
    return {
        "time": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "request_id": state.get("request_id"),
        "method": scope["method"],
        "path": scope["path"],
        "status": status,
        "model": state.get("log_model"),
        "input_tokens": usage.input_tokens if usage else None,
        "output_tokens": usage.output_tokens if usage else None,
        "cached_tokens": usage.cached_tokens if usage else None,
        "spec_proposed_tokens": usage.spec_proposed_tokens if usage else None,
        "spec_accepted_tokens": usage.spec_accepted_tokens if usage else None,
        "duration_ms": round((time.perf_counter() - started) * 1000, 1),
        "ttft_ms": round((first - started) * 1000, 1) if first is not None else None,
        "sampling": state.get("log_sampling"),
        **_admission(prepared),
    }


def _admission(prepared: PreparedChat | None) -> dict[str, Any]:
    """How the engine took the request: how its cache lookup went (tier, cached and chunk-reused
    tokens, where the prompt left the nearest cached entry), how long it queued and why."""
    admitted = prepared.admission if prepared is not None else None
    if admitted is None:  # not generated locally (an upstream model), or ended before admission
        return {"cache": None, "queue_ms": None, "blocked_by": None}
    lookup = asdict(admitted.lookup) if admitted.lookup is not None else None
    return {
        "cache": lookup,
        "queue_ms": round(admitted.queue_seconds * 1000, 1),
        "blocked_by": admitted.blocked_by,
    }
