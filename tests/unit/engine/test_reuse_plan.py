"""The pure chunk-reuse planner: token lists in, a reuse plan out."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from gguf import GGUFWriter

from lmdock.engine.gguf_header import read_gguf_header
from lmdock.engine.reuse import HOLE, ReusePlan, Run, plan_reuse, run_anchors, shift_blocker, window_hashes


def _rand(n: int, seed: int) -> list[int]:
    rng = random.Random(seed)
    return [rng.randrange(1000, 50000) for _ in range(n)]


def _check(plan: ReusePlan, cached: list[int], prompt: list[int], min_run: int) -> None:
    """Every reused token is the same token in both sequences; runs are ordered, disjoint, long enough."""
    assert cached[: plan.prefix] == prompt[: plan.prefix]
    last_src = last_dst = plan.prefix
    for run in plan.runs:
        assert run.length >= min_run
        assert run.src >= last_src and run.dst >= last_dst
        assert cached[run.src : run.src + run.length] == prompt[run.dst : run.dst + run.length]
        last_src, last_dst = run.src + run.length, run.dst + run.length
    assert last_dst <= len(prompt) - 1  # the last prompt token is always computed


def test_identical_prompt_keeps_one_token_to_compute():
    p = _rand(500, 1)
    plan = plan_reuse(p, p, 32)
    assert plan == ReusePlan(prefix=499)


def test_extension_is_prefix_only():
    cached = _rand(300, 2)
    prompt = cached + _rand(50, 3)
    plan = plan_reuse(cached, prompt, 32)
    assert plan.prefix == 300 and plan.runs == []


def test_substitution_in_the_middle_reuses_the_tail():
    """Claude Code's case: same system text except a path, then the same long tool block."""
    head, tools, tail = _rand(400, 4), _rand(3000, 5), _rand(60, 6)
    cached = head + [11, 12, 13] + tools + tail
    prompt = head + [21, 22, 23, 24, 25] + tools + _rand(40, 7)
    plan = plan_reuse(cached, prompt, 64)
    _check(plan, cached, prompt, 64)
    assert plan.prefix == 400
    assert plan.runs == [Run(src=403, dst=405, length=3000)]
    assert plan.runs[0].shift == 2
    assert plan.reused == 3400


def test_deletion_and_insertion_both_found():
    a, b, c = _rand(200, 8), _rand(300, 9), _rand(300, 10)
    cached = a + _rand(50, 11) + b + c
    prompt = a + b + _rand(20, 12) + c + [7]
    plan = plan_reuse(cached, prompt, 32)
    _check(plan, cached, prompt, 32)
    assert plan.runs == [Run(src=250, dst=200, length=300), Run(src=550, dst=520, length=300)]


def test_runs_shorter_than_min_run_are_ignored():
    a = _rand(100, 13)
    cached = a + _rand(10, 14) + _rand(40, 15) + _rand(10, 16)
    prompt = a + _rand(5, 17) + cached[110:150] + _rand(10, 18)
    assert plan_reuse(cached, prompt, 41).runs == []
    assert plan_reuse(cached, prompt, 40).runs == [Run(src=110, dst=105, length=40)]


def test_prefix_only_when_runs_not_allowed():
    head, tools = _rand(100, 19), _rand(500, 20)
    cached = head + [1] + tools
    prompt = head + [2] + tools + [3]
    assert plan_reuse(cached, prompt, 32, allow_runs=False) == ReusePlan(prefix=100)


def test_run_stops_before_the_last_prompt_token():
    head, tools = _rand(50, 21), _rand(200, 22)
    cached = head + [1] + tools
    prompt = head + [2] + tools  # the prompt ends inside the cached run
    plan = plan_reuse(cached, prompt, 32)
    _check(plan, cached, prompt, 32)
    assert plan.runs == [Run(src=51, dst=51, length=199)]


def test_holes_never_match():
    head, tools = _rand(50, 23), _rand(200, 24)
    cached = head + [1] + tools[:100] + [HOLE] * 20 + tools[120:]
    prompt = head + [2] + tools + [9]
    plan = plan_reuse(cached, prompt, 32)
    _check(plan, cached, prompt, 32)
    assert plan.runs == [Run(src=51, dst=51, length=100), Run(src=171, dst=171, length=80)]


def test_runs_keep_cached_order():
    """A block moved earlier in the prompt is not reused across an already reused later block."""
    x, y = _rand(100, 25), _rand(100, 26)
    cached = [5] + x + y
    prompt = [6] + y + x + [8]
    plan = plan_reuse(cached, prompt, 32)
    _check(plan, cached, prompt, 32)
    assert len(plan.runs) == 1


