"""An upstream stream that has delivered its first chunk, read by a task of its own.

The stream is read into a small queue by a reader task started when the request is accepted, and the
consumer (a route, through the session) takes chunks from the queue. A consumer cancelled because its
client left (Starlette cancels it inside a task-group scope, again and again) therefore never
interrupts a network read half-way: an interrupted read can leave httpcore unable to close the
connection, and the upstream would go on generating for nobody. `release()` is synchronous: it cancels
the reader once, and the reader closes the connection cleanly.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx

from lmdock.upstream.budget import OutputBudget
from lmdock.upstream.errors import (
    BadStream,
    UpstreamError,
    UpstreamTimeout,
    client_error,
    error_message,
    overflow_of,
)
from lmdock.upstream.reading import StreamErrorBody
from lmdock.upstream.router import Node

READ_AHEAD = 32  # chunks the reader may hold before the consumer takes them
_END = object()


@dataclass
class Opened:
    """A stream that has delivered its first chunk; iterate `chunks()` for it and the rest."""

    name: str  # the upstream's, for messages
    timeout: float
    node: Node
    response: httpx.Response
    first: dict[str, Any]
    rest: AsyncIterator[dict[str, Any]]
    started: float
    max_tokens: int | None = None  # what the request may generate: enforced here, whatever the upstream does
    clamped: bool = False
    _released: bool = field(default=False, repr=False)
    _queue: asyncio.Queue = field(default_factory=lambda: asyncio.Queue(READ_AHEAD), repr=False)
    _reader: asyncio.Task | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def _all(self) -> AsyncIterator[dict[str, Any]]:
        yield self.first
        async for chunk in self.rest:
            yield chunk

    async def _read(self) -> None:
        """The reader task: chunks within max_tokens into the queue, then the end (or the failure);
        the connection is closed when it stops, however it stops."""
        try:
            try:
                async for chunk in OutputBudget(self.max_tokens).limit(self._all()):
                    await self._queue.put(chunk)
                end: object = _END
            except Exception as exc:  # handed to the consumer, which raises it
                end = exc
            await self._queue.put(end)
        finally:
            with contextlib.suppress(Exception):
                await self.response.aclose()

    async def chunks(self) -> AsyncGenerator[dict[str, Any], None]:
        """Every chunk within the request's max_tokens; the stream is released when they end."""
        try:
            while (item := await self._queue.get()) is not _END:
                if isinstance(item, Exception):
                    raise item
                yield item
        except httpx.TimeoutException:
            self.node.stats.errors += 1
            raise UpstreamTimeout(f"upstream '{self.name}' stopped streaming for {self.timeout:g}s") from None
        except httpx.TransportError as exc:
            self.node.stats.errors += 1
            self.node.mark_down(f"stream broke: {exc!r}")
            raise UpstreamError(f"upstream '{self.name}' broke off the stream: {exc}") from None
        except BadStream:
            self.node.stats.errors += 1
            raise
        except StreamErrorBody as err:  # the upstream reported a failure mid-stream
            self.node.stats.errors += 1
            message = error_message(err.body, "error")
            raise client_error(self.name, 500, err.body, overflow_of(err.body, message)) from None
        finally:
            self.release()

    def release(self) -> None:
        """Stop reading and close the connection (idempotent): the stream ended, or its client left."""
        if self._released:
            return
        self._released = True
        self.node.outstanding -= 1
        self.node.stats.seconds_total += time.monotonic() - self.started
        if self._reader is not None:
            self._reader.cancel()
