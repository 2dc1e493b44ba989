"""The server's tokenizer: a vocabulary-only load of the model file (no weights, no context).

Rendering and counting stay in the server process, so `count_tokens` and prompt preparation never wait
on the worker (and keep working while it restarts). An upstream model configured with a local GGUF
`tokenizer` counts and renders with one too. `close()` waits for tokenizations in progress, so an unload
cannot free the vocabulary under a request that is still tokenizing.
"""

from __future__ import annotations

import threading
from pathlib import Path

import llama_cpp as L

from lmdock.core.errors import ModelLoadError, ModelUnavailable
from lmdock.engine.llama_model import (
    chat_template,
    control_texts,
    load_model_file,
    token_id,
    token_text,
    tokenize,
)


class Vocab:
    """A model file's vocabulary and chat template (with the BOS/EOS texts the template expects)."""

    def __init__(self, path: Path, key: str) -> None:
        self.key = key
        if not path.is_file():
            raise ModelLoadError(f"model file not found: {path}")
        model, _ = load_model_file(path, vocab_only=True)
        if not model:
            raise ModelLoadError(
                f"failed to load the vocabulary of {path.name}: not a GGUF file llama.cpp can read"
            )
        vocab = L.llama_model_get_vocab(model)
        if not vocab:
            L.llama_model_free(model)
            raise ModelLoadError(f"failed to load the vocabulary of {path.name}: it has none")
        self._model, self._vocab = model, vocab
        self.n_vocab = int(L.llama_vocab_n_tokens(vocab))
        self.chat_template = chat_template(model)
        self.bos_text = token_text(vocab, token_id(L.llama_vocab_bos(vocab)))
        self.eos_text = token_text(vocab, token_id(L.llama_vocab_eos(vocab)))
        self._users = 0
        self._closed = False
        self._cv = threading.Condition()

    def tokenize(self, text: str, *, add_special: bool = False, parse_special: bool = True) -> list[int]:
        with self._cv:
            if self._closed:
                raise ModelUnavailable(f"model '{self.key}' was unloaded; retry in a moment")
            self._users += 1
        try:
            return tokenize(self._vocab, text, add_special=add_special, parse_special=parse_special)
        finally:
            with self._cv:
                self._users -= 1
                self._cv.notify_all()

    def control_texts(self) -> list[str]:
        """The text of every control token: what message content must not produce (chat/plaintext.py)."""
        with self._cv:
            if self._closed:
                raise ModelUnavailable(f"model '{self.key}' was unloaded; retry in a moment")
            return control_texts(self._vocab)

    def close(self) -> None:
        with self._cv:
            while self._users:
                self._cv.wait()
            if not self._closed:
                self._closed = True
                L.llama_model_free(self._model)
