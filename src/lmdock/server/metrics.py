"""Prometheus metrics, collected from the engines' counters at scrape time."""

from __future__ import annotations

from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from lmdock.models.manager import ModelManager


class _EngineCollector:
    def __init__(self, manager: ModelManager) -> None:
        self.manager = manager

    def collect(self):
        counters = {
            "prompt_tokens": ("lmdock_prompt_tokens", "Prompt tokens received"),
            "prompt_tokens_processed": (
                "lmdock_prompt_tokens_processed",
                "Prompt tokens evaluated (cache misses)",
            ),
            "generated_tokens": ("lmdock_generated_tokens", "Tokens generated"),
            "cache_hit_tokens": ("lmdock_cache_hit_tokens", "Prompt tokens reused from the prefix cache"),
            "evictions": ("lmdock_cache_evictions", "Cached sequences evicted from the KV cache"),
            "requests": ("lmdock_requests", "Generation requests admitted to an engine"),
        }
        families = {k: CounterMetricFamily(n, h, labels=["model"]) for k, (n, h) in counters.items()}
        queue = GaugeMetricFamily("lmdock_queue_depth", "Requests waiting for a slot", labels=["model"])
        active = GaugeMetricFamily(
            "lmdock_active_sequences", "Sequences prefilling or decoding", labels=["model"]
        )
        tps = GaugeMetricFamily(
            "lmdock_tokens_per_second", "Tokens processed per second of decode time", labels=["model"]
        )
        crashes = CounterMetricFamily(
            "lmdock_worker_crashes", "Times a model's worker process died", labels=["model"]
        )
        for key, model in list(self.manager.loaded.items()):
            crashes.add_metric([key], getattr(model.engine, "crashes", 0))
            stats = model.engine.stats
            for attr, family in families.items():
                family.add_metric([key], getattr(stats, attr))
            queue.add_metric([key], model.engine.queue_depth)
            active.add_metric([key], model.engine.active_count)
            work = stats.generated_tokens + stats.prompt_tokens_processed
            tps.add_metric([key], work / stats.decode_seconds if stats.decode_seconds else 0.0)
        yield from families.values()
        yield from (queue, active, tps, crashes)


def metrics_response(manager: ModelManager) -> Response:
    registry = CollectorRegistry()
    registry.register(_EngineCollector(manager))
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
