"""The default model's real vocabulary and chat template for the chat tests, loaded once and without
weights (skipped when the GGUF is not installed)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import llama_cpp as L
import pytest

from lmdock.core.config import default_models_dir
from lmdock.engine.llama_model import chat_template, control_texts, load_model_file, tokenize
from lmdock.models.default_model import default_model_path

MODEL = default_model_path(default_models_dir())


@dataclass
class RealVocab:
    vocab: Any  # llama_vocab_p, for llguidance
    template: str

    def tokenize(self, text: str, *, parse_special: bool = True) -> list[int]:
        """As a prompt is tokenized: no BOS added, special-token text read as the special token."""
        return tokenize(self.vocab, text, add_special=False, parse_special=parse_special)

    def control_texts(self) -> list[str]:
        return control_texts(self.vocab)


@pytest.fixture(scope="session")
def real_vocab() -> Iterator[RealVocab]:
    if not MODEL.exists():
        pytest.skip(f"default model not installed at {MODEL}")
    model, _ = load_model_file(MODEL, vocab_only=True)
    assert model
    template = chat_template(model)
    assert template
    yield RealVocab(L.llama_model_get_vocab(model), template)
    L.llama_model_free(model)
