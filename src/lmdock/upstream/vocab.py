"""A local GGUF's vocabulary and chat template (loaded vocab-only: no weights, no context), for counting
tokens and rendering raw prompts of an upstream model that serves the same model."""

from __future__ import annotations

import ctypes
import threading
from pathlib import Path

import llama_cpp as L

from lmdock.engine.llama_model import init_backend, tokenize
from lmdock.upstream.config import UpstreamConfigError


class GgufVocab:
    def __init__(self, path: Path) -> None:
        init_backend()
        if not path.is_file():
            raise UpstreamConfigError(f"tokenizer {path}: no such file")
        params = L.llama_model_default_params()
        params.vocab_only = True
        self._model = L.llama_model_load_from_file(str(path).encode(), params)
        if not self._model:
            raise UpstreamConfigError(f"tokenizer {path}: not a GGUF file llama.cpp can read")
        self.vocab = L.llama_model_get_vocab(self._model)
        raw = L.llama_model_chat_template(self._model, None)
        self.chat_template = raw.decode("utf-8") if raw else None
        self.bos_token = self._piece(L.llama_vocab_bos(self.vocab))
        self.eos_token = self._piece(L.llama_vocab_eos(self.vocab))
        self._lock = threading.Lock()

    def _piece(self, token: int) -> str:
        if token < 0:
            return ""
        buf = ctypes.create_string_buffer(256)
        n = L.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, True)
        return buf.raw[: max(n, 0)].decode("utf-8", errors="replace")

    def count(self, text: str, add_special: bool = False) -> int:
        with self._lock:
            return len(tokenize(self.vocab, text, add_special=add_special, parse_special=True))
