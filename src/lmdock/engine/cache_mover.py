"""Moves prompt state between the KV slots and the prompt cache's host-RAM and disk tiers, as the
`PromptCache` decides and through the `ModelRunner` (engine thread only; tests may call it on an idle
engine). A damaged or unloadable entry is dropped and the prompt computed cold: never continued from
KV the slot does not hold."""

from __future__ import annotations

from lmdock.engine.prompt_cache import PromptCache
from lmdock.engine.runner import ModelRunner
from lmdock.engine.sequence import Sequence
from lmdock.engine.slots import Slot, SlotPool


class CacheMover:
    def __init__(self, cache: PromptCache, runner: ModelRunner, pool: SlotPool) -> None:
        self.cache = cache
        self.runner = runner
        self.pool = pool

    def restore(self, slot: Slot, prompt: list[int]) -> None:
        """Load a cached state into `slot` if it holds a longer prefix of `prompt` than the slot does.

        A disk file is verified first: a damaged one is deleted and the slot keeps what it had. If
        llama.cpp then fails to load a state, the slot is left empty (the prompt is computed cold)."""
        hit = self.cache.lookup(prompt, have=len(slot.tokens))
        if hit is None:
            return
        entry = hit.entry
        files, file = self.cache.files, entry.file
        if file is not None and (files is None or not files.verify(file)):
            self.cache.discard(entry, "the file is damaged or cut short")
            return
        self.runner.apply(self.pool.clear(slot))
        if entry.data is not None:
            loaded = self.runner.write_state(slot.seq_id, entry.data)
        else:
            assert files is not None and file is not None  # an entry is in RAM or on disk
            loaded = self.runner.load_file(slot.seq_id, files.state_path(file), len(entry.tokens))
        if not loaded:
            self.runner.apply(self.pool.clear(slot))
            self.cache.discard(entry, "llama.cpp could not load it")
            return
        slot.tokens = list(entry.tokens)
        self.runner.apply(self.pool.truncate(slot, hit.n_tokens))
        self.cache.restored(entry)

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
                self.cache.add_ram(slot.tokens, data)
