"""Moves prompt state between the KV slots and the prompt cache's host-RAM and disk tiers, as the
`PromptCache` decides and through the `ModelRunner` (engine thread only; tests may call it on an idle
engine). A damaged or unloadable entry is dropped and the prompt computed cold: never continued from
KV the slot does not hold."""

from __future__ import annotations

from lmdock.engine.chunk_reuse import best_plan
from lmdock.engine.lookup import Nearest, nearer, nearest
from lmdock.engine.prompt_cache import CacheEntry, PromptCache
from lmdock.engine.reuse import plan_reuse, run_anchors, window_hashes
from lmdock.engine.runner import ModelRunner
from lmdock.engine.sequence import Sequence
from lmdock.engine.slots import Slot, SlotPool
from lmdock.engine.types import CacheTier, EngineStats


class CacheMover:
    def __init__(
        self,
        cache: PromptCache,
        runner: ModelRunner,
        pool: SlotPool,
        stats: EngineStats,
        chunk_reuse_min: int = 0,
    ) -> None:
        self.cache = cache
        self.runner = runner
        self.pool = pool
        self.stats = stats
        self.n_ctx = runner.model.n_ctx
        self.chunk_reuse_min = chunk_reuse_min  # shortest run chunk reuse moves (0: off)

    def nearest(self, prompt: list[int], resident: Nearest | None) -> Nearest | None:
        """The entry nearest `prompt` (what a miss is explained against): `resident`, the slot found at
        admission, or a RAM or disk entry that shares more."""
        return nearer(resident, nearest(prompt, [e.tokens for e in self.cache.ram + self.cache.disk]))

    def restore(self, slot: Slot, prompt: list[int]) -> CacheTier | None:
        """Load a cached state into `slot` if it holds a longer prefix of `prompt` than the slot does;
        the tier it came from, or None (see `_load` for an entry that cannot be loaded)."""
        hit = self.cache.lookup(prompt, have=len(slot.tokens))
        if hit is None:
            return None
        tier: CacheTier = "ram" if hit.entry.data is not None else "disk"
        if not self._load(slot, hit.entry, make_room=True):
            return None
        self.runner.apply(self.pool.truncate(slot, hit.n_tokens))
        slot.reuses = self.pool.reused_from(slot, hit.n_tokens)
        self.cache.restored(hit.entry)
        return tier

    def _load(self, slot: Slot, entry: CacheEntry, *, make_room: bool = False) -> bool:
        """Replace what `slot` holds with `entry`'s state. llama.cpp loads a state into free cells only,
        so where the other slots leave too few, idle ones give way first (`make_room`), or the slot keeps
        what it has. A disk file is verified first: a damaged one is deleted and the slot keeps what it
        had. If llama.cpp then fails to load the state, the slot is left empty (its prompt is computed
        cold); the entry is dropped the second time (the first may have met cells too scattered)."""
        if not self._room_for(slot, len(entry.tokens), make_room):
            return False
        files, file = self.cache.files, entry.file
        if file is not None and (files is None or not files.verify(file)):
            self.cache.discard(entry, "the file is damaged or cut short")
            return False
        self.runner.apply(self.pool.clear(slot))
        if entry.data is not None:
            loaded = self.runner.write_state(slot.seq_id, entry.data)
        else:
            assert files is not None and file is not None  # an entry is in RAM or on disk
            loaded = self.runner.load_file(slot.seq_id, files.state_path(file), len(entry.tokens))
        if not loaded:
            self.runner.apply(self.pool.clear(slot))
            entry.load_failures += 1
            if entry.load_failures >= 2:
                self.cache.discard(entry, "llama.cpp could not load it")
            return False
        slot.tokens, slot.reuses = list(entry.tokens), entry.reuses
        return True

    def _room_for(self, slot: Slot, n_tokens: int, make_room: bool) -> bool:
        """Whether `n_tokens` cells are free once `slot` is emptied; with `make_room`, idle slots give way
        (spilled as for any eviction, least costly to lose first) until they are."""
        while self.n_ctx - self.pool.resident_cells(besides=slot) < n_tokens:
            others = [s for s in self.pool.evictable() if s is not slot] if make_room else []
            if not others:
                return False
            self.evict(others[0])
        return True

    def evict(self, slot: Slot) -> None:
        """Free an idle cached slot, copying its state to host RAM first if the cache wants it."""
        self.spill(slot)
        self.runner.apply(self.pool.clear(slot))
        self.stats.evictions += 1

    def persist(self, seq: Sequence) -> None:
        """Save a just-prefilled prompt to disk unless a saved entry already covers it."""
        if not self.cache.wants_persist(seq.prompt):
            return
        assert seq.slot is not None  # just prefilled: it holds its slot
        seq_id = seq.slot.seq_id
        self.cache.persist(
            seq.prompt,
            self.runner.state_size(seq_id),
            lambda path: self.runner.save_file(seq_id, path, seq.prompt),
        )

    def spill(self, slot: Slot) -> None:
        """Copy an idle slot about to be evicted to host RAM, if the cache wants it."""
        if self.cache.wants_spill(len(slot.tokens)):
            data = self.runner.read_state(slot.seq_id, self.cache.ram_bytes)
            if data is not None:
                self.cache.add_ram(slot.tokens, data, slot.reuses)

    def clear_the_way(self, new_tokens: int) -> int:
        """Move idle cached prefixes that share nothing with the running sequences out of the KV cache
        (to host RAM, or nowhere when disk holds them) before new prompts take cells: llama.cpp attends
        over every used cell, so they would slow each decode step (`SlotPool.in_the_way`, given the
        admitted work: `new_tokens` to compute and generate). A later hit restores them; one the cache
        can keep nowhere stays resident. Returns how many moved out."""
        moved = 0
        for slot in self.pool.in_the_way(self.cache.min_tokens, new_tokens):
            if self._keep_elsewhere(slot):
                self.runner.apply(self.pool.clear(slot))
                moved += 1
        return moved

    def _keep_elsewhere(self, slot: Slot) -> bool:
        if self.cache.wants_spill(len(slot.tokens)):
            data = self.runner.read_state(slot.seq_id, self.cache.ram_bytes)
            if data is not None:
                self.cache.add_ram(slot.tokens, data, slot.reuses)
                return True
        return self.cache.on_disk(slot.tokens)

    def promote(self, prompt: list[int]) -> None:
        """Bring a host-RAM or disk entry into an empty slot when chunk reuse could take more of `prompt`
        from it than from any resident slot, so that a prefix `clear_the_way` moved out, or one saved
        before a restart (an agent's tool block, first used from another folder), stays a source of
        cached runs: chunk reuse plans over resident slots only."""
        min_run = self.chunk_reuse_min
        idle = [s for s in self.pool.slots if not s.busy]
        empty = [s for s in idle if not s.tokens]
        sources = self.cache.sources()
        if min_run <= 0 or len(idle) < 2 or not empty or not sources:
            return
        _, resident = best_plan(self.pool, prompt, min_run)
        beat = max(resident.reused if resident else 0, self.pool.best_prefix(prompt)[1]) + min_run
        best, best_reused = None, beat - 1
        windows = window_hashes(prompt)
        for entry in sources:
            if entry.anchors is None:
                entry.anchors = run_anchors(entry.tokens, min_run)
            if entry.anchors is not None and entry.anchors.isdisjoint(windows):
                continue  # no run of min_run tokens to take: skip indexing the whole entry
            plan = plan_reuse(entry.tokens, prompt, min_run)
            if plan.runs and plan.reused > best_reused:
                best, best_reused = entry, plan.reused
        if best is not None and self._load(empty[0], best):
            self.cache.restored(best)
