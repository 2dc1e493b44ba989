"""The on-disk model store: `<models_dir>/<publisher>/<repo>/<file>.gguf`, with GGUF metadata.

Metadata comes from lmdock's own header reader (milliseconds, not the seconds `gguf.GGUFReader` takes)
and is cached per (path, size, mtime), so listing a store stays cheap however often clients ask.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from lmdock.core.errors import ModelLoadError
from lmdock.engine.gguf_header import GGUFFormatError, read_gguf_header

_QUANT = re.compile(r"[-._](?:i?q\d[\w]*|f16|f32|bf16)$", re.IGNORECASE)
_SPLIT = re.compile(r"-\d{5}-of-\d{5}$")
_CACHE_MAX = 256
_cache: dict[tuple[str, int, int], GGUFMetadata] = {}


def model_key(path: Path) -> str:
    """A short, stable key from a file name: `Qwen2.5-Coder-0.5B-Instruct-Q4_K_M.gguf` -> `qwen2.5-coder-0.5b-instruct`."""
    stem = _SPLIT.sub("", path.name.removesuffix(".gguf"))
    return _QUANT.sub("", stem).lower()


@dataclass
class GGUFMetadata:
    """What lmdock needs from a GGUF header. `error` is set (and the rest defaulted) for a broken file."""

    architecture: str = "unknown"
    name: str | None = None
    context_length: int = 0
    chat_template: str | None = None
    quantization: str | None = None
    n_params: int | None = None
    size_label: str | None = None
    n_layer: int = 0
    n_embd: int = 0
    n_head: int = 0
    n_head_kv: int = 0
    key_length: int = 0
    value_length: int = 0
    n_vocab: int = 0
    pooling: bool = False
    tensor_bytes: int = 0
    sampling: dict[str, float] = field(default_factory=dict)  # general.sampling.* (the author's advice)
    error: str | None = None

    @property
    def bits_per_weight(self) -> float | None:
        if not self.n_params or not self.tensor_bytes:
            return None
        return round(self.tensor_bytes * 8 / self.n_params, 2)


def read_metadata(path: Path) -> GGUFMetadata:
    """Read a GGUF header (cached); an unreadable or truncated file is a ModelLoadError."""
    try:
        stat = path.stat()
    except OSError as exc:
        raise ModelLoadError(f"{path.name}: {exc.strerror or exc}") from None
    cache_key = (str(path), stat.st_size, stat.st_mtime_ns)
    if cache_key in _cache:
        return _cache[cache_key]
    try:
        header = read_gguf_header(path)
        meta = _from_header(header.kv, header.array_lengths, header.n_params, header.tensor_bytes)
    except (GGUFFormatError, OSError) as exc:
        raise ModelLoadError(f"{path.name} is not a loadable GGUF file: {exc}") from None
    except Exception as exc:  # a malformed header must make the file unusable, never break a listing
        raise ModelLoadError(f"{path.name} has a malformed GGUF header: {type(exc).__name__}") from None
    if len(_cache) >= _CACHE_MAX:
        _cache.pop(next(iter(_cache)))
    _cache[cache_key] = meta
    return meta


def _from_header(
    kv: dict[str, Any], arrays: dict[str, int], n_params: int, tensor_bytes: int
) -> GGUFMetadata:
    arch = kv.get("general.architecture")
    arch = arch if isinstance(arch, str) and arch else "unknown"

    def num(key: str) -> int:
        value = kv.get(f"{arch}.{key}")
        return int(value) if isinstance(value, (int, float)) and 0 <= value < 1 << 40 else 0

    def text(key: str) -> str | None:
        value = kv.get(key)
        return value if isinstance(value, str) else None

    n_embd, n_head = num("embedding_length"), num("attention.head_count")
    head_dim = n_embd // n_head if n_head else 0
    return GGUFMetadata(
        architecture=arch,
        name=text("general.name"),
        context_length=num("context_length"),
        chat_template=text("tokenizer.chat_template"),
        quantization=_file_type_name(kv.get("general.file_type")),
        n_params=n_params or None,
        size_label=text("general.size_label"),
        n_layer=num("block_count"),
        n_embd=n_embd,
        n_head=n_head,
        n_head_kv=num("attention.head_count_kv") or n_head,
        key_length=num("attention.key_length") or head_dim,
        value_length=num("attention.value_length") or head_dim,
        n_vocab=arrays.get("tokenizer.ggml.tokens", 0),
        pooling=f"{arch}.pooling_type" in kv,
        tensor_bytes=tensor_bytes,
        sampling={
            k.removeprefix("general.sampling."): v
            for k, v in kv.items()
            if k.startswith("general.sampling.") and isinstance(v, (int, float)) and not isinstance(v, bool)
        },
    )


def _file_type_name(file_type: Any) -> str | None:
    if file_type is None:
        return None
    from gguf import LlamaFileType

    try:
        return LlamaFileType(int(file_type)).name.removeprefix("MOSTLY_")
    except ValueError:
        return str(file_type)


@dataclass
class ModelRecord:
    """A downloaded model file and what identifies it."""

    key: str
    path: Path
    publisher: str = ""
    repo: str = ""
    aliases: list[str] = field(default_factory=list)

    @property
    def size_bytes(self) -> int:
        return self.path.stat().st_size

    @cached_property
    def metadata(self) -> GGUFMetadata:
        """The file's metadata; a broken file yields defaults with `error` set, so listings still work."""
        try:
            return read_metadata(self.path)
        except ModelLoadError as exc:
            return GGUFMetadata(error=exc.message)

    def check_loadable(self) -> None:
        """Raise the header problem (truncated, not GGUF) before llama.cpp is asked to load the file."""
        if self.metadata.error:
            raise ModelLoadError(self.metadata.error)


def record_for(path: Path, models_dir: Path | None = None) -> ModelRecord:
    path = path.resolve()
    publisher = repo = ""
    if models_dir is not None:
        try:
            rel = path.relative_to(models_dir.resolve())
            if len(rel.parts) >= 3:
                publisher, repo = rel.parts[0], rel.parts[1]
        except ValueError:
            pass
    key = model_key(path)
    aliases = [path.name.removesuffix(".gguf").lower()]
    if publisher and repo:
        aliases.append(f"{publisher}/{repo}".lower())
    return ModelRecord(key=key, path=path, publisher=publisher, repo=repo, aliases=aliases)


def _is_model_file(path: Path) -> bool:
    """Skip multimodal projectors and every part of a split model but the first (llama.cpp loads the rest)."""
    stem = path.name.removesuffix(".gguf")
    if path.name.startswith("mmproj"):
        return False
    split = _SPLIT.search(stem)
    return split is None or split.group().startswith("-00001-")


def scan(models_dir: Path) -> list[ModelRecord]:
    """Every GGUF model in the store (partial downloads end in `.partial` and are never listed)."""
    if not models_dir.is_dir():
        return []
    paths = sorted(p for p in models_dir.rglob("*.gguf") if p.is_file() and _is_model_file(p))
    return [record_for(p, models_dir) for p in paths]
