"""What a load of a model will be, decided before its worker starts: the KV cache, the context (asked
for, or the largest that fits), the memory estimate, and whether it fits."""

from __future__ import annotations

from dataclasses import dataclass

from lmdock.core.config import Settings
from lmdock.core.kv_cache import KvCacheConfig
from lmdock.models.estimate import MemoryBudget, MemoryEstimate, check_fits, default_context, estimate_memory
from lmdock.models.memory import budget_for
from lmdock.models.store import ModelRecord

ESTIMATED_TYPES = ("f16", "q8_0")  # what the Models page and `lmdock load --estimate-only` compare


@dataclass
class LoadOptions:
    """Per-load settings (the management API and CLI can override the server defaults)."""

    ctx_size: int | None = None
    parallel: int | None = None
    ttl_seconds: int | None = None
    cache_type_k: str | None = None  # None: the server's setting (`serve --cache-type-k`)
    cache_type_v: str | None = None
    flash_attn: str | None = None  # on | off | auto

    def kv_cache(self, base: KvCacheConfig) -> KvCacheConfig:
        """The KV cache this load asks for: what these options set over `base` (the server's settings,
        or a loaded model's cache), checked."""
        return KvCacheConfig(
            self.cache_type_k or base.type_k,
            self.cache_type_v or base.type_v,
            self.flash_attn or base.flash_attn,
        ).checked()


@dataclass
class LoadPlan:
    record: ModelRecord
    options: LoadOptions
    context_length: int
    kv_cache: KvCacheConfig
    estimate: MemoryEstimate
    budget: MemoryBudget
    batch_size: int

    @property
    def fits(self) -> bool:
        return self.budget.available is None or self.estimate.total_bytes <= self.budget.available

    def check(self) -> None:
        """Refuse what llama.cpp would refuse or the machine cannot hold, naming the setting (400)."""
        meta = self.record.metadata
        self.kv_cache.check_head_sizes(meta.key_length, meta.value_length)
        check_fits(self.record, self.context_length, self.kv_cache, self.budget, self.batch_size)

    def estimates(self) -> dict[str, dict]:
        """The estimate at this context for each of ESTIMATED_TYPES (K and V alike; a quantized V
        cache with flash attention, as it must be)."""
        fa = "auto" if self.kv_cache.flash_attn == "off" else self.kv_cache.flash_attn
        return {
            t: estimate_memory(
                self.record,
                self.context_length,
                KvCacheConfig(t, t, self.kv_cache.flash_attn if t == "f16" else fa),
                batch_size=self.batch_size,
            ).as_dict()
            for t in ESTIMATED_TYPES
        }

    def as_dict(self) -> dict:
        return {
            "estimate": self.estimate.as_dict(),
            "estimates": self.estimates(),
            "available_bytes": self.budget.available,
            "fits": self.fits,
        }


def plan_load(record: ModelRecord, settings: Settings, options: LoadOptions, freed: int = 0) -> LoadPlan:
    """The plan for loading `record` with `options` over the server's settings (an invalid KV cache
    combination is a 400 here). Without a context from either, the largest that fits is chosen.
    `freed`: bytes that unloading other models first will give back."""
    kv = options.kv_cache(settings.kv_cache)
    budget = budget_for(settings)
    if budget.available is not None and not settings.memory_budget:
        budget.available += freed
    context = options.ctx_size or settings.ctx_size
    if not context:
        context = default_context(record, kv, budget, settings.batch_size)
    estimate = estimate_memory(record, context, kv, batch_size=settings.batch_size)
    return LoadPlan(record, options, context, kv, estimate, budget, settings.batch_size)
