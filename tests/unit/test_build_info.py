"""What `lmdock --version` says about llama.cpp: read from the loaded libraries (no model needed)."""

from __future__ import annotations

import llama_cpp

from lmdock.engine.build_info import cpu_features, llama_build


def test_cpu_features_reads_llama_cpps_system_info():
    info = "CPU : SSE3 = 1 | AVX = 1 | AVX512 = 0 | CUDA : ARCHS = 890 | USE_GRAPHS = 1 | "
    assert cpu_features(info) == ["SSE3", "AVX", "ARCHS=890", "USE_GRAPHS"]


def test_the_build_names_its_versions_and_a_cpu_device():
    build = llama_build()
    assert build.binding_version == llama_cpp.__version__
    assert build.ggml_version[0].isdigit() and build.ggml_commit not in ("", "unknown")
    assert any(d.startswith("CPU") for d in build.devices), build.devices
    assert build.features and all(" " not in f for f in build.features)
    first, second = build.lines()
    assert f"llama-cpp-python {llama_cpp.__version__}" in first and "CPU" in second
