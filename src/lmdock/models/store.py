"""The on-disk model store: `<models_dir>/<publisher>/<repo>/<file>.gguf`, read with the gguf package."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from lmdock.core.errors import ModelLoadError

_QUANT = re.compile(r"[-._](?:i?q\d[\w]*|f16|f32|bf16)$", re.IGNORECASE)


def model_key(path: Path) -> str:
    """A short, stable key from a file name: `Qwen2.5-Coder-0.5B-Instruct-Q4_K_M.gguf` -> `qwen2.5-coder-0.5b-instruct`."""
    stem = path.name.removesuffix(".gguf")
    return _QUANT.sub("", stem).lower()


@dataclass
class GGUFMetadata:
    architecture: str = "unknown"
    name: str | None = None
    context_length: int = 0
    chat_template: str | None = None
    quantization: str | None = None
    n_params: int | None = None


def read_metadata(path: Path) -> GGUFMetadata:
    """Read the fields lmdock uses from a GGUF header; a broken file is a ModelLoadError."""
    from gguf import GGUFReader  # slow import; only needed here

    try:
        reader = GGUFReader(str(path), "r")
    except Exception as exc:
        raise ModelLoadError(f"{path.name} is not a readable GGUF file: {exc}") from None

    def value(key: str):
        field_ = reader.fields.get(key)
        if field_ is None:
            return None
        try:
            return field_.contents()
        except Exception:
            return None

    arch = value("general.architecture") or "unknown"
    file_type = value("general.file_type")
    return GGUFMetadata(
        architecture=str(arch),
        name=value("general.name"),
        context_length=int(value(f"{arch}.context_length") or 0),
        chat_template=value("tokenizer.chat_template"),
        quantization=_file_type_name(file_type),
        n_params=None,
    )


def _file_type_name(file_type) -> str | None:
    if file_type is None:
        return None
    try:
        from gguf import LlamaFileType

        return LlamaFileType(int(file_type)).name.removeprefix("MOSTLY_")
    except Exception:
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
        return read_metadata(self.path)


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


def scan(models_dir: Path) -> list[ModelRecord]:
    """Every GGUF in the store (skipping partial downloads and multimodal projector files)."""
    if not models_dir.is_dir():
        return []
    paths = sorted(p for p in models_dir.rglob("*.gguf") if not p.name.startswith("mmproj"))
    return [record_for(p, models_dir) for p in paths]
