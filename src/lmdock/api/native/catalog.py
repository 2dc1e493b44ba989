"""Model entries of the management API, in LM Studio's `/api/v1/models` shape plus lmdock's extras
(state, aliases, path, the memory estimate for the default context)."""

from __future__ import annotations

from typing import Any

from lmdock.core.config import MAX_DEFAULT_CTX, Settings
from lmdock.models.capabilities import capabilities, model_type
from lmdock.models.estimate import estimate_memory
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


def default_context(record: ModelRecord, settings: Settings) -> int:
    """The context a load without options gets (as models/loaded.py chooses it)."""
    trained = record.metadata.context_length or MAX_DEFAULT_CTX
    return settings.ctx_size or min(trained, MAX_DEFAULT_CTX)


def instance_config(model: LoadedModel, settings: Settings) -> dict[str, Any]:
    return {
        "context_length": model.n_ctx,
        "parallel": model.options.parallel or settings.parallel,
        "eval_batch_size": settings.batch_size,
        "flash_attention": model.options.flash_attn,
        "ttl_seconds": model.options.ttl_seconds,
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
        entry["memory_estimate"] = estimate_memory(
            record, default_context(record, manager.settings)
        ).as_dict()
    return entry