@pytest.mark.parametrize("min_run", [4, 32])  # the scan without an index, and the indexed one
def test_a_block_repeated_in_the_prompt_is_reused_once(min_run: int):
    """Each cached token moves to at most one place: the next run starts after the previous one ends."""
    a, b = _rand(100, 27), _rand(100, 28)
    cached = a + b
    prompt = [6] * 20 + a + a + b + [8]
    plan = plan_reuse(cached, prompt, min_run)
    _check(plan, cached, prompt, min_run)
    assert plan.runs == [Run(src=0, dst=20, length=100), Run(src=100, dst=220, length=100)]


@pytest.mark.parametrize("min_run", [1, 4, 8, 16, 100])
def test_random_edits_are_consistent(min_run: int):
    rng = random.Random(min_run)
    for trial in range(20):
        cached = _rand(rng.randrange(1, 800), trial)
        prompt = list(cached)
        for _ in range(rng.randrange(0, 6)):
            i = rng.randrange(0, len(prompt) + 1)
            kind = rng.choice("ids")
            if kind == "i":
                prompt[i:i] = _rand(rng.randrange(1, 30), trial + 100)
            elif kind == "d":
                del prompt[i : i + rng.randrange(1, 30)]
            else:
                prompt[i : i + 3] = _rand(3, trial + 200)
        if not prompt:
            prompt = [1]
        _check(plan_reuse(cached, prompt, min_run), cached, prompt, min_run)


def test_repetitive_text_stays_fast_and_valid():
    cached = [7] * 5000 + _rand(100, 27)
    prompt = [8] + [7] * 4000 + _rand(100, 27)
    plan = plan_reuse(cached, prompt, 64)
    _check(plan, cached, prompt, 64)
    assert plan.reused >= 4000


def test_empty_inputs():
    assert plan_reuse([], [1, 2, 3], 8) == ReusePlan(prefix=0)
    assert plan_reuse([1, 2, 3], [1], 8) == ReusePlan(prefix=0)


def _header(tmp_path: Path, arch: str, **kv) -> tuple[dict, dict]:
    path = tmp_path / f"{arch}.gguf"
    writer = GGUFWriter(str(path), arch)
    writer.add_context_length(2048)
    for key, value in kv.items():
        key = f"{arch}.{key.replace('__', '.')}"
        if isinstance(value, list):
            writer.add_array(key, value)
        else:
            writer.add_uint32(key, value)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    header = read_gguf_header(path)
    return header.kv, header.array_lengths


@pytest.mark.parametrize(
    ("arch", "kv", "blocked"),
    [
        ("qwen2", {"rope__dimension_count": 64}, None),
        ("llama", {}, None),
        ("gemma2", {"attention__sliding_window": 4096}, "sliding-window"),
        ("mamba", {"ssm__state_size": 16}, "recurrent"),
        ("granitehybrid", {"ssm__conv_kernel": 4}, "recurrent"),
        ("rwkv7", {}, "recurrent"),
        ("qwen2vl", {"rope__dimension_sections": [16, 24, 24, 0]}, "multi-section RoPE"),
    ],
)
def test_shift_capability_from_a_tiny_gguf(tmp_path: Path, arch: str, kv: dict, blocked: str | None):
    """Models whose KV cannot be shifted get prefix-only reuse (the engine passes allow_runs=False)."""
    reason = shift_blocker(*_header(tmp_path, arch, **kv))
    if blocked is None:
        assert reason is None
    else:
        assert blocked in reason


@pytest.mark.parametrize("min_run", [8, 9, 64, 256])
def test_run_anchors_find_every_run_plan_reuse_finds(min_run: int):
    """The cheap test before planning never hides a run: wherever `plan_reuse` finds one, the sampled
    anchors of the cached sequence meet the prompt's windows; unrelated text meets none."""
    rng = random.Random(min_run)
    for trial in range(40):
        cached = _rand(rng.randrange(min_run, 3000), trial)
        start = rng.randrange(0, len(cached) - min_run + 1)
        length = rng.randrange(min_run, len(cached) - start + 1)
        prompt = _rand(rng.randrange(1, 50), trial + 500) + cached[start : start + length] + [7]
        assert plan_reuse(cached, prompt, min_run).reused >= min_run
        anchors = run_anchors(cached, min_run)
        assert anchors is not None and not anchors.isdisjoint(window_hashes(prompt)), (trial, start, length)
        assert anchors.isdisjoint(window_hashes(_rand(2000, trial + 900)))


def test_run_anchors_decline_runs_shorter_than_an_anchor():
    assert run_anchors(_rand(100, 1), 4) is None
