"""GET /api/v1/logs/stream: the request log as Server-Sent Events, one JSON object per request."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from lmdock.api.request_log import LOG_STREAM_PATH, hub_of
from lmdock.core.config import ping_interval
from lmdock.http.streaming import with_pings

router = APIRouter()


async def _entries(queue: asyncio.Queue[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
    while True:
        yield await queue.get()


@router.get(LOG_STREAM_PATH)
async def stream_logs(request: Request):
    hub = hub_of(request.app)

    async def frames() -> AsyncIterator[str]:
        async with hub.subscribe() as queue:
            yield ": connected\n\n"  # subscribed: requests from now on will be reported
            async for entry in with_pings(_entries(queue), ping_interval()):
                yield ": ping\n\n" if entry is None else f"data: {json.dumps(entry)}\n\n"

    return StreamingResponse(frames(), media_type="text/event-stream", headers={"cache-control": "no-cache"})
