"""Prompt-cache policy and files without a model: what is restored, spilled, persisted and dropped;
files written atomically, verified, private; one clock for the LRU before and after a restart."""

from __future__ import annotations

import itertools
import logging
import os
import stat
from pathlib import Path

import pytest

from lmdock.engine.cache_files import CacheDir
from lmdock.engine.prompt_cache import PromptCache
from tests.small_disk import fill, free_bytes, small_disk


def fake_state(payload: bytes):
    """A stand-in for llama.cpp's state writer: writes `payload` where it is told."""

    def save(path: Path) -> bool:
        path.write_bytes(payload)
        return True

    return save


def persist(cache: PromptCache, tokens: list[int], payload: bytes = b"kv" * 100) -> None:
    assert cache.wants_persist(tokens)
    assert cache.persist(tokens, len(payload), fake_state(payload))


def clock(start: float = 1_000_000.0):
    ticks = itertools.count()
    return lambda: start + next(ticks)


# --- lookups ----------------------------------------------------------------------------------------


def test_lookup_prefers_the_longest_prefix_and_needs_a_real_gain():
    cache = PromptCache(ram_bytes=1 << 20, disk_dir=None, min_tokens=4, min_gain=2)
    cache.add_ram(list(range(10)), b"a")
    cache.add_ram([0, 1, 2, 3, 99], b"b")
    prompt = list(range(20))
    hit = cache.lookup(prompt, have=0)
    assert hit.entry.data == b"a" and hit.n_tokens == 10
    assert cache.lookup(prompt, have=8) is None  # 10 is not 2 better than 8
    assert cache.lookup(list(range(10)), have=0).n_tokens == 9  # one token is left to evaluate


def test_a_restored_ram_entry_moves_into_the_slot():
    cache = PromptCache(ram_bytes=1 << 20, disk_dir=None, min_tokens=4, min_gain=2)
    cache.add_ram(list(range(10)), b"a")
    cache.restored(cache.lookup(list(range(20)), have=0).entry)
    assert cache.ram == []


def test_ram_keeps_the_most_recent_within_budget_and_drops_what_a_spill_extends():
    cache = PromptCache(ram_bytes=10, disk_dir=None, min_tokens=1, clock=clock())
    cache.add_ram([1, 2], b"xxxx")
    cache.add_ram([1, 2, 3], b"yyyy")  # extends [1, 2]: replaces it
    assert [e.tokens for e in cache.ram] == [[1, 2, 3]]
    cache.add_ram([7], b"zzzz")
    cache.add_ram([8], b"wwww")  # 12 bytes > 10: the least recently used goes
    assert [e.tokens for e in cache.ram] == [[7], [8]]
    assert not cache.wants_spill(0) and cache.wants_spill(1)


def test_a_spill_an_entry_already_extends_keeps_that_entry_only():
    cache = PromptCache(ram_bytes=100, disk_dir=None, min_tokens=1, clock=clock())
    cache.add_ram([1, 2, 3], b"long")
    cache.add_ram([1, 2], b"short")  # a demoted slot sharing the longer one's prefix
    assert [(e.tokens, e.data) for e in cache.ram] == [([1, 2, 3], b"long")]


# --- disk: persisted, verified, private -------------------------------------------------------------


def test_persist_skips_prompts_a_saved_entry_already_covers(tmp_path):
    cache = PromptCache(ram_bytes=0, disk_dir=tmp_path, min_tokens=4, min_gain=2)
    persist(cache, list(range(50)))
    assert not cache.wants_persist(list(range(51)))  # within min_gain of the saved entry
    assert not cache.wants_persist([1, 2])  # too short
    persist(cache, list(range(60)))
    assert [len(e.tokens) for e in cache.disk] == [60]  # the longer save replaced its prefix
    assert cache.on_disk(list(range(58))) and cache.on_disk(list(range(62)))  # within min_gain
    assert not cache.on_disk(list(range(63))) and not cache.on_disk([9, 9, 9])


def test_files_are_private_and_complete_after_a_restart(tmp_path):
    folder = tmp_path / "kv"
    cache = PromptCache(ram_bytes=0, disk_dir=folder, min_tokens=4)
    persist(cache, list(range(40)), b"state-bytes")
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert {stat.S_IMODE(p.stat().st_mode) for p in folder.iterdir()} == {0o600}
    again = PromptCache(ram_bytes=0, disk_dir=folder, min_tokens=4)
    assert [e.tokens for e in again.disk] == [list(range(40))]
    assert again.files.verify(again.disk[0].file)


