"""KV cache types, flash attention and a context that fits the machine (issue 25), on real servers.

- q8_0 K/V: greedy output starts the same across a restart (the prompt restored from the disk cache)
  and like f16's (openings only: a restored prompt recomputes its tail in another batch shape, and q8_0
  rounds otherwise than f16, either of which may flip a later greedy choice of a 0.5B model); an entry saved under f16 is never restored into the q8_0 context (a miss, and the
  f16 entry stays for f16).
- The memory estimate is within 15% of the worker's measured RSS, f16 and q8_0, at two contexts.
- Without a context, a load gets the largest that fits `--memory-budget`; one that does not fit is a 400
  naming what would; impossible combinations are 4xx (API), exit 1 (`lmdock load`) or exit 2
  (`lmdock serve`), and no worker starts for them.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import anthropic
import httpx
import pytest

from lmdock.core.kv_cache import KvCacheConfig
from lmdock.models.estimate import context_ladder, estimate_memory
from lmdock.models.store import record_for
from tests.conftest import DEFAULT_MODEL, LMDOCK, Server, start_server

QWEN = "qwen2.5-coder-0.5b-instruct"
Q8 = ("--cache-type-k", "q8_0", "--cache-type-v", "q8_0")
SYSTEM = "You maintain a harbour's records.\n" + "\n".join(
    f"Berth {i}: the {['red', 'blue', 'green'][i % 3]} crane lifts {i * 7 % 40 + 5} tonnes."
    for i in range(60)
)
QUESTIONS = [
    "Which cranes can lift more than 40 tonnes? Answer in two sentences.",
    "Write a Python function that returns the berths of the green cranes.",
]


def _ask(server: Server, question: str) -> anthropic.types.Message:
    return server.anthropic().messages.create(
        model=QWEN,
        max_tokens=32,
        system=SYSTEM,
        messages=[{"role": "user", "content": question}],
        extra_body={"temperature": 0.0},  # this SDK version has no temperature parameter
    )


def _text(msg: anthropic.types.Message) -> str:
    return "".join(b.text for b in msg.content if b.type == "text")


def _opening(msg: anthropic.types.Message) -> list[str]:
    return _text(msg).split()[:2]


def _instance(server: Server) -> dict:
    models = httpx.get(f"{server.base_url}/api/v1/models", timeout=30).json()["models"]
    (qwen,) = [m for m in models if m["key"] == QWEN]
    return qwen["loaded_instances"][0] if qwen["loaded_instances"] else {}


def _load(server: Server, **config) -> httpx.Response:
    return httpx.post(f"{server.base_url}/api/v1/models/load", json={"model": QWEN, **config}, timeout=600)


def test_q8_0_survives_a_restart_and_never_restores_an_f16_entry(tmp_path: Path):
    cache = tmp_path / "cache"
    args = ("--cache-dir", str(cache), "--ctx-size", "4096")
    srv = start_server(tmp_path, *args)
    try:
        f16 = [_ask(srv, q) for q in QUESTIONS]
        assert _instance(srv)["config"]["cache_type_k"] == "f16"
    finally:
        srv.stop()
    (f16_folder,) = cache.iterdir()
    f16_entries = sorted(p.name for p in f16_folder.glob("*.state"))
    assert f16_entries, "the f16 server should have saved its prompt"

    srv = start_server(tmp_path, *args, *Q8)
    try:
        config = _instance(srv)["config"]
        assert (config["cache_type_k"], config["cache_type_v"], config["flash_attention"]) == (
            "q8_0",
            "q8_0",
            True,
        )
        cold = [_ask(srv, q) for q in QUESTIONS]
    finally:
        srv.stop()
    # the f16 entry is a miss: the first prompt is computed cold, and the entry stays for f16
    assert cold[0].usage.cache_read_input_tokens == 0, cold[0].usage
    assert sorted(p.name for p in f16_folder.glob("*.state")) == f16_entries
    assert "dropping" not in srv.log()
    (q8_folder,) = set(cache.iterdir()) - {f16_folder}

    srv = start_server(tmp_path, *args, *Q8)
    try:
        warm = [_ask(srv, q) for q in QUESTIONS]
    finally:
        srv.stop()
    for w, c in zip(warm, cold, strict=True):
        assert w.usage.cache_read_input_tokens > 500, w.usage  # restored from q8_0's own disk entry
        assert _opening(w) == _opening(c), (_text(w), _text(c))
    assert any(q8_folder.glob("*.state"))
    # q8_0 halves the KV bytes yet answers as f16 does
    for q, f in zip(cold, f16, strict=True):
        assert _opening(q) == _opening(f), (_text(q), _text(f))
    state_bytes = {
        folder: max(p.stat().st_size for p in folder.glob("*.state")) for folder in (f16_folder, q8_folder)
    }
    assert state_bytes[q8_folder] < 0.6 * state_bytes[f16_folder]


@pytest.fixture(scope="module")
def budgeted(tmp_path_factory) -> Server:
    """A server told it may use 1000 MiB, with no context: it picks one."""
    srv = start_server(tmp_path_factory.mktemp("kv"), "--ctx-size", "0", "--memory-budget", "1000")
    yield srv
    srv.stop()


def _fits(kv: KvCacheConfig, budget: int) -> int:
    record = record_for(DEFAULT_MODEL)
    ladder = context_ladder(record.metadata.context_length)
    return max(n for n in ladder if estimate_memory(record, n, kv).total_bytes <= budget)


def test_the_default_context_is_the_largest_that_fits_the_budget(budgeted: Server):
    want_f16 = _fits(KvCacheConfig(), 1000 << 20)
    assert want_f16 < 32768  # the model's trained context does not fit in f16 ...
    assert _instance(budgeted)["config"]["context_length"] == want_f16
    r = _load(budgeted, kv_cache_type="q8_0")  # ... and does with q8_0
    assert r.status_code == 200, r.text
    assert r.json()["config"]["context_length"] == _fits(KvCacheConfig("q8_0", "q8_0"), 1000 << 20) == 32768
    estimate = _load(budgeted, estimate_only=True).json()
    assert set(estimate["estimates"]) == {"f16", "q8_0"} and estimate["available_bytes"] == 1000 << 20


def test_a_load_that_does_not_fit_is_refused_naming_what_would(budgeted: Server):
    before = _instance(budgeted)["worker"]["pid"]
    r = _load(budgeted, context_length=32768, kv_cache_type="f16")
    assert r.status_code == 400, r.text
    message = r.json()["error"]["message"]
    assert "context_length" in message and "is available" in message and "tokens fits" in message
    assert "with a q8_0 KV cache" in message
    assert _instance(budgeted)["worker"]["pid"] == before  # nothing was unloaded or started


@pytest.mark.parametrize(
    ("config", "words"),
    [
        ({"kv_cache_type": "q8_0", "flash_attention": False}, "needs flash attention"),
        ({"cache_type_v": "q4_0", "flash_attn": "off"}, "needs flash attention"),
        ({"cache_type_k": "q3_k"}, "is not a KV cache type"),
        ({"flash_attn": "sometimes"}, "not one of on, off, auto"),
        ({"kv_cache_type": "q8_0", "cache_type_k": "q4_0"}, "disagrees with kv_cache_type"),
    ],
)
def test_invalid_combinations_are_400s_and_start_no_worker(budgeted: Server, config: dict, words: str):
    before = _instance(budgeted)["worker"]["pid"]
    for body in (config, {**config, "estimate_only": True}):
        r = _load(budgeted, **body)
        assert r.status_code == 400, r.text
        assert words in r.json()["error"]["message"]
    assert _instance(budgeted)["worker"]["pid"] == before


def test_the_cli_refuses_them_too(budgeted: Server, tmp_path: Path):
    load = budgeted.cli("load", QWEN, "-ctv", "q4_0", "-fa", "off")
    assert load.returncode == 1 and "needs flash attention" in load.stderr and "Traceback" not in load.stderr
    estimate = budgeted.cli("load", QWEN, "--estimate-only", "-c", "8192", "-ctk", "q8_0", "-ctv", "q8_0")
    assert estimate.returncode == 0, estimate.stderr
    assert "q8_0 KV cache" in estimate.stdout and "with f16 K/V" in estimate.stdout
    assert "with q8_0 K/V" in estimate.stdout
    serve = subprocess.run(
        [*LMDOCK, "serve", "--port", "1", "--cache-type-v", "q8_0", "--flash-attn", "off"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "LMDOCK_HOME": str(tmp_path)},
    )
    assert serve.returncode == 2 and "needs flash attention" in serve.stderr, serve.stderr
    assert "Traceback" not in serve.stderr and "serving" not in serve.stderr


def test_the_estimate_is_within_15_percent_of_the_worker_rss(budgeted: Server):
    """Loaded at two contexts with f16 and q8_0, after one request (its buffers touched)."""
    for context in (4096, 16384):
        for kv in ("f16", "q8_0"):
            r = _load(budgeted, context_length=context, kv_cache_type=kv)
            assert r.status_code == 200, r.text
            _ask(budgeted, QUESTIONS[0])
            models = httpx.get(f"{budgeted.base_url}/api/v1/models", timeout=30).json()["models"]
            (qwen,) = [m for m in models if m["key"] == QWEN]
            estimate = qwen["memory_estimate"]
            assert (estimate["context_length"], estimate["cache_type_k"]) == (context, kv)
            rss = qwen["loaded_instances"][0]["worker"]["rss_bytes"]
            assert abs(estimate["total_bytes"] - rss) <= 0.15 * rss, (context, kv, estimate, rss)
