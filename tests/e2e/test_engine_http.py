"""Engine behaviour seen over HTTP: metrics, disconnects, and the prompt cache across a restart."""

from __future__ import annotations

import asyncio

import anthropic
import httpx

from tests.conftest import Server, start_server


def _metric(server: Server, name: str) -> float:
    text = httpx.get(f"{server.base_url}/metrics").text
    values = [float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + "{")]
    assert values, f"{name} missing from /metrics"
    return sum(values)


def test_metrics_count_tokens(server: Server, client: anthropic.Anthropic):
    before = _metric(server, "lmdock_generated_tokens_total")
    client.messages.create(model="default", max_tokens=4, messages=[{"role": "user", "content": "Hello"}])
    assert _metric(server, "lmdock_generated_tokens_total") > before
    for name in (
        "lmdock_prompt_tokens_total",
        "lmdock_queue_depth",
        "lmdock_active_sequences",
        "lmdock_cache_hit_tokens_total",
        "lmdock_cache_evictions_total",
        "lmdock_tokens_per_second",
    ):
        _metric(server, name)


def test_disconnected_streams_free_their_sequences(server: Server):
    body = {
        "model": "default",
        "max_tokens": 400,
        "stream": True,
        "messages": [{"role": "user", "content": "Write a very long story about a lighthouse keeper."}],
    }

    async def disconnect_after_first_delta():
        async with (
            httpx.AsyncClient(base_url=server.base_url, timeout=300) as http,
            http.stream("POST", "/v1/messages", json=body) as r,
        ):
            async for line in r.aiter_lines():
                if "content_block_delta" in line:
                    return

    async def many():
        await asyncio.gather(*[disconnect_after_first_delta() for _ in range(4)])

    asyncio.run(many())
    for _ in range(100):
        if _metric(server, "lmdock_active_sequences") == 0:
            break
        asyncio.run(asyncio.sleep(0.1))
    assert _metric(server, "lmdock_active_sequences") == 0
    assert _metric(server, "lmdock_queue_depth") == 0


def test_prompt_prefix_persists_across_a_restart(tmp_path):
    system = "You are the archivist. " + " ".join(f"Shelf {i} holds volume {i * 3}." for i in range(80))
    params = dict(model="default", max_tokens=4, system=system, extra_body={"temperature": 0})
    first = start_server(tmp_path, "--cache-dir", str(tmp_path / "kv"))
    try:
        c = first.anthropic(strict=False, timeout=600)
        cold = c.messages.create(
            messages=[{"role": "user", "content": "Which shelf holds volume 9?"}], **params
        )
        assert cold.usage.cache_read_input_tokens == 0
    finally:
        first.stop()
    second = start_server(tmp_path, "--cache-dir", str(tmp_path / "kv"))
    try:
        c = second.anthropic(strict=False, timeout=600)
        warm = c.messages.create(
            messages=[{"role": "user", "content": "Which shelf holds volume 12?"}], **params
        )
        assert warm.usage.cache_read_input_tokens > 500
    finally:
        second.stop()
