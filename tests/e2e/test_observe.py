"""Why a request was slow, as a user sees it: the request log (`lmdock log stream --json`) says how the
prompt cache lookup went (tier, cached tokens, where the prompt diverged from the nearest cached entry,
with the text on each side) and how long the request queued and why; GET /api/v1/models/{key}/engine
shows the queue, slots and cache entries; /metrics counts hits by tier and misses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import httpx
import pytest

from tests.conftest import Server, start_server

QWEN = "qwen2.5-coder-0.5b-instruct"
SYSTEM = "You are a careful assistant. " + " ".join(
    f"Rule {i}: answer in plain words about topic number {i}." for i in range(40)
)


@pytest.fixture(scope="module")
def one_at_a_time(tmp_path_factory) -> Server:
    srv = start_server(tmp_path_factory.mktemp("observe"), "--parallel", "1")
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def log_lines(one_at_a_time: Server):
    """The request log as `lmdock log stream --json` prints it, one parsed entry per line."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "lmdock.cli.main",
            "log",
            "stream",
            "--json",
            "--port",
            str(one_at_a_time.port),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert "Streaming the request log" in proc.stdout.readline()
    seen: dict[str, dict] = {}

    def entry(request_id: str) -> dict:
        while request_id not in seen:
            line = json.loads(proc.stdout.readline())
            seen[line["request_id"]] = line
        return seen[request_id]

    yield entry
    proc.terminate()
    proc.wait(timeout=30)


def ask(server: Server, day: str, max_tokens: int = 1, extra: str = "") -> str:
    """One request; its request id."""
    raw = server.anthropic().messages.with_raw_response.create(
        model=QWEN,
        max_tokens=max_tokens,
        system=f"{SYSTEM} Today is {day}; the working tree is clean.{extra}",
        messages=[{"role": "user", "content": "What day is it?"}],
    )
    return raw.headers["request-id"]


def test_a_partial_hit_says_where_the_prompt_diverged(one_at_a_time: Server, log_lines):
    first = log_lines(ask(one_at_a_time, "2026-12-02"))
    assert first["cache"]["tier"] is None or first["cache"]["cached_tokens"] < first["input_tokens"] // 2
    second = log_lines(ask(one_at_a_time, "2026-12-03"))
    cache = second["cache"]
    assert cache["tier"] == "slot" and cache["cached_tokens"] == second["cached_tokens"] > 0
    assert cache["diverged_at"] == cache["cached_tokens"]  # reused up to where the day changed
    assert cache["before"].endswith("Today is 2026-12-0")
    assert cache["prompt_after"].startswith("3; the working tree")
    assert cache["cached_after"].startswith("2; the working tree")
    assert second["queue_ms"] >= 0 and second["blocked_by"] is None
    assert 0 < second["ttft_ms"] <= second["duration_ms"]
    metrics = httpx.get(f"{one_at_a_time.base_url}/metrics").text
    assert f'lmdock_cache_lookups_total{{model="{QWEN}",outcome="slot"}}' in metrics
    hits = [line for line in metrics.splitlines() if line.startswith("lmdock_cache_lookups_total")]
    assert sum(float(line.split()[-1]) for line in hits) >= 2, hits


def test_a_queued_request_says_what_it_waited_for(one_at_a_time: Server, log_lines):
    url = f"{one_at_a_time.base_url}/api/v1/models/{QWEN}/engine"
    long_prompt = " ".join(f"Note {i}: the value of item {i} is {i * 7 % 13}." for i in range(150))
    ids: list[str] = []
    first = threading.Thread(target=lambda: ids.append(ask(one_at_a_time, "2026-12-04", 8, long_prompt)))
    first.start()
    deadline = time.monotonic() + 300
    while httpx.get(url).json()["active"] == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    second = threading.Thread(target=lambda: ids.append(ask(one_at_a_time, "2026-12-05")))
    second.start()
    snapshot = httpx.get(url).json()
    # until the engine's next admission pass has told the queued request why it waits
    while snapshot["active"] and not snapshot["queue"] and time.monotonic() < deadline:
        time.sleep(0.05)
        snapshot = httpx.get(url).json()
    while snapshot["queue"] and snapshot["queue"][0]["blocked_by"] is None and time.monotonic() < deadline:
        time.sleep(0.05)
        snapshot = httpx.get(url).json()
    assert snapshot["waiting"] == 1, snapshot  # the first still prefills its long prompt
    assert snapshot["queue"][0]["blocked_by"] == "all 1 parallel sequences are running"
    assert snapshot["blocked_by"] == "all 1 parallel sequences are running"
    assert any(s["busy"] for s in snapshot["slots"]) and "hits_slot" in snapshot["stats"]
    first.join(timeout=600)
    second.join(timeout=600)
    waited = [log_lines(i) for i in ids if log_lines(i)["blocked_by"] is not None]
    assert len(waited) == 1 and waited[0]["queue_ms"] > 0
    assert waited[0]["queue_ms"] < waited[0]["ttft_ms"] <= waited[0]["duration_ms"]  # it waited, then ran
    assert waited[0]["blocked_by"] == "all 1 parallel sequences are running"
    cached = httpx.get(url).json()["cache"]  # the long prompt was saved to the disk tier after prefill
    assert any(e["tier"] == "disk" and e["tokens"] > 1000 for e in cached), cached


def test_the_engine_of_a_model_not_loaded_is_a_404(one_at_a_time: Server):
    r = httpx.get(f"{one_at_a_time.base_url}/api/v1/models/no-such-model/engine")
    assert r.status_code == 404 and r.json()["error"]["type"] == "not_found_error"
