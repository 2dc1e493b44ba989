"""Routes of the Message Batches API under /v1/messages/batches.

Responses are the SDK's own `MessageBatch` / `DeletedMessageBatch` shapes. `request_counts` follows the
documentation (everything is `processing` until the batch ends); live progress is in the
`lmdock-requests-completed` response header, which `lmdock batch show` reads.
"""

from __future__ import annotations

import asyncio

from anthropic.types.messages import DeletedMessageBatch
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse

from lmdock.api.anthropic.batches.schema import read_body, validate_create
from lmdock.api.anthropic.batches.store import BatchStore, batch_object, completed_count
from lmdock.api.limits import limits_of
from lmdock.api.services import manager_of, principal_of, settings_of
from lmdock.core.errors import InvalidRequest
from lmdock.storage import database

router = APIRouter()
PROGRESS_HEADER = "lmdock-requests-completed"


def _store(request: Request) -> BatchStore:
    return BatchStore(database(request.app), max_bytes=settings_of(request).batches_max_mib << 20)


def _wake_runner(request: Request) -> None:
    runner = getattr(request.app.state, "batch_runner", None)
    if runner is not None:
        runner.wake()


def _batch_response(request: Request, row) -> JSONResponse:
    return JSONResponse(
        batch_object(row, str(request.base_url)), headers={PROGRESS_HEADER: str(completed_count(row))}
    )


def _memoized(resolve):
    """Resolve each distinct model name once per batch (resolving scans the model store)."""
    seen: dict[str, object] = {}

    def cached(name: str):
        if name not in seen:
            seen[name] = resolve(name)
        return seen[name]

    return cached


@router.post("/v1/messages/batches")
async def create_batch(request: Request):
    body = await asyncio.to_thread(read_body, await request.body())  # off the loop: up to 256 MB
    manager = manager_of(request)
    resolve = _memoized(lambda name: manager.upstream_for(name) or manager.resolve(name))
    requests = await asyncio.to_thread(validate_create, body, resolve, limits_of(request))
    store = _store(request)
    principal = principal_of(request)
    batch_id = await asyncio.to_thread(store.create, requests, principal.owner)
    _wake_runner(request)
    return _batch_response(request, store.get(batch_id, principal))


@router.get("/v1/messages/batches")
async def list_batches(
    request: Request, limit: int = 20, after_id: str | None = None, before_id: str | None = None
):
    rows, has_more = _store(request).page(
        principal_of(request), limit=limit, after_id=after_id, before_id=before_id
    )
    base_url = str(request.base_url)
    data = [batch_object(r, base_url) for r in rows]
    return {
        "data": data,
        "has_more": has_more,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
    }


@router.get("/v1/messages/batches/{batch_id}")
async def retrieve_batch(request: Request, batch_id: str):
    return _batch_response(request, _store(request).get(batch_id, principal_of(request)))


@router.post("/v1/messages/batches/{batch_id}/cancel")
async def cancel_batch(request: Request, batch_id: str):
    row = _store(request).cancel(batch_id, principal_of(request))
    _wake_runner(request)
    return _batch_response(request, row)


@router.get("/v1/messages/batches/{batch_id}/results")
async def batch_results(request: Request, batch_id: str):
    store = _store(request)
    row = store.get(batch_id, principal_of(request))
    if row["status"] != "ended":
        raise InvalidRequest(
            f"message batch '{batch_id}' has not ended yet: its results are available once processing ends"
        )
    if row["archived_at"] is not None:
        raise InvalidRequest(f"the results of message batch '{batch_id}' have expired and were deleted")
    return StreamingResponse(store.result_lines(row), media_type="application/binary")


@router.delete("/v1/messages/batches/{batch_id}")
async def delete_batch(request: Request, batch_id: str):
    await asyncio.to_thread(_store(request).delete, batch_id, principal_of(request))
    return DeletedMessageBatch(id=batch_id, type="message_batch_deleted").model_dump(mode="json")
