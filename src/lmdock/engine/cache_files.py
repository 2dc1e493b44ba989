"""Prompt-cache files on disk: written atomically with their size and checksum, checked before use.

llama.cpp trusts a state file: one cut short by a kill or a full disk aborts the whole process when it
is loaded (`GGML_ASSERT(nread <= state_size)`). So an entry is three files in a private folder (0700,
files 0600): `<name>.state` (llama.cpp's per-sequence state), `<name>.tokens` (the int32 token ids, so
a lookup needs no llama.cpp call) and `<name>.meta` (JSON: sizes and SHA-256 digests of both). Each is
written under a temporary name and renamed, `.meta` last, so a `.meta` file marks a complete entry.
`verify()` re-reads the state file against its digest right before it is handed to llama.cpp.
A save that fails half-way (llama.cpp reports a full disk only as "not saved") leaves nothing behind.
No llama.cpp calls here: the caller passes the function that writes the state file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

_FORMAT = 1
_SUFFIXES = (".state", ".tokens", ".meta")


@dataclass
class CacheFile:
    """One complete entry on disk. `last_used` is wall-clock time (the `.meta` file's mtime)."""

    name: str
    tokens: list[int]
    size: int
    sha256: str
    last_used: float


def _digest(path: Path) -> tuple[int, str]:
    with path.open("rb") as f:
        return os.fstat(f.fileno()).st_size, hashlib.file_digest(f, "sha256").hexdigest()


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


class CacheDir:
    """The prompt-cache folder of one model and context layout."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)  # e.g. ~/.lmdock/cache, if new
        path.mkdir(mode=0o700, exist_ok=True)
        os.chmod(path, 0o700)

    def state_path(self, f: CacheFile) -> Path:
        return self.path / f"{f.name}.state"

    def _paths(self, name: str) -> list[Path]:
        return [self.path / f"{name}{s}" for s in _SUFFIXES]

    def scan(self) -> list[CacheFile]:
        """The complete entries; removes temporary files, orphans and entries that fail their checks."""
        for tmp in self.path.glob("*.tmp"):
            tmp.unlink(missing_ok=True)
        found: list[CacheFile] = []
        for meta in self.path.glob("*.meta"):
            f = self._read_entry(meta)
            if f is None:
                log.warning("prompt cache: removing damaged entry %s", meta.stem)
                self._remove(meta.stem)
            else:
                found.append(f)
        names = {f.name for f in found}
        for p in list(self.path.glob("*.state")) + list(self.path.glob("*.tokens")):
            if p.stem not in names:  # an interrupted save or an older format
                p.unlink(missing_ok=True)
        return found

    def _read_entry(self, meta: Path) -> CacheFile | None:
        try:
            info = json.loads(meta.read_text())
            state, tokens_file = self.path / f"{meta.stem}.state", self.path / f"{meta.stem}.tokens"
            if info.get("format") != _FORMAT or state.stat().st_size != info["state_size"]:
                return None
            raw = tokens_file.read_bytes()
            if hashlib.sha256(raw).hexdigest() != info["tokens_sha256"]:
                return None
            return CacheFile(
                name=meta.stem,
                tokens=np.frombuffer(raw, dtype=np.int32).tolist(),
                size=info["state_size"],
                sha256=info["state_sha256"],
                last_used=meta.stat().st_mtime,
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def write(self, tokens: list[int], save_state: Callable[[Path], bool]) -> CacheFile:
        """Save an entry: `save_state(path)` writes llama.cpp's state file. Raises OSError if anything
        failed, with every temporary file removed."""
        raw = np.asarray(tokens, dtype=np.int32).tobytes()
        name = hashlib.sha1(raw).hexdigest()[:20]
        state, tokens_file, meta = self._paths(name)
        tmp = [p.with_name(p.name + ".tmp") for p in (state, tokens_file, meta)]
        try:
            if not save_state(tmp[0]):
                written = tmp[0].stat().st_size if tmp[0].exists() else 0
                raise OSError(
                    f"llama.cpp could not save the state ({written} bytes written; is the disk full?)"
                )
            os.chmod(tmp[0], 0o600)
            size, digest = _digest(tmp[0])
            _write_private(tmp[1], raw)
            info = {
                "format": _FORMAT,
                "n_tokens": len(tokens),
                "state_size": size,
                "state_sha256": digest,
                "tokens_sha256": hashlib.sha256(raw).hexdigest(),
            }
            _write_private(tmp[2], json.dumps(info).encode())
            os.replace(tmp[0], state)
            os.replace(tmp[1], tokens_file)
            os.replace(tmp[2], meta)  # last: the entry exists from here on
        finally:
            for p in tmp:  # whatever a failed save left (after the renames, nothing is left to remove)
                p.unlink(missing_ok=True)
        return CacheFile(name=name, tokens=list(tokens), size=size, sha256=digest, last_used=time.time())

    def verify(self, f: CacheFile) -> bool:
        """Whether the state file still has the size and digest it was saved with."""
        try:
            return _digest(self.state_path(f)) == (f.size, f.sha256)
        except OSError:
            return False

    def touch(self, f: CacheFile, when: float) -> None:
        """Record a use, so the LRU order survives a restart."""
        f.last_used = when
        with contextlib.suppress(OSError):
            os.utime(self.path / f"{f.name}.meta", (when, when))

    def delete(self, f: CacheFile) -> None:
        self._remove(f.name)

    def trim_others(self, budget: int, idle_seconds: float) -> int:
        """Keep the whole cache root (this folder and the other prompt-cache folders beside it: other
        models, other context layouts) within `budget`: empty other folders, least recently used first,
        but none used in the last `idle_seconds` (another worker may be using it). Only prompt-cache
        folders and files are touched. Returns the bytes the other folders still hold."""
        others = [
            (p, *_usage(p)) for p in self.path.parent.iterdir() if p != self.path and _is_cache_folder(p)
        ]
        total = _usage(self.path)[0] + sum(size for _, size, _ in others)
        now = time.time()
        kept = 0
        for folder, size, last_used in sorted(others, key=lambda o: o[2]):
            if total <= budget or now - last_used < idle_seconds:
                kept += size
                continue
            for p in folder.iterdir():
                p.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                folder.rmdir()
            log.info(
                "prompt cache: removed %s (%d MiB, unused; over --cache-disk-mib)", folder.name, size >> 20
            )
            total -= size
        return kept

    def _remove(self, name: str) -> None:
        for p in reversed(self._paths(name)):  # .meta first: a half-deleted entry is never taken as complete
            p.unlink(missing_ok=True)


def _is_cache_folder(path: Path) -> bool:
    """A folder `CacheDir` made (a 24-hex-digit fingerprint holding only cache files)."""
    if not (path.is_dir() and len(path.name) == 24 and all(c in "0123456789abcdef" for c in path.name)):
        return False
    return all(p.suffix in (*_SUFFIXES, ".tmp") for p in path.iterdir())


def _usage(folder: Path) -> tuple[int, float]:
    """Bytes under a cache folder and when it was last used (its newest file's mtime)."""
    size, last = 0, 0.0
    for p in folder.iterdir():
        with contextlib.suppress(OSError):
            st = p.stat()
            size += st.st_size
            last = max(last, st.st_mtime)
    return size, last
