"""How much memory a model needs before it is loaded, and the context that fits the machine.

A worker's memory is the weights (the GGUF file, mapped or repacked), the KV cache (allocated and cleared
whole when the context is made: layers x KV heads x (key + value head size) x bytes per element, per
token), llama.cpp's compute buffers, and the process itself (Python, llguidance's tokenizer). The compute
buffer llama.cpp reserves is mostly the logits of a whole batch, which a generating server never fills;
what is touched is the activations of one batch, plus, without flash attention, the attention scores of
a batch against every cached token (grows with the context). The constants were measured on the default
model (see README, "Long contexts").

The default context is the largest that fits what the machine has available (less a margin and the RAM
prompt-cache budget), up to the model's trained length, and at least what a coding agent's first request
needs when that fits without the cache budget. A load that does not fit is refused before its worker
starts, with the context that would fit.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from lmdock.core.config import MAX_DEFAULT_CTX
from lmdock.core.errors import ModelLoadError
from lmdock.core.kv_cache import KvCacheConfig, element_bytes, is_quantized
from lmdock.models.store import GGUFMetadata, ModelRecord

PROCESS_BYTES = 160 << 20  # the worker process beyond llama.cpp's buffers (Python, numpy, llguidance)
ACTIVATION_BYTES_PER_TOKEN = 64  # x n_embd: one batch's activations that a prefill touches
MARGIN_BYTES = 512 << 20  # left to the rest of the machine
AGENT_CONTEXT = 32768  # Claude Code's first request is 12-20k tokens; 32k leaves room for file reads
MIN_CONTEXT = 2048


@dataclass
class MemoryEstimate:
    context_length: int
    cache_type_k: str
    cache_type_v: str
    kv_cache_type: str | None  # LM Studio's single type (None when K and V differ)
    flash_attention: bool
    weights_bytes: int
    kv_bytes_per_token: int
    kv_cache_bytes: int
    compute_bytes: int
    process_bytes: int
    total_bytes: int

    def as_dict(self) -> dict[str, int | str | bool | None]:
        return asdict(self)


def kv_bytes_per_token(meta: GGUFMetadata, kv: KvCacheConfig) -> int:
    per_layer = meta.n_head_kv * (
        meta.key_length * element_bytes(kv.type_k) + meta.value_length * element_bytes(kv.type_v)
    )
    return round(meta.n_layer * per_layer)


def estimate_memory(
    record: ModelRecord, context_length: int, kv: KvCacheConfig, *, batch_size: int = 512
) -> MemoryEstimate:
    """What a worker for `record` with this context and cache will hold once it has served requests.
    `auto` flash attention counts as on (what llama.cpp picks on a CPU)."""
    meta = record.metadata
    flash = kv.flash_attn != "off"
    per_token = kv_bytes_per_token(meta, kv)
    kv_bytes = per_token * context_length
    compute = batch_size * meta.n_embd * ACTIVATION_BYTES_PER_TOKEN
    if not flash:  # f32 scores of a batch against every cached token, per head
        compute += context_length * batch_size * meta.n_head * 4
    total = record.size_bytes + kv_bytes + compute + PROCESS_BYTES
    return MemoryEstimate(
        context_length=context_length,
        cache_type_k=kv.type_k,
        cache_type_v=kv.type_v,
        kv_cache_type=kv.lm_studio_type,
        flash_attention=flash,
        weights_bytes=record.size_bytes,
        kv_bytes_per_token=per_token,
        kv_cache_bytes=kv_bytes,
        compute_bytes=compute,
        process_bytes=PROCESS_BYTES,
        total_bytes=total,
    )


@dataclass
class MemoryBudget:
    """What a load may use: `available` bytes (None: unknown, nothing is refused), of which `reserve`
    should stay free for the RAM prompt-cache tier when the context is chosen by lmdock."""

    available: int | None
    reserve: int = 0


def context_ladder(limit: int) -> list[int]:
    """The contexts lmdock chooses from, up to `limit` (included): powers of two and 1.5x powers of two
    from MIN_CONTEXT. Coarse on purpose: a little more or less free memory must not change the context
    between restarts (the disk prompt cache is kept per context size)."""
    steps, n = [], MIN_CONTEXT
    while n < limit:
        steps += [c for c in (n, n * 3 // 2) if c < limit]
        n *= 2
    return [*steps, limit]


def _largest_fitting(record: ModelRecord, kv: KvCacheConfig, room: int, batch_size: int, limit: int) -> int:
    """The largest context of the ladder up to `limit` whose estimate fits in `room` bytes (0: none)."""
    fitting = [
        n
        for n in context_ladder(limit)
        if estimate_memory(record, n, kv, batch_size=batch_size).total_bytes <= room
    ]
    return fitting[-1] if fitting else 0


def default_context(record: ModelRecord, kv: KvCacheConfig, budget: MemoryBudget, batch_size: int) -> int:
    """The context a load without one gets: the model's trained length if it fits next to the RAM
    prompt-cache budget, else the largest that does, but at least AGENT_CONTEXT (or the trained length,
    if smaller) when that fits without the cache budget."""
    trained = record.metadata.context_length or MAX_DEFAULT_CTX
    if budget.available is None:
        return min(trained, MAX_DEFAULT_CTX)
    comfortable = _largest_fitting(record, kv, budget.available - budget.reserve, batch_size, trained)
    floor = min(AGENT_CONTEXT, trained)
    if comfortable >= floor:
        return comfortable
    tight = _largest_fitting(record, kv, budget.available, batch_size, floor)
    return max(comfortable, tight, min(MIN_CONTEXT, trained))


def check_fits(
    record: ModelRecord, context_length: int, kv: KvCacheConfig, budget: MemoryBudget, batch_size: int
) -> None:
    """Refuse a load whose estimate exceeds the available memory, naming what would fit."""
    if budget.available is None:
        return
    need = estimate_memory(record, context_length, kv, batch_size=batch_size)
    if need.total_bytes <= budget.available:
        return
    gib = 1 << 30
    fits = _largest_fitting(record, kv, budget.available, batch_size, context_length)
    hint = f"a context of {fits} tokens fits" if fits >= MIN_CONTEXT else "no context of this model fits"
    if not (is_quantized(kv.type_k) and is_quantized(kv.type_v)):
        q8_0 = KvCacheConfig("q8_0", "q8_0", "on" if kv.flash_attn == "off" else kv.flash_attn)
        q8 = _largest_fitting(record, q8_0, budget.available, batch_size, context_length)
        if q8 > fits and q8 >= MIN_CONTEXT:
            hint += f" ({q8} with a q8_0 KV cache)"
    raise ModelLoadError(
        f"context_length: {record.key} with {context_length} tokens of {kv.label} KV cache needs about "
        f"{need.total_bytes / gib:.1f} GiB, but {budget.available / gib:.1f} GiB is available; {hint}",
        param="context_length",
    )
