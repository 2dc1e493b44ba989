"""The fast tier loads no model: loading weights or creating a llama.cpp context in tests/unit fails the
test. A vocabulary-only load (tokenizer and chat template read from the GGUF, no weights, no compute) is
allowed; tests that decode belong in tests/engine or tests/e2e, which run through the model lock."""

from __future__ import annotations

from collections.abc import Iterator

import llama_cpp
import llama_cpp.llama_cpp as bindings
import pytest


@pytest.fixture(autouse=True, scope="session")
def _no_model_in_the_fast_tier() -> Iterator[None]:
    real_load = bindings.llama_model_load_from_file

    def load(path, params):
        if not params.vocab_only:
            raise AssertionError(
                "tests/unit loads no model weights: move this test to tests/engine or tests/e2e"
            )
        return real_load(path, params)

    def context(*args):
        raise AssertionError(
            "tests/unit creates no llama.cpp context: move this test to tests/engine or tests/e2e"
        )

    with pytest.MonkeyPatch.context() as patch:
        for module in (llama_cpp, bindings):
            patch.setattr(module, "llama_model_load_from_file", load)
            patch.setattr(module, "llama_init_from_model", context)
        yield
