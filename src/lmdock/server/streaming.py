"""Helpers that tie a generation to its HTTP connection: SSE with keep-alive pings, and cancellation of
non-streaming work when the client goes away."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

from starlette.requests import Request

from lmdock.core.errors import LmdockError

T = TypeVar("T")
_DONE = object()


def ping_interval() -> float:
    """Seconds between keep-alive pings while nothing else is sent (Claude Code aborts after ~300 s)."""
    return float(os.environ.get("LMDOCK_PING_INTERVAL", "10"))


async def with_pings(events: AsyncIterator[T], interval: float) -> AsyncIterator[T | None]:
    """Yield from `events`, and yield None whenever `interval` seconds pass without an event."""
    queue: asyncio.Queue = asyncio.Queue(maxsize=64)

    async def pump() -> None:
        try:
            async for item in events:
                await queue.put(item)
            await queue.put(_DONE)
        except BaseException as exc:  # hand failures to the consumer, which re-raises them
            await queue.put(exc)

    task = asyncio.create_task(pump())
    try:
        while True:
            try:
                item = await asyncio.wait_for(queue.get(), timeout=interval)
            except TimeoutError:
                yield None
                continue
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
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
