"""What every OpenAI route needs: the body, the model (JIT-loaded, honouring `ttl`), and SSE framing."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

from fastapi import Request

from lmdock.api.openai.encode import sse_data
from lmdock.api.request_log import note_usage
from lmdock.api.services import manager_of
from lmdock.api.validation import read_json  # noqa: F401 (re-exported for the routes)
from lmdock.core.config import ping_interval
from lmdock.core.events import Done, GenerationEvent, Usage
from lmdock.http.errors import stream_error_event
from lmdock.http.streaming import SSEResponse, with_pings
from lmdock.models.served import ServedModel

DONE_FRAME = "data: [DONE]\n\n"
PING_FRAME = ": ping\n\n"  # an SSE comment: keeps the connection alive, clients skip it


async def model_for(request: Request, name: str, ttl: int | None) -> ServedModel:
    """The loaded model for a request. A request that loads it just in time may set its idle TTL
    (LM Studio's per-request `ttl`); an already loaded model keeps its own."""
    manager = manager_of(request)
    model = await manager.get(name, ttl)
    note_usage(request, model.key)
    return model


def sse_response(frames: AsyncIterator[str], on_close: Callable[[], None] = lambda: None) -> SSEResponse:
    """The SSE response; `on_close` (cancel the generation) runs however the response ends."""
    return SSEResponse(frames, on_close=on_close)


async def stream_frames(
    request: Request,
    model_key: str,
    events: AsyncIterator[GenerationEvent],
    encode: Callable[[GenerationEvent], Iterable[Any]],
    first: Iterable[Any] = (),
    usage: Callable[[], Usage] | None = None,
) -> AsyncIterator[str]:
    """SSE frames for one generation: `first`, each event's encoding, pings while idle, then [DONE].

    A failure after the stream started becomes an `error` frame, which the openai SDK raises. The
    request log gets `usage()` (a total over several generations) or else the Done event's usage."""
    for payload in first:
        yield sse_data(payload)
    try:
        async for event in with_pings(events, ping_interval()):
            if event is None:
                yield PING_FRAME
                continue
            if isinstance(event, Done):
                note_usage(request, model_key, usage() if usage else event.usage)
            for payload in encode(event):
                yield sse_data(payload)
    except Exception as exc:
        error = stream_error_event(exc)["error"]
        yield sse_data(
            {"error": {"message": error["message"], "type": error["type"], "param": None, "code": None}}
        )
        return
    yield DONE_FRAME
