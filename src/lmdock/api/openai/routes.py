"""Routes of the OpenAI-compatible API: /v1/chat/completions here, plus the completions and
embeddings routers. `/v1/models` is shared with the Anthropic API (api/anthropic/models.py)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from lmdock.api.limits import check_chat, limits_of
from lmdock.api.openai.completions import router as completions_router
from lmdock.api.openai.convert import to_chat_request
from lmdock.api.openai.embeddings import router as embeddings_router
from lmdock.api.openai.encode import ChatEncoder
from lmdock.api.openai.schema import ChatCompletionParams
from lmdock.api.openai.shared import model_for, read_json, sse_response, stream_frames
from lmdock.api.request_log import note_sampling, note_usage
from lmdock.api.validation import validate_body
from lmdock.http.streaming import unless_disconnected

router = APIRouter()
router.include_router(completions_router)
router.include_router(embeddings_router)


@router.post("/v1/chat/completions")
async def create_chat_completion(request: Request):
    params = validate_body(ChatCompletionParams, await read_json(request))
    chat = to_chat_request(params)  # client errors before a model is loaded for nothing
    check_chat(
        chat,
        limits_of(request),
        n_messages=len(params.messages),
        schema_key="function.parameters",
        stop_param="stop",
        format_param="response_format.json_schema.schema",
    )
    model = await model_for(request, params.model, params.ttl)
    chat.max_tokens = chat.max_tokens or model.n_ctx  # unset: the rest of the context
    prepared = await model.session.prepare(chat)
    note_sampling(request, prepared.sampling)
    encoder = ChatEncoder(
        params.model, include_usage=params.include_usage, logprobs=chat.logprobs is not None
    )
    if params.stream:
        frames = stream_frames(request, model.key, prepared.events(), encoder.feed, [encoder.first_chunk()])
        return sse_response(frames, on_close=prepared.cancel)

    async def run() -> dict:
        async for event in prepared.events():
            encoder.feed(event)
        assert encoder.done is not None
        note_usage(request, model.key, encoder.done.usage)
        return encoder.completion().model_dump(mode="json", exclude_unset=True)

    try:
        return JSONResponse(await unless_disconnected(request, run))
    finally:
        prepared.cancel()
