"""Upstream models in the model lists: /v1/models (Anthropic + OpenAI fields) and /api/v1/models."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from anthropic.types import ModelInfo

from lmdock.upstream.model import UpstreamModel


def upstream_model_info(model: UpstreamModel) -> dict[str, Any]:
    created = int(model.loaded_at)
    info = ModelInfo(
        type="model",
        id=model.key,
        display_name=model.key,
        created_at=datetime.fromtimestamp(created, tz=UTC),
        lifecycle="active",
        max_input_tokens=model.n_ctx or None,
        max_tokens=model.n_ctx or None,
    ).model_dump(mode="json", exclude_none=True)
    info.update(object="model", created=created, owned_by="upstream")
    return info


def upstream_entry(model: UpstreamModel) -> dict[str, Any]:
    """An /api/v1/models entry: state `loaded` while a node is healthy, else `unavailable`."""
    status = model.status()
    config = {"context_length": model.n_ctx or None, "parallel": None, "ttl_seconds": None}
    return {
        "type": "llm",
        "publisher": None,
        "key": model.key,
        "display_name": model.key,
        "architecture": None,
        "quantization": None,
        "size_bytes": None,
        "params_string": None,
        "max_context_length": model.n_ctx or None,
        "format": "upstream",
        "capabilities": {"trained_for_tool_use": True},
        "state": "loaded" if status["healthy_nodes"] else "unavailable",
        "loaded_instances": [{"id": model.key, "config": config, "loaded_at": model.loaded_at}],
        "aliases": [],
        "upstream": status,
    }
