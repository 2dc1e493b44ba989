"""Prompt KV kept beyond the resident slots: which cached entry to restore, spill, persist or drop.

Two tiers behind the slots: host RAM (states of evicted slots, bounded, LRU) and disk (prompts saved
after their prefill, keyed by a fingerprint of the model file and the context parameters, so a known
prefix such as Claude Code's ~20k-token system prompt is reloaded after a restart instead of
recomputed). Only decisions and bookkeeping here: the model runner moves the bytes in and out of
llama.cpp, and `CacheDir` owns the files. Every `last_used` is wall-clock time, the clock of the files'
mtimes, so the LRU order means the same thing before and after a restart.

The disk tier has a byte budget (`--cache-disk-mib`) for the whole cache folder, other models' folders
included, and makes room before a save rather than after. It is a cache, so it yields the disk: a save
must leave the filesystem some headroom (for the database and everything else), and when saving fails
(a full disk) it stops persisting, says so once, and tries again with backoff, by itself.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from lmdock.core.backoff import Backoff
from lmdock.core.disk import shortfall
from lmdock.engine.cache_files import CacheDir, CacheFile
from lmdock.engine.reuse import common_prefix_len
from lmdock.engine.slots import is_prefix
from lmdock.engine.spec import CACHE_DISK_BYTES, CACHE_MIN_TOKENS

log = logging.getLogger(__name__)

OTHERS_IDLE_SECONDS = 3600.0  # another folder unused this long may go to keep the budget


@dataclass
class CacheEntry:
    tokens: list[int]
    data: bytearray | None = None  # host-RAM tier: llama_state_seq_get_data bytes
    file: CacheFile | None = None  # disk tier
    last_used: float = 0.0
    reuses: int = 0  # the slot's count (slots.Slot.reuses): later prompts that reused a long prefix of it
    anchors: frozenset[int] | None = field(default=None, repr=False, compare=False)  # reuse.run_anchors
    load_failures: int = field(default=0, compare=False)  # llama.cpp refused to load it (CacheMover._load)

    @property
    def nbytes(self) -> int:
        return len(self.data) if self.data is not None else 0


@dataclass
class Restore:
    """Load `entry` into the prompt's slot and keep its first `n_tokens` tokens."""

    entry: CacheEntry
    n_tokens: int


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
        disk_bytes: int = CACHE_DISK_BYTES,
        min_tokens: int = CACHE_MIN_TOKENS,
        min_gain: int = 32,
        max_tokens: int | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.ram_bytes = ram_bytes
        # a saved state loads into a context of any size with room for it: entries longer than this
        # context (saved by a larger one) are left alone, for the context that can use them
        self.max_tokens = max_tokens
        self.disk_bytes = disk_bytes
        self.min_tokens = min_tokens
        self.min_gain = min_gain
        self._clock = clock
        self.files = CacheDir(disk_dir) if disk_dir is not None else None
        self.ram: list[CacheEntry] = []
        self.disk: list[CacheEntry] = []
        self.saving = Backoff("prompt cache: saving to disk", log, first=10.0, cap=600.0)
        if self.files is not None:
            self.disk = [CacheEntry(f.tokens, file=f, last_used=f.last_used) for f in self.files.scan()]
            self.disk_bytes = max(0, disk_bytes - self.files.trim_others(disk_bytes, OTHERS_IDLE_SECONDS))
            self._evict_to(self.disk_bytes)

    # --- restore -----------------------------------------------------------------------------------

    def lookup(self, prompt: list[int], have: int) -> Restore | None:
        """The entry sharing the longest prefix with `prompt`, if it beats the `have` tokens the slot
        already holds by at least `min_gain` (a load is not free). At least one prompt token is left to
        evaluate, so there are logits to sample from."""
        limit = len(prompt) - 1
        best: CacheEntry | None = None
        best_len = have + self.min_gain
        for entry in self.sources():
            n = min(common_prefix_len(entry.tokens, prompt), limit)
            if n > best_len:
                best, best_len = entry, n
        return Restore(best, best_len) if best is not None else None

    def sources(self) -> list[CacheEntry]:
        """The entries a slot can load: every RAM entry, then the disk entries that fit the context."""
        return self.ram + self._fitting(self.disk)

    def restored(self, entry: CacheEntry) -> None:
        """`entry` now lives in a slot. A RAM copy is dropped (the slot spills it again when evicted);
        a disk entry stays and counts as used."""
        if entry.data is not None:
            self.ram.remove(entry)
        else:
            self._touch(entry)

    def discard(self, entry: CacheEntry, why: str) -> None:
        """Forget an entry that cannot be used (damaged or incompatible); its files are deleted."""
        log.warning("prompt cache: dropping a %d-token entry: %s", len(entry.tokens), why)
        if entry in self.ram:
            self.ram.remove(entry)
        if entry in self.disk:
            self._delete(entry)

    # --- spill to RAM ------------------------------------------------------------------------------

    def wants_spill(self, n_tokens: int) -> bool:
        """Whether an evicted slot of `n_tokens` is worth copying to host RAM."""
        return self.ram_bytes > 0 and n_tokens >= self.min_tokens

    def add_ram(self, tokens: list[int], data: bytearray, reuses: int = 0) -> None:
        """Keep an evicted slot's state (unless a loadable entry already extends it); entries it extends go,
        then, while over budget, those no later prompt reused before those reused (a one-off side
        request never pushes out a conversation's prefix), least recently used first; one is kept."""
        for entry in self.ram:
            if is_prefix(tokens, entry.tokens) and not entry.load_failures:  # already kept, and more
                entry.last_used = self._clock()
                entry.reuses = max(entry.reuses, reuses)
                return
        self.ram = [e for e in self.ram if not is_prefix(e.tokens, tokens)]
        self.ram.append(CacheEntry(tokens=list(tokens), data=data, last_used=self._clock(), reuses=reuses))
        while sum(e.nbytes for e in self.ram) > self.ram_bytes and len(self.ram) > 1:
            self.ram.remove(min(self.ram, key=lambda e: (e.reuses > 0, e.last_used)))

    def on_disk(self, tokens: list[int]) -> bool:
        """Whether a saved entry holds all but `min_gain` of `tokens` (dropping their KV loses little)."""
        return any(common_prefix_len(e.tokens, tokens) >= len(tokens) - self.min_gain for e in self.disk)

    # --- persist to disk ---------------------------------------------------------------------------

    def wants_persist(self, prompt: list[int]) -> bool:
        """Whether a just-prefilled prompt should be saved: long enough, saving is not paused by a
        recent failure, and no saved entry already covers all but `min_gain` of it (that entry then
        counts as used)."""
        if self.files is None or len(prompt) < self.min_tokens or not self.saving.ready():
            return False
        for entry in self._fitting(self.disk):
            if common_prefix_len(entry.tokens, prompt) >= len(prompt) - self.min_gain:
                self._touch(entry)
                return False
        return True

    def _fitting(self, entries: list[CacheEntry]) -> list[CacheEntry]:
        if self.max_tokens is None:
            return entries
        return [e for e in entries if len(e.tokens) <= self.max_tokens]

    def persist(self, tokens: list[int], size: int, save_state: Callable[[Path], bool]) -> bool:
        """Save a prompt whose state takes about `size` bytes (`save_state` writes it). Room is made
        first: within the budget, then within the filesystem's headroom (older entries go, when that is
        enough: the cache yields the disk to durable state). A save that still would eat the headroom,
        or that fails, pauses saving (logged once) until a retry works."""
        assert self.files is not None
        if size > self.disk_bytes:
            return False  # larger than the whole budget: never saved
        self._evict_to(self.disk_bytes - size)
        lacking, free, keep = shortfall(self.files.path, size)
        if 0 < lacking <= self.disk_used():
            while lacking and self.disk:
                self._delete(min(self.disk, key=lambda e: e.last_used))
                lacking, free, keep = shortfall(self.files.path, size)
        if lacking:
            self.saving.failed(
                f"the disk is nearly full ({free >> 20} MiB free; a save of {size >> 20} MiB must leave "
                f"{keep >> 20} MiB), so prompts are not saved to {self.files.path}"
            )
            return False
        try:
            saved = self.files.write(tokens, save_state)
        except OSError as exc:
            self.saving.failed(f"could not write to {self.files.path}: {exc}")
            return False
        self.saving.succeeded()
        self.add_disk(saved)
        return True

    def add_disk(self, f: CacheFile) -> None:
        """Record a saved file; entries it extends go, then the least recently used while over budget."""

        def other(e: CacheEntry) -> bool:  # not this file (a re-save of the same file replaces its entry)
            return e.file is None or e.file.name != f.name

        for old in [e for e in self.disk if other(e) and is_prefix(e.tokens, f.tokens)]:
            self._delete(old)
        self.disk = [e for e in self.disk if other(e)]
        self.disk.append(CacheEntry(tokens=f.tokens, file=f, last_used=self._clock()))
        self._touch(self.disk[-1])
        while len(self.disk) > 1 and self.disk_used() > self.disk_bytes:
            self._delete(min(self.disk, key=lambda e: e.last_used))

    def disk_used(self) -> int:
        return sum(e.file.size for e in self.disk if e.file is not None)

    def _evict_to(self, limit: int) -> None:
        """Delete the least recently used files until the disk tier holds at most `limit` bytes."""
        while self.disk and self.disk_used() > limit:
            self._delete(min(self.disk, key=lambda e: e.last_used))

    def _touch(self, entry: CacheEntry) -> None:
        entry.last_used = self._clock()
        if entry.file is not None and self.files is not None:
            self.files.touch(entry.file, entry.last_used)

    def _delete(self, entry: CacheEntry) -> None:
        self.disk.remove(entry)
        if entry.file is not None and self.files is not None:
            self.files.delete(entry.file)
