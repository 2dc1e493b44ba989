"""Helpers that tie a generation to its HTTP connection: SSE with keep-alive pings, and cancellation of
non-streaming work when the client goes away."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from lmdock.core.errors import LmdockError

T = TypeVar("T")


async def with_pings(events: AsyncIterator[T], interval: float) -> AsyncIterator[T | None]:
    """Yield from `events`, and yield None whenever `interval` seconds pass without an event.

    The pending `__anext__` is awaited without being cancelled on a timeout, so no pump task or extra
    queue sits between the engine and the socket (one hop less per token).
    """
    pending: asyncio.Future | None = None
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(events.__anext__())
            done, _ = await asyncio.wait({pending}, timeout=interval)
            if not done:
                yield None
                continue
            task, pending = pending, None
            try:
                item = task.result()
            except StopAsyncIteration:
                return
            yield item
    finally:
        if pending is not None:
            pending.cancel()
            with contextlib.suppress(BaseException):
                await pending
        with contextlib.suppress(BaseException):
            await events.aclose()  # type: ignore[attr-defined]


async def unless_disconnected(request: Request, work: Callable[[], Awaitable[T]], poll: float = 0.25) -> T:
    """Run `work`, cancelling it if the client disconnects first (frees the engine sequence)."""
    task = asyncio.ensure_future(work())
    try:
        while not task.done():
            done, _ = await asyncio.wait({task}, timeout=poll)
            if not done and await request.is_disconnected():
                task.cancel()
                raise LmdockError("client disconnected")
        return task.result()
    finally:
        if not task.done():
            task.cancel()


class SSEResponse(StreamingResponse):
    """A server-sent-event stream that calls `on_close` when the response ends for any reason: done,
    failed, or a client that left before the first byte (Starlette then never starts the body
    iterator, so a `finally` inside it would never run and the engine sequence would decode on)."""

    def __init__(self, content: AsyncIterator[str], on_close: Callable[[], None]) -> None:
        super().__init__(
            content,
            media_type="text/event-stream; charset=utf-8",
            headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
        )
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._on_close()
            aclose = getattr(self.body_iterator, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(BaseException):
                    await aclose()
