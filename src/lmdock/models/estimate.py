"""How much memory a model needs before it is loaded: weights plus the KV cache for a context.

KV bytes per token = layers x KV heads x (key + value head size) x bytes per cache element. llama.cpp's
compute buffers come on top (tens to hundreds of MB), so this is a floor, as `lms load --estimate-only`'s
is an estimate.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

from lmdock.core.errors import InvalidRequest
from lmdock.models.store import ModelRecord

KV_CACHE_TYPES = ("f32", "f16", "bf16", "q8_0", "q5_1", "q5_0", "q4_1", "q4_0", "iq4_nl")


@dataclass
class MemoryEstimate:
    context_length: int
    kv_cache_type: str
    weights_bytes: int
    kv_bytes_per_token: int
    kv_cache_bytes: int
    total_bytes: int

    def as_dict(self) -> dict[str, int | str]:
        return asdict(self)


def kv_element_bytes(kv_cache_type: str) -> float:
    """Bytes per cached element for a llama.cpp cache type (`f16`, `q8_0`, ...)."""
    if kv_cache_type not in KV_CACHE_TYPES:
        raise InvalidRequest(
            f"kv_cache_type: '{kv_cache_type}' is not one of {', '.join(KV_CACHE_TYPES)}",
            param="kv_cache_type",
        )
    block, size = GGML_QUANT_SIZES[GGMLQuantizationType[kv_cache_type.upper()]]
    return size / block


def estimate_memory(record: ModelRecord, context_length: int, kv_cache_type: str = "f16") -> MemoryEstimate:
    meta = record.metadata
    per_token = meta.n_layer * meta.n_head_kv * (meta.key_length + meta.value_length)
    kv_per_token = round(per_token * kv_element_bytes(kv_cache_type))
    weights = record.size_bytes
    kv = kv_per_token * context_length
    return MemoryEstimate(
        context_length=context_length,
        kv_cache_type=kv_cache_type,
        weights_bytes=weights,
        kv_bytes_per_token=kv_per_token,
        kv_cache_bytes=kv,
        total_bytes=weights + kv,
    )
