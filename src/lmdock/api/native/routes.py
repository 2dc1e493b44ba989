"""The model-management API (`/api/v1`, after LM Studio's): list with state, load, unload, download
jobs. The CLI (`lmdock ps/load/unload`) is a client of these routes."""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import asdict

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from lmdock.api.native.catalog import instance_config, model_entry
from lmdock.api.request_log import note_usage
from lmdock.api.services import download_jobs_of, manager_of
from lmdock.api.validation import read_json, validate_body
from lmdock.core.errors import InvalidRequest, ModelNotFound
from lmdock.core.kv_cache import check_cache_type, flash_attn_value
from lmdock.models.downloads import parse_spec, plan_download
from lmdock.models.load_plan import LoadOptions, plan_load
from lmdock.models.manager import ModelManager
from lmdock.upstream.listing import upstream_entry

router = APIRouter(prefix="/api/v1")

_PATH_LIKE = re.compile(r"^(?:/|~|[A-Za-z]:)|\\|(?:^|/)\.\.(?:/|$)")


class _Body(BaseModel):
    model_config = ConfigDict(extra="allow")


class LoadConfig(_Body):
    context_length: int | None = Field(default=None, ge=256)
    parallel: int | None = Field(default=None, ge=1, le=64)
    flash_attention: bool | None = None  # LM Studio's
    kv_cache_type: str | None = None  # LM Studio's: K and V
    cache_type_k: str | None = None  # llama.cpp's names, beside LM Studio's
    cache_type_v: str | None = None
    flash_attn: str | None = None  # on | off | auto
    ttl: int | None = Field(default=None, ge=1)

    def kv_options(self) -> tuple[str | None, str | None, str | None]:
        """(cache_type_k, cache_type_v, flash_attn) from either vocabulary; both given and different is
        a 400 naming the pair."""
        fa = None if self.flash_attention is None else flash_attn_value(self.flash_attention)
        return (
            _one_of(self.cache_type_k, "cache_type_k", self.kv_cache_type, "kv_cache_type", check_cache_type),
            _one_of(self.cache_type_v, "cache_type_v", self.kv_cache_type, "kv_cache_type", check_cache_type),
            _one_of(self.flash_attn, "flash_attn", fa, "flash_attention", flash_attn_value),
        )


def _one_of(value, name: str, alias, alias_name: str, normalise) -> str | None:
    value = None if value is None else normalise(value, name)
    alias = None if alias is None else normalise(alias, alias_name)
    if value is not None and alias is not None and value != alias:
        raise InvalidRequest(
            f"{name}: '{value}' disagrees with {alias_name} '{alias}'; give one of them", param=name
        )
    return value if value is not None else alias


class LoadBody(LoadConfig):
    model: str = Field(min_length=1)
    config: LoadConfig | None = None  # LM Studio nests the settings; lmdock also takes them flat
    estimate_only: bool = False

    def settings(self) -> LoadConfig:
        merged = self.model_dump(include=set(LoadConfig.model_fields), exclude_none=True)
        if self.config:
            merged |= self.config.model_dump(exclude_none=True)
        return LoadConfig(**merged)


class UnloadBody(_Body):
    model: str | None = None
    instance_id: str | None = None


class DownloadBody(_Body):
    model: str = Field(min_length=1)
    quantization: str | None = None


def _check_name(name: str, manager: ModelManager | None = None) -> str:
    """Model names are keys or aliases: a file path must not reach the store lookup or the loader."""
    if _PATH_LIKE.search(name.strip()):
        raise InvalidRequest(f"model: '{name}' looks like a file path; use a model key", param="model")
    if manager is not None and manager.upstreams.get(name) is not None:
        raise InvalidRequest(
            f"model: '{name}' is served by upstream engines; there is nothing to load or unload",
            param="model",
        )
    return name


@router.get("/models")
async def list_models(request: Request):
    manager = manager_of(request)
    await manager.unload_idle()  # report state as of now, not as of the last reaper pass
    records = await asyncio.to_thread(manager.records)
    upstreams = [upstream_entry(u) for u in manager.upstreams]
    names = {u["key"] for u in upstreams}
    return {"models": upstreams + [model_entry(manager, r) for r in records if r.key not in names]}


@router.get("/models/{name}/engine")
async def engine_state(request: Request, name: str):
    """A loaded model's engine now: its queue (how long and why each request waits), its KV slots, the
    prompt cache's RAM and disk entries, and its counters (cache hits by tier, misses)."""
    manager = manager_of(request)
    record = manager.resolve(_check_name(name, manager))
    model = manager.loaded.get(record.key)
    if model is None:
        raise ModelNotFound(f"model '{record.key}' is not loaded", param="model")
    snapshot = await model.engine.snapshot()
    return {"model": record.key, **asdict(snapshot), "stats": asdict(model.engine.stats)}


@router.post("/models/load")
async def load_model(request: Request):
    body = validate_body(LoadBody, await read_json(request))
    manager = manager_of(request)
    record = manager.resolve(_check_name(body.model, manager))
    want = body.settings()
    type_k, type_v, flash_attn = want.kv_options()
    options = LoadOptions(
        ctx_size=want.context_length,
        parallel=want.parallel,
        ttl_seconds=want.ttl,
        cache_type_k=type_k,
        cache_type_v=type_v,
        flash_attn=flash_attn,
    )
    if body.estimate_only:  # an impossible KV cache combination is a 400 here too
        plan = await asyncio.to_thread(plan_load, record, manager.settings, options)
        return {"model": record.key, **plan.as_dict()}
    options.kv_cache(manager.settings.kv_cache)  # a 400 before anything is unloaded or started
    note_usage(request, record.key)
    record.check_loadable()
    started = time.monotonic()
    model = await manager.load_as_asked(record.key, options)
    return {
        "model_instance_id": model.key,
        "state": "loaded",
        "config": instance_config(model, manager.settings),
        "load_time_seconds": round(time.monotonic() - started, 3),
        "backend": model.backend(),
    }


@router.post("/models/unload")
async def unload_model(request: Request):
    body = validate_body(UnloadBody, await read_json(request))
    name = body.instance_id or body.model
    if not name:
        raise InvalidRequest("model: Field required", param="model")
    manager = manager_of(request)
    record = manager.resolve(_check_name(name, manager))
    if not await manager.unload(record.key):
        raise ModelNotFound(f"model '{record.key}' is not loaded", param="model")
    return {"instance_id": record.key, "state": "not-loaded"}


@router.post("/models/download")
async def download_model(request: Request):
    body = validate_body(DownloadBody, await read_json(request))
    spec = parse_spec(body.model, body.quantization)
    files = await asyncio.to_thread(plan_download, spec)
    job = download_jobs_of(request).start(files, manager_of(request).settings.models_dir)
    return job.to_dict()


@router.get("/models/download/status")
async def download_jobs(request: Request):
    groups: dict[str, list[dict]] = {"downloading": [], "completed": [], "failed": []}
    for job in download_jobs_of(request).jobs.values():
        entry = job.to_dict()
        groups["completed" if job.status == "already_downloaded" else job.status].append(entry)
    return groups


@router.get("/models/download/{job_id}")
@router.get("/models/download/status/{job_id}")
async def download_status(request: Request, job_id: str):
    return download_jobs_of(request).get(job_id).to_dict()
