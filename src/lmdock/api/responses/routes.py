"""Routes of the Responses API: create (JSON or SSE), retrieve, delete, input_items, input_tokens."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from lmdock.api.limits import check_chat, limits_of
from lmdock.api.openai.shared import model_for, read_json, sse_response
from lmdock.api.request_log import note_sampling, note_usage
from lmdock.api.responses.convert import Item, namespaces_of, normalize_input, to_chat_request
from lmdock.api.responses.encode import ResponseEncoder
from lmdock.api.responses.schema import ResponseCreateParams
from lmdock.api.responses.store import ResponseStore, StoredResponse
from lmdock.api.services import principal_of, settings_of
from lmdock.api.validation import validate_body
from lmdock.chat.session import PreparedChat
from lmdock.core.config import ping_interval
from lmdock.core.errors import InvalidRequest, NotFound
from lmdock.core.events import Done
from lmdock.core.request import ChatRequest, SamplingParams
from lmdock.http.streaming import unless_disconnected, with_pings
from lmdock.models.served import ServedModel
from lmdock.storage import database

router = APIRouter()

PING_FRAME = ": ping\n\n"


class ResponseNotFound(NotFound):
    pass


def _store(request: Request) -> ResponseStore:
    state = request.app.state
    store = getattr(state, "responses_store", None)
    if store is None:
        settings = settings_of(request)
        store = state.responses_store = ResponseStore(
            database(request.app),
            max_count=settings.responses_max_stored,
            max_age_s=settings.responses_max_age * 86400,
            max_bytes=settings.responses_max_mib << 20,
        )
    return store


async def _stored(
    request: Request, response_id: str, param: str | None = None, *, with_history: bool = False
) -> StoredResponse:
    """A stored response the caller may see (another key's is a 404, like one that does not exist)."""
    store = _store(request)
    found = await asyncio.to_thread(store.get, response_id, principal_of(request), with_history=with_history)
    if found is None:
        raise ResponseNotFound(f"Response with id '{response_id}' not found.", param=param)
    return found


def _frame(event: BaseModel) -> str:
    data = event.model_dump(mode="json", exclude_unset=True, by_alias=True)
    return f"event: {data['type']}\ndata: {json.dumps(data, separators=(',', ':'), ensure_ascii=False)}\n\n"


def _function_echo(tool: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "function",
        "name": tool["name"],
        "description": tool.get("description") if isinstance(tool.get("description"), str) else None,
        "parameters": tool.get("parameters") or {"type": "object", "properties": {}},
        "strict": tool.get("strict") if isinstance(tool.get("strict"), bool) else False,
    }


def _tool_echo(tool: dict[str, Any]) -> dict[str, Any]:
    """A tool as the Response repeats it (only the fields lmdock checked)."""
    if tool.get("type") == "namespace":
        description = tool.get("description")
        return {
            "type": "namespace",
            "name": str(tool.get("name", "")),
            "description": description if isinstance(description, str) else "",
            "tools": [_function_echo(t) for t in tool.get("tools") or []],
        }
    return _function_echo(tool)


def _base(params: ResponseCreateParams, sampling: SamplingParams | None = None) -> dict[str, Any]:
    """The request's settings as every Response snapshot repeats them (`sampling`: the effective values,
    the request's own plus the model's defaults)."""
    tools = [_tool_echo(t) for t in params.tools or []]
    choice = params.tool_choice if params.tool_choice is not None else "auto"
    if isinstance(choice, dict):
        choice = {"type": "function", "name": choice["name"]}
    fmt = params.text.format if params.text else None
    if fmt is None or fmt.type == "text":
        text_format: dict[str, Any] = {"type": "text"}
    elif fmt.type == "json_object":
        text_format = {"type": "json_object"}
    else:
        text_format = {"type": "json_schema", "name": fmt.name or "response", "schema": fmt.schema_}
        if fmt.strict is not None:
            text_format["strict"] = fmt.strict
    base: dict[str, Any] = {
        "model": params.model,
        "instructions": params.instructions,
        "tools": tools,
        "tool_choice": choice,
        "parallel_tool_calls": params.parallel_tool_calls is not False,
        "temperature": sampling.temperature if sampling else params.temperature,
        "top_p": sampling.top_p if sampling else params.top_p,
        "max_output_tokens": params.max_output_tokens,
        "previous_response_id": params.previous_response_id,
        "metadata": params.metadata or {},
        "text": {"format": text_format},
        "truncation": params.truncation or "disabled",
        "background": False,
        "store": params.stored,
    }
    if params.reasoning is not None:
        base["reasoning"] = {"effort": params.reasoning.effort, "summary": params.reasoning.summary}
    if params.user is not None:
        base["user"] = params.user
    if params.top_logprobs is not None:
        base["top_logprobs"] = params.top_logprobs
    return base


async def _prepare(
    model: ServedModel, params: ResponseCreateParams, items: list[Item], chat: ChatRequest
) -> PreparedChat:
    """Admit the request; with `truncation: auto`, drop the oldest items until the prompt leaves room
    for the output (max_output_tokens, or a quarter of the context when unset)."""
    if params.truncation != "auto":
        return await model.session.prepare(chat)
    reserve = min(params.max_output_tokens or model.n_ctx // 4, model.n_ctx // 2)
    budget = model.n_ctx - reserve

    def request_from(start: int) -> ChatRequest:
        trimmed = to_chat_request(params, _without_orphans(items[start:]))
        trimmed.max_tokens = chat.max_tokens
        return trimmed

    if await model.session.count_tokens(chat) > budget and len(items) > 1:
        lo, hi = 1, len(items) - 1  # the smallest start that fits (keep at least the last item)
        while lo < hi:
            mid = (lo + hi) // 2
            if await model.session.count_tokens(request_from(mid)) <= budget:
                hi = mid
            else:
                lo = mid + 1
        chat = request_from(lo)
    return await model.session.prepare(chat)


def _without_orphans(items: list[Item]) -> list[Item]:
    """After dropping the oldest items, tool results whose call was dropped go too."""
    start = 0
    while start < len(items) - 1 and items[start]["type"] in ("function_call_output", "reasoning"):
        start += 1
    return items[start:]


def _checked(request: Request, params: ResponseCreateParams, items: list[Item]) -> ChatRequest:
    """The core request, within the server's per-request limits (issue 10's, shared by every API)."""
    chat = to_chat_request(params, items)
    check_chat(
        chat,
        limits_of(request),
        n_messages=len(items),
        schema_key="parameters",
        stop_param="stop",
        format_param="text.format.schema",
    )
    return chat


@router.post("/v1/responses")
async def create_response(request: Request):
    params = validate_body(ResponseCreateParams, await read_json(request))
    store = _store(request)
    history: list[Item] = []
    if params.previous_response_id:
        previous = await _stored(
            request, params.previous_response_id, "previous_response_id", with_history=True
        )
        history = previous.conversation()
    items = normalize_input(params.input)
    chat = _checked(request, params, history + items)  # client errors before a model is loaded for nothing
    owner = principal_of(request).owner
    if params.stored:
        await asyncio.to_thread(store.check_room, len(json.dumps(items)))
    model = await model_for(request, params.model, params.ttl)
    chat.max_tokens = chat.max_tokens or model.n_ctx  # unset: the rest of the context
    prepared = await _prepare(model, params, history + items, chat)
    note_sampling(request, prepared.sampling)
    encoder = ResponseEncoder(
        _base(params, prepared.sampling),
        logprobs=params.wants_logprobs,
        namespaces=namespaces_of(params.tools),
    )

    async def keep(response: dict[str, Any]) -> None:
        if params.stored:
            await asyncio.to_thread(store.save, response, items, history, owner)

    if params.stream:
        return sse_response(_stream(request, model.key, prepared, encoder, keep), on_close=prepared.cancel)

    async def run() -> dict:
        async for event in prepared.events():
            encoder.feed(event)
        assert encoder.done is not None
        note_usage(request, model.key, encoder.done.usage)
        response = encoder.response().model_dump(mode="json", exclude_unset=True, by_alias=True)
        await keep(response)
        return response

    try:
        return JSONResponse(await unless_disconnected(request, run))
    finally:
        prepared.cancel()  # the client left, or the answer is complete: free the engine sequence


async def _stream(
    request, model_key, prepared: PreparedChat, encoder: ResponseEncoder, keep
) -> AsyncIterator[str]:
    for event in encoder.start_events():
        yield _frame(event)
    try:
        async for event in with_pings(prepared.events(), ping_interval()):
            if event is None:
                yield PING_FRAME
                continue
            out = encoder.feed(event)
            if isinstance(event, Done):
                note_usage(request, model_key, event.usage)
                final = encoder.final  # stored before the client hears it is complete
                assert final is not None
                await keep(final.model_dump(mode="json", exclude_unset=True, by_alias=True))
            for wire in out:
                yield _frame(wire)
    except Exception as exc:
        for wire in encoder.fail(exc):
            yield _frame(wire)


@router.post("/v1/responses/input_tokens")
async def count_input_tokens(request: Request):
    params = validate_body(ResponseCreateParams, await read_json(request))
    history: list[Item] = []
    if params.previous_response_id:
        previous = await _stored(
            request, params.previous_response_id, "previous_response_id", with_history=True
        )
        history = previous.conversation()
    chat = _checked(request, params, history + normalize_input(params.input))
    model = await model_for(request, params.model, params.ttl)
    return {"object": "response.input_tokens", "input_tokens": await model.session.count_tokens(chat)}


@router.get("/v1/responses/{response_id}")
async def retrieve_response(request: Request, response_id: str):
    return JSONResponse((await _stored(request, response_id)).response)


@router.delete("/v1/responses/{response_id}")
async def delete_response(request: Request, response_id: str):
    store = _store(request)
    if not await asyncio.to_thread(store.delete, response_id, principal_of(request)):
        raise ResponseNotFound(f"Response with id '{response_id}' not found.")
    return {"id": response_id, "object": "response.deleted", "deleted": True}


@router.get("/v1/responses/{response_id}/input_items")
async def list_input_items(
    request: Request, response_id: str, limit: int = 20, order: str = "desc", after: str | None = None
):
    if not 1 <= limit <= 100:
        raise InvalidRequest("limit: must be between 1 and 100", param="limit")
    if order not in ("asc", "desc"):
        raise InvalidRequest("order: must be 'asc' or 'desc'", param="order")
    items = (await _stored(request, response_id)).input_items
    if order == "desc":
        items = items[::-1]
    if after is not None:
        ids = [i.get("id") for i in items]
        if after not in ids:
            raise InvalidRequest(f"after: no input item with id '{after}'", param="after")
        items = items[ids.index(after) + 1 :]
    page = items[:limit]
    return {
        "object": "list",
        "data": page,
        "first_id": page[0]["id"] if page else None,
        "last_id": page[-1]["id"] if page else None,
        "has_more": len(items) > limit,
    }
