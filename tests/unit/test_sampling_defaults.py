"""Sampling defaults for requests that set none: user preset > GGUF general.sampling.* > lmdock's own."""

from __future__ import annotations

import json
import os
from pathlib import Path

from gguf import GGUFWriter

from lmdock.core.request import BUILTIN_SAMPLING, SamplingParams
from lmdock.models.sampling_defaults import preset_path, sampling_defaults
from lmdock.models.store import record_for


def _gguf(path: Path, sampling: dict[str, float] | None = None) -> Path:
    writer = GGUFWriter(str(path), "llama")
    writer.add_name("Tiny")
    writer.add_context_length(2048)
    for key, value in (sampling or {}).items():
        if isinstance(value, int):
            writer.add_int32(f"general.sampling.{key}", value)
        else:
            writer.add_float32(f"general.sampling.{key}", value)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_builtin_defaults_when_nothing_else(tmp_path: Path):
    d = sampling_defaults(record_for(_gguf(tmp_path / "plain.gguf")), home=tmp_path)
    assert d.params == BUILTIN_SAMPLING.resolved()
    assert set(d.sources.values()) == {"lmdock"}
    assert d.params.temperature < 1.0 and d.params.top_k > 0  # not the Messages API's 1.0 on purpose


def test_gguf_keys_are_the_models_recommendation(tmp_path: Path):
    path = _gguf(tmp_path / "rec.gguf", {"temp": 0.6, "top_k": 20, "top_p": 0.8, "penalty_repeat": 1.05})
    d = sampling_defaults(record_for(path), home=tmp_path)
    assert (d.params.temperature, d.params.top_k, d.params.top_p) == (
        0.6000000238418579,
        20,
        0.800000011920929,
    )
    assert round(d.params.repeat_penalty, 3) == 1.05
    assert d.params.min_p == BUILTIN_SAMPLING.min_p
    assert d.sources["temperature"] == "gguf" and d.sources["min_p"] == "lmdock"


def test_user_preset_wins_and_is_reread_when_edited(tmp_path: Path):
    record = record_for(_gguf(tmp_path / "m.gguf", {"temp": 0.6, "top_k": 20}))
    preset = preset_path(record.key, tmp_path)
    preset.parent.mkdir(parents=True)
    preset.write_text(json.dumps({"temperature": 1.0, "top_p": 1.0, "bogus": 3, "min_p": 7}))
    d = sampling_defaults(record, home=tmp_path)
    assert (d.params.temperature, d.params.top_k, d.params.top_p) == (1.0, 20, 1.0)
    assert d.sources == {
        "temperature": "preset",
        "top_k": "gguf",
        "top_p": "preset",
        "min_p": "lmdock",  # 7 is out of range: ignored
        "repeat_penalty": "lmdock",
        "penalty_last_n": "lmdock",
    }
    preset.write_text(json.dumps({"temperature": 0.1}))
    os.utime(preset, ns=(1, 10**18))  # a new mtime even on coarse clocks
    assert sampling_defaults(record, home=tmp_path).params.temperature == 0.1


def test_broken_preset_is_ignored(tmp_path: Path):
    record = record_for(_gguf(tmp_path / "b.gguf"))
    preset = preset_path(record.key, tmp_path)
    preset.parent.mkdir(parents=True)
    preset.write_text("{not json")
    assert sampling_defaults(record, home=tmp_path).params == BUILTIN_SAMPLING.resolved()


def test_explicit_request_values_win_and_zero_stays_greedy():
    defaults = SamplingParams(temperature=0.2, top_k=40, top_p=0.95, min_p=0.05)
    r = SamplingParams(temperature=0.0).resolved(defaults)
    assert r.temperature == 0.0 and r.top_k == 40
    r = SamplingParams(temperature=1.0, top_k=0).resolved(defaults)
    assert (r.temperature, r.top_k, r.top_p, r.min_p) == (1.0, 0, 0.95, 0.05)
    assert SamplingParams().resolved(defaults).temperature == 0.2
    resolved = SamplingParams().resolved().as_dict()
    assert all(v is not None for k, v in resolved.items() if k != "seed")
