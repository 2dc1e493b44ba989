"""Prompt KV kept beyond the resident slots: spilled to host RAM on eviction, persisted to disk.

Disk entries are keyed by a fingerprint of the model file and the context parameters, so a known
prefix (Claude Code's ~20k-token system prompt) is reloaded after a restart instead of recomputed.
Each entry stores the token ids beside the state so a lookup needs no llama.cpp call.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import llama_cpp as L
import numpy as np

from lmdock.engine.slots import Slot, SlotPool, common_prefix_len

log = logging.getLogger(__name__)


@dataclass
class _Entry:
    tokens: list[int]
    data: bytes | None = None  # host-RAM state
    path: Path | None = None  # on-disk state
    last_used: float = field(default_factory=time.monotonic)

    @property
    def nbytes(self) -> int:
        return len(self.data) if self.data is not None else 0


def model_fingerprint(path: Path, extra: str) -> str:
    """A cheap identity for a model file plus everything that changes its KV layout."""
    h = hashlib.sha256()
    stat = path.stat()
    h.update(f"{stat.st_size}|{extra}".encode())
    with path.open("rb") as f:
        h.update(f.read(1 << 20))
        f.seek(max(0, stat.st_size - (1 << 20)))
        h.update(f.read(1 << 20))
    return h.hexdigest()[:24]


class PromptCache:
    """Host-RAM and disk tiers behind the resident KV slots."""

    def __init__(
        self,
        *,
        ram_bytes: int,
        disk_dir: Path | None,
        disk_bytes: int = 4 << 30,
        min_tokens: int = 256,
        min_gain: int = 32,
    ) -> None:
        self.ram_bytes = ram_bytes
        self.disk_dir = disk_dir
        self.disk_bytes = disk_bytes
        self.min_tokens = min_tokens
        self.min_gain = min_gain
        self.ram: list[_Entry] = []
        self.disk: list[_Entry] = []
        if disk_dir is not None:
            disk_dir.mkdir(parents=True, exist_ok=True)
            self._load_index()

    # --- lookups -----------------------------------------------------------------------------------

    def restore_if_better(self, ctx, pool: SlotPool, slot: Slot, prompt: list[int], reused: int) -> int:
        """Load a cached state into `slot` if it shares a longer prefix than `reused`; return the new
        number of reusable prompt tokens (0 if nothing was restored)."""
        limit = len(prompt) - 1
        best: _Entry | None = None
        best_len = reused + self.min_gain
        for entry in self.ram + self.disk:
            n = min(common_prefix_len(entry.tokens, prompt), limit)
            if n > best_len:
                best, best_len = entry, n
        if best is None:
            return 0
        pool.clear(slot)
        if not self._load(ctx, slot.seq_id, best):
            pool.clear(slot)
            return 0
        best.last_used = time.monotonic()
        slot.tokens = list(best.tokens)
        pool.truncate(slot, best_len)
        if best.data is not None:  # it lives in the slot now; the slot will spill it again if evicted
            self.ram.remove(best)
        return best_len

    def _load(self, ctx, seq_id: int, entry: _Entry) -> bool:
        if entry.data is not None:
            buf = (ctypes.c_uint8 * len(entry.data)).from_buffer_copy(entry.data)
            return L.llama_state_seq_set_data(ctx, buf, len(entry.data), seq_id) > 0
        n_out = ctypes.c_size_t(0)
        cap = len(entry.tokens)
        tokens = (L.llama_token * cap)()
        ok = L.llama_state_seq_load_file(
            ctx, str(entry.path).encode(), seq_id, tokens, cap, ctypes.byref(n_out)
        )
        return ok > 0 and n_out.value == cap

    # --- stores ------------------------------------------------------------------------------------

    def spill(self, ctx, slot: Slot) -> None:
        """Copy an evicted slot's state to host RAM (bounded, LRU)."""
        if self.ram_bytes <= 0 or len(slot.tokens) < self.min_tokens:
            return
        size = L.llama_state_seq_get_size(ctx, slot.seq_id)
        if size <= 0 or size > self.ram_bytes:
            return
        buf = (ctypes.c_uint8 * size)()
        written = L.llama_state_seq_get_data(ctx, buf, size, slot.seq_id)
        if written <= 0:
            return
        tokens = list(slot.tokens)
        self.ram = [e for e in self.ram if not _is_prefix(e.tokens, tokens)]
        self.ram.append(_Entry(tokens=tokens, data=bytes(buf)[:written]))
        while sum(e.nbytes for e in self.ram) > self.ram_bytes and len(self.ram) > 1:
            self.ram.remove(min(self.ram, key=lambda e: e.last_used))

    def maybe_persist(self, ctx, slot: Slot, prompt: list[int]) -> None:
        """Save a just-prefilled prompt to disk unless a saved entry already covers nearly all of it."""
        if self.disk_dir is None or len(prompt) < self.min_tokens:
            return
        for entry in self.disk:
            if common_prefix_len(entry.tokens, prompt) >= len(prompt) - self.min_gain:
                entry.last_used = time.monotonic()
                return
        name = hashlib.sha1(np.asarray(prompt, dtype=np.int32).tobytes()).hexdigest()[:20]
        path = self.disk_dir / f"{name}.state"
        arr = (L.llama_token * len(prompt))(*prompt)
        if L.llama_state_seq_save_file(ctx, str(path).encode(), slot.seq_id, arr, len(prompt)) == 0:
            log.warning("could not persist prompt state to %s", path)
            path.unlink(missing_ok=True)
            return
        np.asarray(prompt, dtype=np.int32).tofile(path.with_suffix(".tokens"))
        for old in [e for e in self.disk if _is_prefix(e.tokens, prompt)]:
            self._delete(old)
        self.disk.append(_Entry(tokens=list(prompt), path=path))
        self._trim_disk()

    def _trim_disk(self) -> None:
        def size(e: _Entry) -> int:
            return e.path.stat().st_size if e.path and e.path.exists() else 0

        while len(self.disk) > 1 and sum(size(e) for e in self.disk) > self.disk_bytes:
            self._delete(min(self.disk, key=lambda e: e.last_used))

    def _delete(self, entry: _Entry) -> None:
        self.disk.remove(entry)
        if entry.path is not None:
            entry.path.unlink(missing_ok=True)
            entry.path.with_suffix(".tokens").unlink(missing_ok=True)

    def _load_index(self) -> None:
        for path in sorted(self.disk_dir.glob("*.state"), key=lambda p: p.stat().st_mtime):
            tokens_file = path.with_suffix(".tokens")
            if not tokens_file.exists():
                path.unlink(missing_ok=True)
                continue
            tokens = np.fromfile(tokens_file, dtype=np.int32).tolist()
            self.disk.append(_Entry(tokens=tokens, path=path, last_used=path.stat().st_mtime))

    @property
    def ram_used(self) -> int:
        return sum(e.nbytes for e in self.ram)


def _is_prefix(short: list[int], long: list[int]) -> bool:
    return len(short) <= len(long) and long[: len(short)] == short