def test_a_truncated_state_file_fails_verification_and_is_deleted(tmp_path):
    cache = PromptCache(ram_bytes=0, disk_dir=tmp_path, min_tokens=4)
    persist(cache, list(range(40)), b"x" * 4096)
    entry = cache.disk[0]
    state = cache.files.state_path(entry.file)
    with state.open("r+b") as f:
        f.truncate(1000)
    # a restart notices the size at once; a running server notices at the checksum before loading
    assert PromptCache(ram_bytes=0, disk_dir=tmp_path, min_tokens=4).disk == []
    assert not state.exists()


def test_a_same_size_corruption_fails_the_checksum(tmp_path):
    cache = PromptCache(ram_bytes=0, disk_dir=tmp_path, min_tokens=4)
    persist(cache, list(range(40)), b"x" * 4096)
    entry = cache.disk[0]
    state = cache.files.state_path(entry.file)
    state.write_bytes(b"y" * 4096)
    assert not cache.files.verify(entry.file)
    cache.discard(entry, "test")
    assert cache.disk == [] and list(tmp_path.iterdir()) == []


def test_an_interrupted_save_leaves_no_entry(tmp_path):
    cache = PromptCache(ram_bytes=0, disk_dir=tmp_path, min_tokens=4)

    def dies_half_way(path: Path) -> bool:
        path.write_bytes(b"partial")
        raise OSError("disk full")

    with pytest.raises(OSError):
        cache.files.write(list(range(40)), dies_half_way)
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "leftover.state.tmp").write_bytes(b"x")  # a kill during a save
    (tmp_path / "orphan.state").write_bytes(b"x")  # an older format, or no .meta written
    assert PromptCache(ram_bytes=0, disk_dir=tmp_path, min_tokens=4).disk == []
    assert list(tmp_path.iterdir()) == []


def test_disk_lru_survives_a_restart(tmp_path):
    """`last_used` of a restored index and of new entries is on one clock (wall time): the oldest file
    goes first, not the newest (the bug: monotonic time for new entries, mtimes for old ones)."""
    cache = PromptCache(ram_bytes=0, disk_dir=tmp_path, min_tokens=4, min_gain=1)
    persist(cache, [1] * 10, b"a" * 100)
    persist(cache, [2] * 10, b"b" * 100)
    old, newer = cache.disk
    now = cache.disk[-1].last_used
    os.utime(tmp_path / f"{old.file.name}.meta", (now - 7200, now - 7200))
    os.utime(tmp_path / f"{newer.file.name}.meta", (now - 3600, now - 3600))
    restarted = PromptCache(ram_bytes=0, disk_dir=tmp_path, disk_bytes=250, min_tokens=4, min_gain=1)
    persist(restarted, [3] * 10, b"c" * 100)  # 300 bytes > 250: one entry must go
    assert sorted(e.tokens[0] for e in restarted.disk) == [2, 3]


def test_a_use_refreshes_the_lru_order_on_disk(tmp_path):
    cache = PromptCache(ram_bytes=0, disk_dir=tmp_path, min_tokens=4, min_gain=1)
    persist(cache, [1] * 10)
    persist(cache, [2] * 10)
    first = cache.disk[0]
    for e in cache.disk:
        os.utime(tmp_path / f"{e.file.name}.meta", (1, 1))
    cache.restored(first)
    again = CacheDir(tmp_path).scan()
    assert max(again, key=lambda f: f.last_used).tokens == [1] * 10


# --- disk: budget, a full disk, recovery ------------------------------------------------------------


def llama_cpp_like(payload: bytes):
    """Writes like llama_state_seq_save_file: bytes until the disk is full, then only "not saved"."""

    def save(path: Path) -> bool:
        try:
            with path.open("wb") as f:
                f.write(payload)
            return True
        except OSError:
            return False

    return save


