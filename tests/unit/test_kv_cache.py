"""KV cache types, flash attention and the memory plan (issue 25): the rules, without a model.

The model here is a sparse file with Qwen2.5-7B's shape (28 layers, 4 KV heads of 128, 128k trained),
so the estimates are those of a real 7B load; what llama.cpp does with them is in tests/e2e/test_kv_cache.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from lmdock.api.native.routes import LoadConfig
from lmdock.core.config import Settings
from lmdock.core.errors import InvalidRequest, ModelLoadError
from lmdock.core.kv_cache import KvCacheConfig, element_bytes, flash_attn_value
from lmdock.models.estimate import (
    AGENT_CONTEXT,
    MemoryBudget,
    check_fits,
    context_ladder,
    default_context,
    estimate_memory,
)
from lmdock.models.memory import available_bytes
from lmdock.models.store import GGUFMetadata, ModelRecord

GIB = 1 << 30
F16 = KvCacheConfig()
Q8 = KvCacheConfig("q8_0", "q8_0")


@pytest.fixture
def seven_b(tmp_path: Path) -> ModelRecord:
    path = tmp_path / "qwen-7b.gguf"
    with path.open("wb") as f:
        f.truncate(4_680_000_000)  # sparse: the size of a 7B Q4_K_M file, no disk used
    record = ModelRecord("qwen-7b", path)
    record.__dict__["metadata"] = GGUFMetadata(
        architecture="qwen2",
        context_length=131072,
        n_layer=28,
        n_embd=3584,
        n_head=28,
        n_head_kv=4,
        key_length=128,
        value_length=128,
    )
    return record


# --- the settings and their rules ------------------------------------------------------------------


def test_names_are_llama_cpps_and_lm_studios_bool_maps_to_on_off():
    assert KvCacheConfig("Q8_0", "q4_0", "AUTO").checked() == KvCacheConfig("q8_0", "q4_0", "auto")
    assert flash_attn_value(True) == "on" and flash_attn_value(False) == "off"
    assert flash_attn_value("1") == "on" and flash_attn_value("false") == "off"
    with pytest.raises(InvalidRequest, match="flash_attn: 'maybe'"):
        flash_attn_value("maybe")


@pytest.mark.parametrize("field", ["type_k", "type_v"])
def test_an_unknown_type_is_a_400_naming_the_field_and_the_choices(field: str):
    with pytest.raises(InvalidRequest) as err:
        KvCacheConfig(**{field: "q3_k"}).checked()
    assert err.value.param == f"cache_{field}" and "q8_0" in err.value.message and "q5_1" in err.value.message


def test_quantized_v_without_flash_attention_is_refused_but_quantized_k_is_not():
    with pytest.raises(InvalidRequest, match="needs flash attention") as err:
        KvCacheConfig("f16", "q8_0", "off").checked()
    assert err.value.param == "cache_type_v"
    assert KvCacheConfig("q8_0", "f16", "off").checked().type_k == "q8_0"  # llama.cpp allows this one
    assert KvCacheConfig("q4_0", "q4_0", "auto").checked().flash_attn == "auto"  # llama.cpp turns it on


def test_a_block_that_does_not_divide_the_head_size_is_refused_with_flash_attention():
    KvCacheConfig("q8_0", "q8_0", "on").check_head_sizes(128, 128)
    with pytest.raises(InvalidRequest, match="head size of 80") as err:
        KvCacheConfig("q8_0", "f16", "on").check_head_sizes(80, 80)  # e.g. phi-2's heads
    assert err.value.param == "cache_type_k"
    KvCacheConfig("q8_0", "f16", "off").check_head_sizes(80, 80)  # without flash attention, any size


def test_serve_settings_refuse_an_impossible_combination():
    with pytest.raises(InvalidRequest, match="cache_type_v"):
        Settings(cache_type_v="q4_0", flash_attn="off")
    assert Settings(cache_type_k="Q8_0", flash_attn="on").kv_cache == KvCacheConfig("q8_0", "f16", "on")


def test_the_load_body_takes_both_vocabularies_and_refuses_a_disagreement():
    assert LoadConfig(kv_cache_type="q8_0", flash_attention=True).kv_options() == ("q8_0", "q8_0", "on")
    assert LoadConfig(kv_cache_type="q8_0", cache_type_v="q8_0").kv_options() == ("q8_0", "q8_0", None)
    assert LoadConfig(cache_type_k="q4_0", flash_attn="off").kv_options() == ("q4_0", None, "off")
    with pytest.raises(InvalidRequest, match="disagrees with kv_cache_type") as err:
        LoadConfig(kv_cache_type="q8_0", cache_type_k="q4_0").kv_options()
    assert err.value.param == "cache_type_k"
    with pytest.raises(InvalidRequest, match="flash_attention"):
        LoadConfig(flash_attn="on", flash_attention=False).kv_options()
    with pytest.raises(InvalidRequest, match="kv_cache_type: 'int4'"):
        LoadConfig(kv_cache_type="int4").kv_options()


# --- the estimate and the context that fits --------------------------------------------------------


def test_kv_bytes_follow_the_element_size(seven_b: ModelRecord):
    f16 = estimate_memory(seven_b, 32768, F16)
    assert f16.kv_bytes_per_token == 28 * 4 * (128 + 128) * 2  # 56 KiB a token
    q8 = estimate_memory(seven_b, 32768, Q8)
    q4 = estimate_memory(seven_b, 32768, KvCacheConfig("q4_0", "q4_0"))
    assert (
        q8.kv_cache_bytes == f16.kv_cache_bytes * 34 // 64
        and q4.kv_cache_bytes == f16.kv_cache_bytes * 18 // 64
    )
    assert element_bytes("bf16") == 2 and element_bytes("q5_1") == 24 / 32
    assert (f16.kv_cache_type, estimate_memory(seven_b, 1, KvCacheConfig("q8_0", "f16")).kv_cache_type) == (
        "f16",
        None,
    )


def test_without_flash_attention_the_scores_of_a_batch_grow_with_the_context(seven_b: ModelRecord):
    on = estimate_memory(seven_b, 32768, F16)
    off = estimate_memory(seven_b, 32768, KvCacheConfig(flash_attn="off"))
    assert off.compute_bytes - on.compute_bytes == 32768 * 512 * 28 * 4  # f32, per head
    assert estimate_memory(seven_b, 32768, KvCacheConfig(flash_attn="auto")).compute_bytes == on.compute_bytes


def test_the_ladder_is_coarse_and_ends_at_the_limit():
    assert context_ladder(32768) == [2048, 3072, 4096, 6144, 8192, 12288, 16384, 24576, 32768]
    assert context_ladder(40960)[-2:] == [32768, 40960]
    assert context_ladder(1024) == [1024]


def test_a_big_machine_gets_the_trained_context(seven_b: ModelRecord):
    assert default_context(seven_b, F16, MemoryBudget(64 * GIB, 2 * GIB), 512) == 131072


def test_a_laptop_gets_the_largest_context_that_fits_and_more_with_q8_0(seven_b: ModelRecord):
    budget = MemoryBudget(10 * GIB, 2 * GIB)
    f16 = default_context(seven_b, F16, budget, 512)
    q8 = default_context(seven_b, Q8, budget, 512)
    assert f16 == 49152 and q8 == 98304
    for ctx, kv in ((f16, F16), (q8, Q8)):
        assert estimate_memory(seven_b, ctx, kv).total_bytes <= budget.available - budget.reserve


def test_the_agent_floor_may_use_the_cache_budget_but_never_more_than_is_there(seven_b: ModelRecord):
    # 7.5 GiB: 32k of f16 does not fit beside a 2 GiB RAM cache budget, but fits without it
    floor = default_context(seven_b, F16, MemoryBudget(int(7.5 * GIB), 2 * GIB), 512)
    assert floor == AGENT_CONTEXT
    small = default_context(seven_b, F16, MemoryBudget(6 * GIB, 2 * GIB), 512)
    assert small < AGENT_CONTEXT
    assert estimate_memory(seven_b, small, F16).total_bytes <= 6 * GIB


def test_unknown_memory_keeps_the_old_default(seven_b: ModelRecord):
    assert default_context(seven_b, F16, MemoryBudget(None), 512) == 32768


def test_a_load_that_does_not_fit_names_what_would(seven_b: ModelRecord):
    budget = MemoryBudget(8 * GIB)
    check_fits(seven_b, 32768, F16, budget, 512)
    with pytest.raises(ModelLoadError) as err:
        check_fits(seven_b, 131072, F16, budget, 512)
    message = err.value.message
    assert err.value.param == "context_length" and err.value.status == 400
    assert "131072 tokens of f16 KV cache" in message and "8.0 GiB is available" in message
    assert "a context of 49152 tokens fits (98304 with a q8_0 KV cache)" in message
    with pytest.raises(ModelLoadError, match="no context of this model fits"):
        check_fits(seven_b, 4096, F16, MemoryBudget(2 * GIB), 512)
    check_fits(seven_b, 10**6, F16, MemoryBudget(None), 512)  # unknown memory: nothing refused


# --- the memory probe ------------------------------------------------------------------------------


def _proc(tmp_path: Path, available_kib: int, cgroup: str) -> Path:
    proc = tmp_path / "proc"
    (proc / "self").mkdir(parents=True)
    (proc / "meminfo").write_text(f"MemTotal: 99999999 kB\nMemAvailable: {available_kib} kB\n")
    (proc / "self" / "cgroup").write_text(cgroup)
    return proc


def _group(folder: Path, files: dict[str, str]) -> None:
    folder.mkdir(parents=True)
    for name, text in files.items():
        (folder / name).write_text(text)


def test_available_memory_is_memavailable_without_a_limit(tmp_path: Path):
    proc = _proc(tmp_path, 8 << 20, "0::/\n")
    assert available_bytes(proc, tmp_path / "cgroup") == 8 * GIB


def test_a_cgroup_v2_limit_lowers_it_counting_page_cache_as_free(tmp_path: Path):
    proc = _proc(tmp_path, 8 << 20, "0::/user.slice/lmdock\n")
    _group(
        tmp_path / "cgroup/user.slice/lmdock",
        {"memory.max": str(4 * GIB), "memory.current": str(3 * GIB), "memory.stat": f"inactive_file {GIB}\n"},
    )
    assert available_bytes(proc, tmp_path / "cgroup") == 2 * GIB


def test_a_cgroup_v1_limit_seen_at_the_root_of_a_container(tmp_path: Path):
    proc = _proc(tmp_path, 8 << 20, "4:memory:/docker/abc\n1:cpu:/\n")
    _group(
        tmp_path / "cgroup/memory",
        {
            "memory.limit_in_bytes": str(6 * GIB),
            "memory.usage_in_bytes": str(GIB),
            "memory.stat": "total_inactive_file 0\n",
        },
    )
    assert available_bytes(proc, tmp_path / "cgroup") == 5 * GIB
    (tmp_path / "cgroup/memory/memory.limit_in_bytes").write_text("9223372036854771712")  # v1's "none"
    assert available_bytes(proc, tmp_path / "cgroup") == 8 * GIB


# --- what llama.cpp says about a context, and the prompt-cache folder it keys ----------------------


def test_flash_attention_in_effect_comes_from_llama_cpps_log():
    from lmdock.engine.llama_model import buffer_sizes, flash_attn_in_effect

    lines = [
        (2, "llama_context: flash_attn    = auto\n"),
        (2, "llama_kv_cache:        CPU KV buffer size =    48.00 MiB\n"),
        (2, "resolve_fused_ops: Flash Attention enabled\n"),
        (2, "llama_context:        CPU compute buffer size =   300.26 MiB\n"),
    ]
    assert flash_attn_in_effect("auto", lines) is True
    assert (
        flash_attn_in_effect(
            "auto", [(3, "resolve_fused_ops: Flash Attention not supported, set to disabled\n")]
        )
        is False
    )
    assert (
        flash_attn_in_effect(
            "auto",
            [(2, "llama_init_from_model: enabling flash_attn since it is required for quantized V cache\n")],
        )
        is True
    )
    assert flash_attn_in_effect("auto", []) is None  # llama.cpp did not say: unknown, never guessed
    assert flash_attn_in_effect("off", lines) is False
    assert buffer_sizes(lines, "KV") == {"CPU": 48.0} and buffer_sizes(lines, "compute") == {"CPU": 300.26}


def test_each_kv_layout_has_its_own_prompt_cache_folder():
    from types import SimpleNamespace

    from lmdock.engine.local import cache_layout
    from lmdock.engine.spec import ContextParams

    def layout(kv: KvCacheConfig, flash: bool | None, n_ctx: int = 8192) -> str:
        params = ContextParams(n_ctx=n_ctx, n_batch=512, n_seq_max=1, n_threads=1, kv=kv)
        return cache_layout(SimpleNamespace(params=params, n_ctx=n_ctx, flash_attn=flash))

    seen = {
        layout(F16, True),
        layout(F16, False),
        layout(Q8, True),
        layout(KvCacheConfig("q8_0", "f16"), True),
        layout(KvCacheConfig("f16", "q8_0"), True),
    }
    assert len(seen) == 5
    assert layout(F16, True, 4096) == layout(F16, True, 32768)  # a state loads into any context size
    # the setting is not the key, what runs is: `auto` that resolved to on shares on's folder
    assert layout(KvCacheConfig(flash_attn="auto"), True) == layout(KvCacheConfig(flash_attn="on"), True)


def test_entries_longer_than_the_context_are_left_for_a_larger_one(tmp_path: Path):
    from lmdock.engine.prompt_cache import PromptCache

    def save(path: Path) -> bool:
        path.write_bytes(b"state")
        return True

    big = PromptCache(ram_bytes=0, disk_dir=tmp_path, min_tokens=4, min_gain=1)
    assert big.persist(list(range(100)), 5, save)
    small = PromptCache(ram_bytes=0, disk_dir=tmp_path, min_tokens=4, min_gain=1, max_tokens=64)
    assert small.lookup(list(range(60)), have=0) is None  # 100 tokens cannot load into 64
    assert small.wants_persist(list(range(60)))  # so the shorter prompt gets an entry of its own
    again = PromptCache(ram_bytes=0, disk_dir=tmp_path, min_tokens=4, min_gain=1, max_tokens=128)
    hit = again.lookup(list(range(60)), have=0)
    assert hit is not None and hit.n_tokens == 59 and len(hit.entry.tokens) == 100
