"""A loaded GGUF model and its llama.cpp context, through llama-cpp-python's low-level bindings.

Tokenizer calls are safe from any thread (llama-server tokenizes on HTTP threads too); everything that
touches the context (decode, memory, state) belongs to the engine thread.
"""

from __future__ import annotations

import ctypes
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import cast

import llama_cpp as L
from llama_cpp import _logger as llama_cpp_logger

from lmdock.core.config import MAX_DEFAULT_CTX
from lmdock.core.errors import ModelLoadError
from lmdock.core.kv_cache import ggml_type
from lmdock.engine.bindings import check_bindings
from lmdock.engine.spec import ContextParams

_backend_lock = threading.Lock()
_backend_ready = False
_captured: list[tuple[int, str]] | None = None  # llama.cpp's log lines of the load in progress
_last_level = 0


@L.llama_log_callback
def _log_callback(level: int, text: bytes, user_data) -> None:
    """llama.cpp's log: errors go to stderr, a load's lines are kept while one runs, the rest is dropped."""
    global _last_level
    if level != 5:  # 5 continues the previous message
        _last_level = level
    msg = text.decode("utf-8", errors="replace")
    if _captured is not None:
        _captured.append((_last_level, msg))
    if _last_level == 3:
        sys.stderr.write(msg)


def init_backend() -> None:
    """Check the bindings and initialise llama.cpp once per process."""
    global _backend_ready
    with _backend_lock:
        if not _backend_ready:
            check_bindings()
            llama_cpp_logger.set_verbose(False)
            L.llama_log_set(_log_callback, ctypes.c_void_p(0))
            L.llama_backend_init()
            _backend_ready = True


@contextmanager
def _capture_log() -> Iterator[list[tuple[int, str]]]:
    """Keep llama.cpp's log lines (level, text) while the block runs; one capture at a time per process,
    so the lines are this call's."""
    global _captured
    with _backend_lock:
        lines = _captured = []
        try:
            yield lines
        finally:
            _captured = None


def buffer_sizes(lines: list[tuple[int, str]], kind: str) -> dict[str, float]:
    """`<name> <kind> buffer size = X MiB` lines summed by name, in MiB (kind "model": {"CPU_Mapped":
    468.0, "CPU_REPACK": 120.4}, AMX shows as "AMX"; kind "KV"/"compute"/"output": {"CPU": ...})."""
    sizes: dict[str, float] = {}
    for _, line in lines:
        head, found, size = line.partition(f" {kind} buffer size")
        if not found:
            continue
        name = head.split()[-1] if head.split() else "?"
        try:
            sizes[name] = sizes.get(name, 0.0) + float(size.strip(" =\n").split()[0])
        except (ValueError, IndexError):
            sizes[name] = sizes.get(name, 0.0)
    return sizes


def load_model_file(path: Path, *, use_extra_bufts: bool = True, vocab_only: bool = False):
    """`llama_model_load_from_file` that also returns the weight buffer types llama.cpp chose and their
    sizes in MiB (see `buffer_sizes`)."""
    init_backend()
    mparams = L.llama_model_default_params()
    mparams.use_extra_bufts = use_extra_bufts
    mparams.vocab_only = vocab_only
    with _capture_log() as lines:
        model = L.llama_model_load_from_file(str(path).encode(), mparams)
    return model, buffer_sizes(lines, "model")


def flash_attn_in_effect(setting: str, lines: list[tuple[int, str]]) -> bool | None:
    """Whether a context runs flash attention: its setting, or for `auto` what llama.cpp's log of the
    context creation says it resolved to (None if it did not say)."""
    if setting != "auto":
        return setting == "on"
    for _, line in lines:
        if "enabling flash_attn" in line or "Flash Attention enabled" in line:
            return True
        if "Flash Attention not supported" in line:
            return False
    return None


def tokenize(vocab, text: str, *, add_special: bool, parse_special: bool) -> list[int]:
    """llama_tokenize with the retry its size protocol needs (a negative result is the needed size)."""
    data = text.encode("utf-8")
    cap = len(data) + 16
    buf = (L.llama_token * cap)()
    n = L.llama_tokenize(vocab, data, len(data), buf, cap, add_special, parse_special)
    if n < 0:
        cap = -n
        buf = (L.llama_token * cap)()
        n = L.llama_tokenize(vocab, data, len(data), buf, cap, add_special, parse_special)
    return list(buf[:n])


def control_texts(vocab) -> list[str]:
    """The text of every control token of a vocabulary."""
    out = []
    for token in range(L.llama_vocab_n_tokens(vocab)):
        if L.llama_vocab_get_attr(vocab, token) & L.LLAMA_TOKEN_ATTR_CONTROL:
            text = L.llama_vocab_get_text(vocab, token)
            if text:
                out.append(text.decode("utf-8", errors="replace"))
    return out


def token_id(token: object) -> int:
    """A token id a binding returned. llama-cpp-python types these as ctypes.c_int32; ctypes hands
    back a plain int."""
    return cast(int, token)


def token_text(vocab, token: int) -> str:
    """A special token's text (e.g. BOS/EOS) as a chat template expects it; "" for no token."""
    if token < 0:
        return ""
    buf = ctypes.create_string_buffer(256)
    n = L.llama_token_to_piece(vocab, token, buf, len(buf), 0, True)
    if n < 0:
        buf = ctypes.create_string_buffer(-n)
        n = L.llama_token_to_piece(vocab, token, buf, len(buf), 0, True)
    return buf.raw[:n].decode("utf-8", errors="replace")


def chat_template(model) -> str | None:
    """The model's own chat template (GGUF `tokenizer.chat_template`), or None."""
    raw = L.llama_model_chat_template(model, None)
    return raw.decode("utf-8") if raw else None


