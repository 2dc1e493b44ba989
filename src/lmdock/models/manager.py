"""Which models exist, which are loaded, and what a requested model name means.

Names resolve in this order: an upstream model's name (lmdock.upstream), a loaded or stored model's key, one of its aliases, then any `claude-*`
name (Claude Code's background and subagent calls) to the default model. Anything else is a 404 that
lists what exists. Loading happens in a worker thread; a failed load leaves the server serving.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

from lmdock.core.config import Settings
from lmdock.core.errors import LmdockError, ModelFailed, ModelLoadError, ModelNotFound
from lmdock.models import store
from lmdock.models.default_model import DEFAULT_MODEL_KEY, HOW_TO_GET_A_MODEL, default_model_path
from lmdock.models.load_plan import LoadOptions, plan_load
from lmdock.models.loaded import LoadedModel, load
from lmdock.models.served import ServedModel
from lmdock.upstream import UpstreamModel, UpstreamRegistry, specs_of

log = logging.getLogger(__name__)


class ModelManager:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.loaded: dict[str, LoadedModel] = {}
        self.loading: set[str] = set()
        self.failed: dict[str, str] = {}  # key -> why its worker was given up on
        self._lock = asyncio.Lock()
        self._explicit: store.ModelRecord | None = None
        self.upstreams = UpstreamRegistry(specs_of(settings))
        if settings.model and Path(settings.model).suffix == ".gguf":
            self._explicit = store.record_for(Path(settings.model).expanduser())

    # --- catalogue ---------------------------------------------------------------------------------

    def records(self) -> list[store.ModelRecord]:
        records = store.scan(self.settings.models_dir)
        if self._explicit and all(r.path != self._explicit.path for r in records):
            records.insert(0, self._explicit)
        return records

    @property
    def default_key(self) -> str:
        if self._explicit:
            return self._explicit.key
        if self.settings.model:
            return self.settings.model
        if default_model_path(self.settings.models_dir).is_file():
            return DEFAULT_MODEL_KEY
        records = self.records()
        return records[0].key if records else DEFAULT_MODEL_KEY

    def upstream_for(self, name: str) -> UpstreamModel | None:
        """The upstream model a name means: its own name, or `claude-*` / `default` when it is the default."""
        model = self.upstreams.get(name)
        wanted = name.strip().lower()
        if model is None and (wanted.startswith("claude") or wanted in ("default", "")):
            model = self.upstreams.get(self.default_key)
        return model

    def resolve(self, name: str) -> store.ModelRecord:
        wanted = name.strip().lower()
        records = self.records()
        for r in records:
            if wanted == r.key or wanted in r.aliases:
                return r
        if wanted.startswith("claude") or wanted in ("default", ""):
            default = self.default_key.lower()
            for r in records:
                if r.key == default or default in r.aliases:
                    return r
        available = (
            ", ".join([u.key for u in self.upstreams] + [r.key for r in records])
            or f"none yet: {HOW_TO_GET_A_MODEL}"
        )
        raise ModelNotFound(f"model '{name}' not found; available models: {available}", param="model")

    # --- lifecycle ---------------------------------------------------------------------------------

    async def get(self, name: str, ttl: int | None = None) -> ServedModel:
        """The loaded model for a request, loading it just in time if needed. A request that causes the
        load may set the model's idle TTL (LM Studio's per-request `ttl`); a loaded model keeps its own."""
        upstream = self.upstream_for(name)
        if upstream is not None:
            upstream.touch()
            return upstream
        record = self.resolve(name)
        model = self.loaded.get(record.key)
        if model is None and record.key in self.failed:
            raise ModelFailed(self.failed[record.key])
        if model is None:
            jit_ttl = ttl if ttl is not None else self.settings.ttl
            model = await self.load(record.key, LoadOptions(ttl_seconds=jit_ttl))
        model.touch()
        return model

    async def load(self, name: str, options: LoadOptions | None = None) -> LoadedModel:
        record = self.resolve(name)
        record.check_loadable()
        async with self._lock:
            if record.key in self.loaded:
                return self.loaded[record.key]
            evict = sorted(self.loaded.values(), key=lambda m: m.last_used)
            evict = evict[: max(0, len(evict) - max(1, self.settings.max_loaded) + 1)]
            # checked before anything is unloaded: a load that cannot work leaves the others serving
            plan = await asyncio.to_thread(
                plan_load, record, self.settings, options or LoadOptions(), self.resident_bytes(evict)
            )
            plan.check()
            for lru in evict:
                await self._unload(lru.key)
            self.loading.add(record.key)
            self.failed.pop(record.key, None)
            try:
                started = time.monotonic()
                model = await load(plan, self.settings, self._on_failed)
            except ModelFailed as exc:
                self.failed[record.key] = exc.message
                raise
            except LmdockError:
                raise
            except Exception as exc:
                raise ModelLoadError(f"failed to load {record.key}: {exc}") from exc
            finally:
                self.loading.discard(record.key)
            log.info(
                "loaded %s in %.1fs (ctx %d, worker pid %s, buffers %s)",
                record.key,
                time.monotonic() - started,
                model.n_ctx,
                model.engine.pid,
                model.backend()["buffer_types"],
            )
            self.loaded[record.key] = model
            return model

    async def load_as_asked(self, name: str, options: LoadOptions) -> LoadedModel:
        """An explicit load: a loaded model whose settings differ from those `options` sets is
        reloaded with them; one that matches stays loaded (and takes the new TTL, if one is given)."""
        record = self.resolve(name)
        current = self.loaded.get(record.key)
        if current is not None and self._differs(current, options):
            plan = await asyncio.to_thread(
                plan_load, record, self.settings, options, self.resident_bytes([current])
            )
            plan.check()  # before the loaded model goes
            await self.unload(record.key)
        elif current is not None and options.ttl_seconds is not None:
            current.options.ttl_seconds = options.ttl_seconds
        return await self.load(record.key, options)

    def _differs(self, model: LoadedModel, want: LoadOptions) -> bool:
        return (
            (want.ctx_size is not None and want.ctx_size != model.n_ctx)
            or (
                want.parallel is not None
                and want.parallel != (model.options.parallel or self.settings.parallel)
            )
            or want.kv_cache(model.kv_cache) != model.kv_cache
        )

    @staticmethod
    def resident_bytes(models: list[LoadedModel]) -> int:
        """The memory the workers of `models` hold now (what unloading them gives back)."""
        return sum(m.engine.report().get("rss_bytes") or 0 for m in models)

    async def unload(self, name: str) -> bool:
        record = self.resolve(name)
        async with self._lock:
            return await self._unload(record.key)

    async def _unload(self, key: str) -> bool:
        """Unload a model: requests in flight finish first (up to settings.unload_grace seconds)."""
        model = self.loaded.pop(key, None)
        if model is None:
            return self.failed.pop(key, None) is not None
        await model.close(self.settings.unload_grace)
        return True

    def _on_failed(self, engine) -> None:
        """A loaded model's worker crashed again while restarting: drop it, remember why."""
        model = self.loaded.get(engine.key)
        if model is None or model.engine is not engine:
            return
        del self.loaded[engine.key]
        self.failed[engine.key] = engine.failure or f"model '{engine.key}' failed"
        asyncio.get_running_loop().create_task(model.close(0))

    async def unload_idle(self) -> list[str]:
        """Unload models idle for longer than their TTL, counted from the end of their last request and
        never while they have work in flight; returns their keys."""
        now = time.monotonic()
        expired = [
            m.key
            for m in self.loaded.values()
            if m.options.ttl_seconds and m.idle_seconds(now) > m.options.ttl_seconds
        ]
        for key in expired:
            async with self._lock:
                await self._unload(key)
        return expired

    async def close(self) -> None:
        """Server shutdown: stop every worker (requests still running get a moment, then an error)."""
        for key in list(self.loaded):
            model = self.loaded.pop(key)
            await model.close(grace=2.0)
        await self.upstreams.close()
