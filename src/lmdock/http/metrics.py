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
            "preemptions": (
                "lmdock_preemptions",
                "Running sequences sent back to wait (KV full, or priority)",
            ),
            "requests": ("lmdock_requests", "Generation requests admitted to an engine"),
            "spec_proposed_tokens": (
                "lmdock_spec_proposed_tokens",
                "Draft tokens verified by speculative decoding",
            ),
            "spec_accepted_tokens": (
                "lmdock_spec_accepted_tokens",
                "Draft tokens accepted (emitted) by speculative decoding",
            ),
            "decode_steps": ("lmdock_decode_steps", "Engine steps that decoded generating sequences"),
            "kv_cells": (
                "lmdock_kv_cells",
                "KV cells those steps attended over, summed (divide by decode steps: mean n_kv)",
            ),
            "decode_seconds": ("lmdock_decode_seconds", "Seconds spent in llama_decode"),
            "decode_step_seconds": (
                "lmdock_decode_step_seconds",
                "Seconds of llama_decode in the decode steps (divide by decode steps: mean step time)",
            ),
            "demotions": (
                "lmdock_cache_demotions",
                "Idle cached prefixes moved to host RAM so running sequences decode over fewer cells",
            ),
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
        lookups = CounterMetricFamily(
            "lmdock_cache_lookups",
            "Admitted prompts by where their reused prefix came from (slot, ram, disk), or miss",
            labels=["model", "outcome"],
        )
        for key, model in list(self.manager.loaded.items()):
            crashes.add_metric([key], model.engine.crashes)
            stats = model.engine.stats
            for outcome, count in (
                ("slot", stats.hits_slot),
                ("ram", stats.hits_ram),
                ("disk", stats.hits_disk),
                ("miss", stats.misses),
            ):
                lookups.add_metric([key, outcome], count)
            for attr, family in families.items():
                family.add_metric([key], getattr(stats, attr))
            queue.add_metric([key], model.engine.queue_depth)
            active.add_metric([key], model.engine.active_count)
            work = stats.generated_tokens + stats.prompt_tokens_processed
            tps.add_metric([key], work / stats.decode_seconds if stats.decode_seconds else 0.0)
        yield from families.values()
        yield from (queue, active, tps, crashes, lookups)


class _UpstreamCollector:
    """Per upstream node: requests, errors, failovers, latency, tokens, in-flight requests, health."""

    def __init__(self, manager: ModelManager) -> None:
        self.manager = manager

    def collect(self):
        labels = ["model", "node"]
        counters = {
            "requests": ("lmdock_upstream_requests", "Requests sent to an upstream node"),
            "errors": (
                "lmdock_upstream_errors",
                "Requests an upstream node failed (refused, broke, timed out)",
            ),
            "failovers": ("lmdock_upstream_failovers", "Requests moved from this node to another"),
            "completed": ("lmdock_upstream_completed", "Generations an upstream node finished"),
            "seconds_total": (
                "lmdock_upstream_request_seconds",
                "Seconds from sending to the end of streams",
            ),
            "first_byte_seconds_total": (
                "lmdock_upstream_first_chunk_seconds",
                "Seconds from sending to the first streamed chunk",
            ),
            "prompt_tokens": ("lmdock_upstream_prompt_tokens", "Prompt tokens upstream nodes reported"),
            "generated_tokens": ("lmdock_upstream_generated_tokens", "Tokens upstream nodes generated"),
            "cached_tokens": (
                "lmdock_upstream_cached_tokens",
                "Prompt tokens upstream nodes read from cache",
            ),
        }
        families = {k: CounterMetricFamily(n, h, labels=labels) for k, (n, h) in counters.items()}
        outstanding = GaugeMetricFamily(
            "lmdock_upstream_outstanding", "Requests in flight on an upstream node", labels=labels
        )
        healthy = GaugeMetricFamily(
            "lmdock_upstream_healthy", "1 if the node passed its health check", labels=labels
        )
        for model in self.manager.upstreams:
            for node in model.upstream.nodes:
                key = [model.key, node.url]
                for attr, family in families.items():
                    family.add_metric(key, getattr(node.stats, attr))
                outstanding.add_metric(key, node.outstanding)
                healthy.add_metric(key, 1 if node.healthy else 0)
        yield from families.values()
        yield from (outstanding, healthy)


def metrics_response(manager: ModelManager) -> Response:
    registry = CollectorRegistry()
    registry.register(_EngineCollector(manager))
    registry.register(_UpstreamCollector(manager))
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