def model_meta(model, key: str) -> str | None:
    """A GGUF metadata value as a string, or None if the key is absent."""
    buf = ctypes.create_string_buffer(1 << 16)
    n = _meta_val_str(model, key, buf)
    if n < 0:
        return None
    if n >= len(buf):
        buf = ctypes.create_string_buffer(n + 1)
        _meta_val_str(model, key, buf)
    return buf.value.decode("utf-8", errors="replace")


def _meta_val_str(model, key: str, buf: ctypes.Array[ctypes.c_char]) -> int:
    # the binding's stub says `bytes`, but llama.cpp writes into the buffer: it must be a mutable one
    return L.llama_model_meta_val_str(model, key.encode(), buf, len(buf))  # type: ignore[arg-type]


class LlamaModel:
    """Owns `llama_model` and `llama_context`; frees both on close()."""

    def __init__(self, path: Path, params: ContextParams, *, default_ctx_cap: int = MAX_DEFAULT_CTX) -> None:
        init_backend()
        self.path = Path(path)
        self.params = params
        if not self.path.is_file():
            raise ModelLoadError(f"model file not found: {self.path}")
        model, self.buffer_types = load_model_file(self.path, use_extra_bufts=params.use_extra_bufts)
        if not model:
            raise ModelLoadError(f"failed to load model {self.path.name}: not a valid GGUF file")
        vocab = L.llama_model_get_vocab(model)
        if not vocab:
            L.llama_model_free(model)
            raise ModelLoadError(f"failed to load model {self.path.name}: it has no vocabulary")
        self.model, self.vocab = model, vocab
        self.n_vocab = L.llama_vocab_n_tokens(vocab)
        self.n_ctx_train = L.llama_model_n_ctx_train(model)
        cparams = L.llama_context_default_params()
        # 0 means the model's trained context, capped: a 128k default would reserve gigabytes of KV
        cparams.n_ctx = params.n_ctx or min(self.n_ctx_train, default_ctx_cap)
        cparams.n_batch = params.n_batch
        cparams.n_ubatch = params.n_ubatch or params.n_batch
        cparams.n_seq_max = params.n_seq_max
        cparams.n_threads = params.n_threads
        cparams.n_threads_batch = params.n_threads
        # one KV stream: seq_cp shares prefix cells and any sequence may use the whole context (split
        # streams would give each n_ctx / n_seq_max cells and copy whole streams to share a prefix);
        # its cost, attention over every used cell, is kept down by Engine._clear_the_way
        cparams.kv_unified = True
        cparams.no_perf = True
        cparams.type_k = ggml_type(params.kv.type_k).value
        cparams.type_v = ggml_type(params.kv.type_v).value
        cparams.flash_attn_type = {
            "on": L.LLAMA_FLASH_ATTN_TYPE_ENABLED,
            "off": L.LLAMA_FLASH_ATTN_TYPE_DISABLED,
            "auto": L.LLAMA_FLASH_ATTN_TYPE_AUTO,
        }[params.kv.flash_attn]
        with _capture_log() as lines:
            ctx = L.llama_init_from_model(model, cparams)
        memory = L.llama_get_memory(ctx) if ctx else None
        if not ctx or not memory:
            if ctx:
                L.llama_free(ctx)
            L.llama_model_free(model)
            why = [line.strip() for level, line in lines if level == 4 and line.strip()]
            raise ModelLoadError(
                f"failed to create a context of {cparams.n_ctx} tokens for {self.path.name}"
                + (f": {why[-1]}" if why else "")
            )
        self.ctx, self.memory = ctx, memory
        self._closed = False
        self.flash_attn = flash_attn_in_effect(params.kv.flash_attn, lines)
        # MiB per buffer kind ("KV", "compute", "output"), summed over devices
        self.context_buffers = {
            kind: round(sum(buffer_sizes(lines, kind).values()), 2) for kind in ("KV", "compute", "output")
        }
        self.n_ctx = L.llama_n_ctx(ctx)
        self.bos_id = token_id(L.llama_vocab_bos(vocab))
        self.eos_id = token_id(L.llama_vocab_eos(vocab))
        self._piece_buf = ctypes.create_string_buffer(256)

    # --- tokenizer ---------------------------------------------------------------------------------

    def tokenize(self, text: str, *, add_special: bool = False, parse_special: bool = True) -> list[int]:
        return tokenize(self.vocab, text, add_special=add_special, parse_special=parse_special)

    def token_piece(self, token: int, *, special: bool = True) -> bytes:
        """The bytes of one token. Not thread-safe (shared buffer): call from one thread."""
        n = L.llama_token_to_piece(self.vocab, token, self._piece_buf, len(self._piece_buf), 0, special)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = L.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, special)
            return buf.raw[:n]
        return self._piece_buf.raw[:n]

    def control_texts(self) -> list[str]:
        """The text of every control token (`<|im_end|>`...): what message content must not produce."""
        return control_texts(self.vocab)

    def is_eog(self, token: int) -> bool:
        return bool(L.llama_vocab_is_eog(self.vocab, token))

    def token_text(self, token: int) -> str:
        """A special token's text (e.g. BOS/EOS), as a chat template expects it."""
        return token_text(self.vocab, token)

    # --- metadata ----------------------------------------------------------------------------------

    def meta(self, key: str) -> str | None:
        return model_meta(self.model, key)

    def chat_template(self) -> str | None:
        return chat_template(self.model)

    @property
    def size_bytes(self) -> int:
        return int(L.llama_model_size(self.model))

    @property
    def n_embd(self) -> int:
        return int(L.llama_model_n_embd(self.model))

    @property
    def n_params(self) -> int:
        return int(L.llama_model_n_params(self.model))

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            L.llama_free(self.ctx)
            L.llama_model_free(self.model)
