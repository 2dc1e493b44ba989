"""The engine on quantized KV caches and without flash attention (issue 25): chunk reuse moves cells
with a K-shift (llama.cpp dequantizes, rotates and requantizes quantized K), the host-RAM tier copies
states of every type, and the CPU self-check decodes with the cache a load will use.

Warm answers are compared with cold ones by their opening words: the tail a warm request recomputes runs
in another batch shape than the cold prefill did (and a K-shift requantizes), which may flip a later
greedy choice of a 0.5B model at some thread counts; a state of the wrong type or layout garbles it from
the first token."""

from __future__ import annotations

import subprocess

import pytest

from lmdock.core.kv_cache import KvCacheConfig
from lmdock.engine.process import worker_argv
from lmdock.models.estimate import kv_bytes_per_token
from lmdock.models.store import record_for
from tests.conftest import DEFAULT_MODEL, default_model_repack
from tests.engine.conftest import chatml, close, generate, make_engine, run

CONFIGS = [
    KvCacheConfig("q8_0", "q8_0", "on"),
    KvCacheConfig("q4_0", "q4_0", "auto"),
    KvCacheConfig("q8_0", "f16", "off"),  # quantized K needs no flash attention
    KvCacheConfig("f16", "f16", "off"),
]
BLOCK = " ".join(f"Rule {i}: the crate in bay {i} is checked every {i % 7 + 1} days." for i in range(70))


def opening(text: str) -> list[str]:
    return text.split()[:2]


def _prompt(project: str) -> str:
    """A long shared block after a system line that differs in the middle, as Claude Code's do."""
    return chatml(
        "Which bay is checked every 3 days? Answer briefly.", f"You work in /home/{project}.\n{BLOCK}"
    )


@pytest.mark.parametrize("kv", CONFIGS, ids=lambda kv: f"{kv.label}-fa-{kv.flash_attn}")
def test_moved_and_spilled_cells_answer_as_cold(kv: KvCacheConfig):
    client = make_engine(parallel=2, n_ctx=4096, kv=kv)
    engine = client.engine
    try:
        assert client.info.flash_attn is (kv.flash_attn != "off")  # `auto` resolves to on on a CPU
        kv_mib = 4096 * kv_bytes_per_token(record_for(DEFAULT_MODEL).metadata, kv) / (1 << 20)
        assert client.info.context_buffers["KV"] == pytest.approx(kv_mib, abs=0.01)  # the types took
        cold_text, cold = run(generate(client, _prompt("beta-service"), 24))
        run(generate(client, _prompt("alpha-notes"), 24))  # takes the block over from beta's slot
        moved = engine.stats.moved_tokens
        again_text, again = run(generate(client, _prompt("beta-service"), 24))  # and back
        assert moved > 500 and engine.stats.moved_tokens > moved, "the block should have moved twice"
        assert again.cached_tokens > 500
        assert opening(again_text) == opening(cold_text), (again_text, cold_text)
        for slot in engine.pool.evictable():  # out of the KV cache: the state goes to host RAM
            engine.evict(slot)
        assert engine.cache.ram
        ram_text, ram = run(generate(client, _prompt("beta-service"), 24))
        assert ram.cached_tokens > 500
        assert opening(ram_text) == opening(cold_text), (ram_text, cold_text)
    finally:
        close(client)


@pytest.mark.parametrize("flash", ["on", "off"])
def test_a_state_saved_by_a_larger_context_restores_into_a_smaller_one(tmp_path, flash: str):
    """Why the disk cache is not kept per context size (V transposed or not alike)."""
    kv = KvCacheConfig("q8_0" if flash == "on" else "f16", "q8_0" if flash == "on" else "f16", flash)
    big = make_engine(tmp_path, parallel=1, n_ctx=8192, kv=kv)
    try:
        cold_text, _ = run(generate(big, _prompt("gamma"), 24))
    finally:
        close(big)
    small = make_engine(tmp_path, parallel=1, n_ctx=4096, kv=kv)  # the same cache folder
    try:
        assert small.engine.cache.disk
        text, restored = run(generate(small, _prompt("gamma"), 24))
        assert restored.cached_tokens > 500
        assert opening(text) == opening(cold_text), (text, cold_text)
    finally:
        close(small)


@pytest.mark.parametrize("cache_type", ["f16", "bf16", "q8_0", "q5_1", "q4_0"])
def test_the_cpu_self_check_probe_decodes_with_each_cache_type(cache_type: str):
    # with extra buffer types where this CPU runs them (the probe that found they crash stays a crash)
    bufts = "on" if default_model_repack() else "off"
    cmd = worker_argv("--probe", str(DEFAULT_MODEL), "probe", "2", bufts)
    probe = subprocess.run(
        [*cmd, cache_type, cache_type, "auto"], capture_output=True, text=True, timeout=300
    )
    assert probe.returncode == 0, probe.stderr[-2000:]
    assert f"KV {cache_type}, flash attention True" in probe.stderr  # `auto` is on for a CPU
