"""Model entries of the management API, in LM Studio's `/api/v1/models` shape plus lmdock's extras
(state, aliases, path, the memory estimate for the default context)."""

from __future__ import annotations

from typing import Any

from lmdock.core.config import Settings
from lmdock.models.capabilities import capabilities, model_type
from lmdock.models.load_plan import LoadOptions, plan_load
from lmdock.models.loaded import LoadedModel
from lmdock.models.manager import ModelManager
from lmdock.models.sampling_defaults import sampling_defaults
from lmdock.models.store import ModelRecord


def params_string(n_params: int | None) -> str | None:
    """`630167424` -> `0.6B`, the way model cards write sizes."""
    if not n_params:
        return None
    for unit, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n_params >= scale:
            return f"{n_params / scale:.3g}{unit}"
    return str(n_params)


def instance_config(model: LoadedModel, settings: Settings) -> dict[str, Any]:
    kv = model.kv_cache
    return {
        "context_length": model.n_ctx,
        "parallel": model.options.parallel or settings.parallel,
        "eval_batch_size": settings.batch_size,
        "flash_attention": model.flash_attention,  # in effect (LM Studio's bool)
        "flash_attn": kv.flash_attn,  # the setting (llama.cpp's on|off|auto)
        "kv_cache_type": kv.lm_studio_type,
        "cache_type_k": kv.type_k,
        "cache_type_v": kv.type_v,
        "ttl_seconds": model.options.ttl_seconds,
    }


def memory_estimates(
    manager: ModelManager, record: ModelRecord, loaded: LoadedModel | None
) -> dict[str, Any]:
    """The estimate for the context a load would get (a loaded model: the one it has), for the
    configured KV cache and for f16 and q8_0, and whether it fits the memory available now."""
    options = LoadOptions()
    if loaded is not None:
        kv = loaded.kv_cache
        options = LoadOptions(
            ctx_size=loaded.n_ctx, cache_type_k=kv.type_k, cache_type_v=kv.type_v, flash_attn=kv.flash_attn
        )
    plan = plan_load(record, manager.settings, options)
    return {
        "memory_estimate": plan.estimate.as_dict(),
        "memory_estimates": plan.estimates(),
        "memory_available_bytes": plan.budget.available,
    }


def model_entry(manager: ModelManager, record: ModelRecord) -> dict[str, Any]:
    meta = record.metadata
    loaded = manager.loaded.get(record.key)
    state = "loaded" if loaded else "loading" if record.key in manager.loading else "not-loaded"
    if not loaded and record.key in manager.failed:
        state = "failed"
    entry: dict[str, Any] = {
        "type": model_type(record),
        "publisher": record.publisher or None,
        "key": record.key,
        "display_name": meta.name or record.key,
        "architecture": meta.architecture,
        "quantization": {"name": meta.quantization, "bits_per_weight": meta.bits_per_weight},
        "size_bytes": record.size_bytes,
        "params_string": meta.size_label or params_string(meta.n_params),
        "max_context_length": meta.context_length,
        "format": "gguf",
        "capabilities": capabilities(record).as_dict(),
        "sampling_defaults": sampling_defaults(record).as_dict(),
        "state": state,
        "loaded_instances": [],
        "aliases": record.aliases,
        "path": str(record.path),
    }
    if loaded:
        entry["loaded_instances"].append(
            {
                "id": loaded.key,
                "config": instance_config(loaded, manager.settings),
                "loaded_at": loaded.loaded_at,
                "worker": loaded.engine.report(),
                "backend": loaded.backend(),
            }
        )
    if meta.error:
        entry["error"] = meta.error
    elif state == "failed":
        entry["error"] = manager.failed[record.key]
    else:
        entry |= memory_estimates(manager, record, loaded)
    return entry
