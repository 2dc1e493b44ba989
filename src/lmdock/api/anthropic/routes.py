"""Routes of the Anthropic API: /v1/messages, /v1/messages/count_tokens, /v1/models."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import TypeVar

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from lmdock.api.anthropic.convert import to_chat_request
from lmdock.api.anthropic.encode import MessageEncoder, sse
from lmdock.api.anthropic.models import list_models_page, model_info
from lmdock.api.anthropic.schema import CountTokensParams, MessageCreateParams, parse
from lmdock.api.limits import check_chat, limits_of
from lmdock.api.request_log import note_sampling, note_usage
from lmdock.api.services import manager_of
from lmdock.api.validation import read_json
from lmdock.chat.session import PreparedChat
from lmdock.core.config import ping_interval
from lmdock.core.request import ChatRequest
from lmdock.http.errors import stream_error_event
from lmdock.http.streaming import SSEResponse, unless_disconnected, with_pings
from lmdock.models.served import ServedModel
from lmdock.upstream.listing import upstream_model_info

router = APIRouter()
log = logging.getLogger(__name__)
P = TypeVar("P", bound=CountTokensParams)


async def _checked(request: Request, schema: type[P]) -> tuple[P, ChatRequest, ServedModel]:
    """The body parsed and converted, within the request limits, and the model it names (loaded)."""
    params = parse(schema, await read_json(request))
    chat = to_chat_request(params)
    check_chat(chat, limits_of(request), n_messages=len(params.messages))
    return params, chat, await manager_of(request).get(params.model)


@router.post("/v1/messages")
async def create_message(request: Request):
    params, chat, model = await _checked(request, MessageCreateParams)
    note_usage(request, model.key)
    prepared = await model.session.prepare(chat)
    note_sampling(request, prepared.sampling)
    encoder = MessageEncoder(params.model)
    if params.stream:
        return SSEResponse(_stream(request, model.key, prepared, encoder), on_close=prepared.cancel)

    async def run() -> dict:
        async for event in prepared.events():
            for _ in encoder.feed(event):
                pass
        assert encoder.done is not None  # the engine's events always end with Done
        note_usage(request, model.key, encoder.done.usage)
        return encoder.message().model_dump(mode="json")

    try:
        return JSONResponse(await unless_disconnected(request, run))
    finally:
        prepared.cancel()


async def _stream(
    request: Request, model_key: str, prepared: PreparedChat, encoder: MessageEncoder
) -> AsyncIterator[str]:
    try:
        admitted = asyncio.ensure_future(prepared.admitted())
        try:
            while not (await asyncio.wait({admitted}, timeout=ping_interval()))[0]:
                yield ": queued\n\n"  # an SSE comment: keeps the connection alive, clients ignore it
        finally:
            admitted.cancel()
        yield sse(encoder.start_event(admitted.result()))
        async for event in with_pings(prepared.events(), ping_interval()):
            if event is None:
                yield sse({"type": "ping"})
                continue
            for wire in encoder.feed(event):
                yield sse(wire)
        if encoder.done is not None:
            note_usage(request, model_key, encoder.done.usage)
    except Exception as exc:
        yield sse(stream_error_event(exc))


@router.post("/v1/messages/count_tokens")
async def count_tokens(request: Request):
    _, chat, model = await _checked(request, CountTokensParams)
    n = await model.session.count_tokens(chat)
    return {"input_tokens": n}


@router.get("/v1/models")
async def list_models(
    request: Request, limit: int = 20, after_id: str | None = None, before_id: str | None = None
):
    return list_models_page(manager_of(request), limit=limit, after_id=after_id, before_id=before_id)


@router.get("/v1/models/{model_id:path}")
async def get_model(request: Request, model_id: str):
    manager = manager_of(request)
    upstream = manager.upstreams.get(model_id)
    if upstream is not None:
        return upstream_model_info(upstream)
    return model_info(manager, manager.resolve(model_id))