def test_a_save_that_fails_on_a_full_disk_leaves_no_temporary_file(tmp_path):
    with small_disk(tmp_path / "disk", 2) as disk:
        cache = PromptCache(ram_bytes=0, disk_dir=disk / "kv", min_tokens=4)
        cache.saving.clock = lambda: 0.0  # no backoff between the tries of this test
        with pytest.raises(OSError, match="could not save"):
            cache.files.write(list(range(40)), llama_cpp_like(b"x" * (4 << 20)))
        assert list((disk / "kv").iterdir()) == []  # the bug: a *.state.tmp kept the disk full


def test_a_full_disk_pauses_saving_says_so_once_and_recovers(tmp_path, caplog):
    now = [0.0]
    with small_disk(tmp_path / "disk", 8) as disk:
        cache = PromptCache(ram_bytes=0, disk_dir=disk / "kv", min_tokens=4, min_gain=1)
        cache.saving.clock = lambda: now[0]
        filler = fill(disk)
        with caplog.at_level(logging.WARNING, logger="lmdock.engine.prompt_cache"):
            for i in range(5):
                prompt = [i + 1] * 10
                if cache.wants_persist(prompt):
                    assert not cache.persist(prompt, 1000, llama_cpp_like(b"s" * 1000))
                now[0] += 3600  # past any backoff: each try really tries
            assert cache.disk == [] and not any(p.name.endswith(".tmp") for p in (disk / "kv").iterdir())
            filler.unlink()
            assert cache.wants_persist([9] * 10) and cache.persist(
                [9] * 10, 1000, llama_cpp_like(b"s" * 1000)
            )
        lines = [r.getMessage() for r in caplog.records]
        assert len([m for m in lines if "nearly full" in m or "could not" in m]) == 1, lines
        assert len([m for m in lines if "working again" in m]) == 1, lines


def test_after_a_failure_saving_waits_before_trying_again(tmp_path):
    now = [0.0]
    cache = PromptCache(ram_bytes=0, disk_dir=tmp_path, min_tokens=4, min_gain=1)
    cache.saving.clock = lambda: now[0]
    assert not cache.persist([1] * 10, 10, lambda path: False)
    assert not cache.wants_persist([2] * 10)  # paused: no save is attempted during the backoff
    now[0] += 3600
    assert cache.wants_persist([2] * 10)


def test_the_budget_makes_room_before_a_save_and_counts_other_folders(tmp_path):
    root = tmp_path / "cache"
    old = root / ("a" * 24)  # folders are named by a fingerprint of model and context layout
    old.mkdir(parents=True)
    (old / "x.state").write_bytes(b"o" * 800)
    os.utime(old / "x.state", (1, 1))  # unused for ages
    busy = root / ("b" * 24)
    busy.mkdir()
    (busy / "y.state").write_bytes(b"b" * 300)  # used just now (another loaded model)
    mine = root / "notes"  # not a cache folder: never touched
    mine.mkdir()
    (mine / "keep.txt").write_bytes(b"k" * 5000)
    os.utime(mine / "keep.txt", (1, 1))
    cache = PromptCache(ram_bytes=0, disk_dir=root / ("c" * 24), disk_bytes=1000, min_tokens=4, min_gain=1)
    assert not old.exists() and busy.exists() and mine.exists()  # the idle folder went to fit the budget
    assert cache.disk_bytes == 700
    persist(cache, [1] * 10, b"a" * 300)
    persist(cache, [2] * 10, b"b" * 300)
    persist(cache, [3] * 10, b"c" * 300)  # no room for three: the oldest goes before it is written
    assert sorted(e.tokens[0] for e in cache.disk) == [2, 3]
    assert not cache.persist([4] * 10, 800, fake_state(b"d" * 800))  # larger than the budget: never


def test_on_a_disk_smaller_than_the_budget_old_entries_make_room_for_new_ones(tmp_path):
    """The disk, not the budget, is the limit: the cache evicts its own oldest files to keep the
    headroom free, and keeps saving (it does not stop and say the disk is full)."""
    with small_disk(tmp_path / "disk", 8) as disk:  # headroom: 10% = 0.8 MiB
        cache = PromptCache(ram_bytes=0, disk_dir=disk / "kv", disk_bytes=1 << 30, min_tokens=4, min_gain=1)
        for i in range(12):
            assert cache.persist([i + 1] * 10, 1 << 20, llama_cpp_like(b"s" * (1 << 20)))
        assert 3 <= len(cache.disk) <= 7 and not cache.saving.failing
        assert free_bytes(disk) >= 0.8 * (1 << 20)
