"""The model list in a shape both SDKs parse: Anthropic's ModelInfo page plus OpenAI's list fields."""

from __future__ import annotations

from datetime import UTC, datetime

from anthropic.types import ModelInfo

from lmdock.core.errors import InvalidRequest
from lmdock.models.load_plan import LoadOptions, plan_load
from lmdock.models.manager import ModelManager
from lmdock.models.store import ModelRecord
from lmdock.upstream.listing import upstream_model_info


def model_info(manager: ModelManager, record: ModelRecord) -> dict:
    mtime = int(record.path.stat().st_mtime)
    loaded = manager.loaded.get(record.key)
    # the served window: the loaded context, or the one a load would give (not the trained one)
    if loaded is not None:
        context: int | None = loaded.n_ctx
    elif record.metadata.error:
        context = None  # listed, but not loadable
    else:
        context = plan_load(record, manager.settings, LoadOptions()).context_length
    info = ModelInfo(
        type="model",
        id=record.key,
        display_name=record.metadata.name or record.key,
        created_at=datetime.fromtimestamp(mtime, tz=UTC),
        lifecycle="active",
        max_input_tokens=context,
        max_tokens=context,
    ).model_dump(mode="json", exclude_none=True)
    # OpenAI's Model fields, so `openai.models.list()` parses the same endpoint
    info.update(object="model", created=mtime, owned_by=record.publisher or "lmdock")
    if record.metadata.error:  # listed, but marked unusable with the reason
        info["error"] = record.metadata.error
    return info


def list_models_page(
    manager: ModelManager, *, limit: int = 20, after_id: str | None = None, before_id: str | None = None
) -> dict:
    if not 1 <= limit <= 1000:
        raise InvalidRequest("limit: must be between 1 and 1000", param="limit")
    upstreams = {u.key: u for u in manager.upstreams}
    records: list = list(upstreams.values()) + [r for r in manager.records() if r.key not in upstreams]
    ids = [r.key for r in records]
    start, end = 0, len(records)
    if after_id is not None:
        start = ids.index(after_id) + 1 if after_id in ids else len(ids)
    if before_id is not None:
        end = ids.index(before_id) if before_id in ids else 0
    if before_id is not None and after_id is None:
        start = max(0, end - limit)
    page = records[start : min(end, start + limit)]
    data = [upstream_model_info(r) if r.key in upstreams else model_info(manager, r) for r in page]
    return {
        "object": "list",
        "data": data,
        "has_more": start + len(page) < end if before_id is None else start > 0,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
    }
