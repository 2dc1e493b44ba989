"""Which llama.cpp this lmdock runs on: the binding's version, ggml's version and commit, the backends
and the CPU features the build was compiled with (`lmdock --version`; what a bug report needs).

Asked of the loaded libraries at run time, never assumed: a wheel built on another machine, or a
llama-cpp-python built with other flags, reports itself. A symbol an older build lacks reads "unknown".
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

import llama_cpp
import llama_cpp.llama_cpp as bindings


@dataclass(frozen=True)
class LlamaBuild:
    binding_version: str  # llama-cpp-python's version
    ggml_version: str
    ggml_commit: str  # the llama.cpp/ggml commit the binding vendors
    devices: list[str]  # "CPU (AMD EPYC)": ggml's backend devices, name and description
    features: list[str]  # what the backends were compiled with (AVX2, AVX512, REPACK, ...)

    def lines(self) -> list[str]:
        return [
            f"llama.cpp: ggml {self.ggml_version}, commit {self.ggml_commit} "
            f"(llama-cpp-python {self.binding_version})",
            f"backends: {', '.join(self.devices) or 'unknown'}; compiled with: "
            f"{' '.join(self.features) or 'unknown'}",
        ]


def _function(name: str, restype, *argtypes):
    """A C function of libllama or the ggml libraries it links (dlsym searches dependencies), or None."""
    fn = getattr(bindings._lib, name, None)  # the handle llama-cpp-python loaded
    if fn is not None:
        fn.restype, fn.argtypes = restype, list(argtypes)
    return fn


def _text(name: str) -> str:
    fn = _function(name, ctypes.c_char_p)
    return fn().decode(errors="replace") if fn else "unknown"


def _devices() -> list[str]:
    count = _function("ggml_backend_dev_count", ctypes.c_size_t)
    get = _function("ggml_backend_dev_get", ctypes.c_void_p, ctypes.c_size_t)
    name = _function("ggml_backend_dev_name", ctypes.c_char_p, ctypes.c_void_p)
    describe = _function("ggml_backend_dev_description", ctypes.c_char_p, ctypes.c_void_p)
    if not (count and get and name and describe):
        return []
    devices = []
    for i in range(count()):
        dev = get(i)
        label, description = name(dev).decode(errors="replace"), describe(dev).decode(errors="replace")
        devices.append(f"{label} ({description})" if description and description != label else label)
    return devices


def cpu_features(system_info: str) -> list[str]:
    """The features a build has, from `llama_print_system_info()`: "CPU : SSE3 = 1 | AVX = 0 | ..." gives
    ["SSE3"]; a value other than 0/1 is kept ("ARCHS=890"). Backends follow each other as "NAME : ...".
    """
    features = []
    for item in system_info.split("|"):
        key, _, value = item.rpartition(":")[2].partition("=")
        key, value = key.strip(), value.strip()
        if key and value == "1":
            features.append(key)
        elif key and value not in ("", "0"):
            features.append(f"{key}={value}")
    return features


def llama_build() -> LlamaBuild:
    return LlamaBuild(
        binding_version=llama_cpp.__version__,
        ggml_version=_text("ggml_version"),
        ggml_commit=_text("ggml_commit"),
        devices=_devices(),
        features=cpu_features(llama_cpp.llama_print_system_info().decode(errors="replace")),
    )
