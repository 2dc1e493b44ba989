"""The store's metadata reader, memory estimate and capability hints, on small crafted GGUF files."""

from pathlib import Path

import pytest

from lmdock.core.errors import InvalidRequest, ModelLoadError
from lmdock.core.kv_cache import KvCacheConfig
from lmdock.engine.gguf_header import GGUFFormatError, read_gguf_header
from lmdock.models.capabilities import capabilities, model_type
from lmdock.models.estimate import estimate_memory
from lmdock.models.store import model_key, read_metadata, record_for, scan
from tests.hf_fixture import write_gguf


@pytest.fixture
def store(tmp_path: Path) -> Path:
    folder = tmp_path / "models" / "acme" / "Tiny-GGUF"
    folder.mkdir(parents=True)
    write_gguf(folder / "tiny-Q4_K_M.gguf", pad_floats=1000)
    write_gguf(folder / "mmproj-tiny-f16.gguf")
    return tmp_path / "models"


def test_header_reader_counts_params_and_checks_size(store: Path):
    path = store / "acme/Tiny-GGUF/tiny-Q4_K_M.gguf"
    header = read_gguf_header(path)
    assert header.kv["general.name"] == "Tiny Test"
    assert header.array_lengths["tokenizer.ggml.tokens"] == 4
    assert header.n_params == 1000 and header.tensor_bytes == 4000
    assert header.required_size == path.stat().st_size


def test_truncated_and_foreign_files_are_reported(tmp_path: Path, store: Path):
    data = (store / "acme/Tiny-GGUF/tiny-Q4_K_M.gguf").read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(data[:-100])
    with pytest.raises(GGUFFormatError, match="truncated"):
        read_gguf_header(cut)
    cut.write_bytes(b"not a model at all, just some text")
    with pytest.raises(ModelLoadError, match="not a loadable GGUF"):
        read_metadata(cut)
    record = record_for(cut)
    assert record.metadata.error and "magic" in record.metadata.error
    with pytest.raises(ModelLoadError):
        record.check_loadable()


def test_scan_skips_projectors_and_reads_metadata(store: Path):
    (record,) = scan(store)
    assert (record.key, record.publisher, record.repo) == ("tiny", "acme", "Tiny-GGUF")
    assert "acme/tiny-gguf" in record.aliases
    meta = record.metadata
    assert (meta.architecture, meta.context_length, meta.n_layer, meta.n_head_kv) == ("llama", 2048, 2, 2)
    assert (meta.key_length, meta.value_length) == (16, 16)
    caps = capabilities(record)
    assert caps.vision and caps.trained_for_tool_use and not caps.reasoning
    assert model_type(record) == "llm"


def test_memory_estimate_is_weights_plus_kv_plus_buffers(store: Path):
    (record,) = scan(store)
    est = estimate_memory(record, 1000, KvCacheConfig())
    assert est.kv_bytes_per_token == 2 * 2 * (16 + 16) * 2  # layers x kv heads x (k + v) x f16
    assert est.kv_cache_bytes == 1000 * est.kv_bytes_per_token
    assert est.total_bytes == (record.size_bytes + est.kv_cache_bytes + est.compute_bytes + est.process_bytes)
    q8 = estimate_memory(record, 1000, KvCacheConfig("q8_0", "q8_0"))
    assert q8.kv_bytes_per_token == 2 * 2 * (16 + 16) * 34 // 32  # 32 values in 34 bytes
    with pytest.raises(InvalidRequest, match="cache_type_k"):
        KvCacheConfig("int3", "f16").checked()


def test_split_model_parts_share_one_key(tmp_path: Path):
    assert model_key(Path("Big-Model-Q4_K_M-00001-of-00003.gguf")) == "big-model"
    for i in (1, 2):
        write_gguf(tmp_path / f"big-q8_0-0000{i}-of-00002.gguf")
    assert [r.path.name for r in scan(tmp_path)] == ["big-q8_0-00001-of-00002.gguf"]
