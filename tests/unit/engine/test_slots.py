"""Slot choice and prefix reuse as data: the KV operations a claim asks for (no model)."""

from __future__ import annotations

from lmdock.engine.slots import CopyPrefix, SlotPool, Truncate


def resident(pool: SlotPool, tokens: list[int]):
    claim = pool.claim(tokens + [0])
    claim.slot.tokens = list(tokens)
    pool.release(claim.slot, keep_cache=True)
    return claim.slot


def test_an_empty_pool_gives_an_empty_slot_and_clears_it():
    pool = SlotPool(2)
    claim = pool.claim([1, 2, 3])
    assert claim.reused == 0 and claim.slot.busy
    assert claim.ops == [Truncate(claim.slot.seq_id, 0)]


def test_a_shared_prefix_is_copied_into_an_empty_slot_and_stays_cached():
    pool = SlotPool(3)
    src = resident(pool, [1, 2, 3, 4])
    claim = pool.claim([1, 2, 3, 9, 9])
    assert claim.slot is not src and claim.reused == 3
    assert claim.ops == [Truncate(claim.slot.seq_id, 0), CopyPrefix(src.seq_id, claim.slot.seq_id, 3)]
    assert claim.slot.tokens == [1, 2, 3] and src.tokens == [1, 2, 3, 4]


def test_without_an_empty_slot_the_prefix_holder_is_continued_in_place():
    pool = SlotPool(2)
    a = resident(pool, [1, 2, 3, 4])
    resident(pool, [7, 8])
    claim = pool.claim([1, 2, 3, 9])
    assert claim.slot is a and claim.reused == 3
    assert claim.ops == [Truncate(a.seq_id, 3)] and a.tokens == [1, 2, 3]


def test_at_least_one_prompt_token_is_left_to_evaluate():
    pool = SlotPool(1)
    resident(pool, [1, 2, 3])
    claim = pool.claim([1, 2, 3])
    assert claim.reused == 2 and claim.slot.tokens == [1, 2]


def test_all_busy_means_no_claim():
    pool = SlotPool(1)
    assert pool.claim([1, 2]) is not None
    assert pool.claim([1, 2]) is None


def test_release_without_cache_clears_the_slot():
    pool = SlotPool(1)
    claim = pool.claim([1, 2])
    claim.slot.tokens = [1, 2]
    assert pool.release(claim.slot, keep_cache=False) == [Truncate(claim.slot.seq_id, 0)]
    assert claim.slot.tokens == [] and not claim.slot.busy


def test_idle_slots_unrelated_to_the_busy_ones_are_in_the_way_largest_first():
    pool = SlotPool(4)
    small = resident(pool, list(range(100, 400)))  # 300 own cells
    big = resident(pool, list(range(1000, 3000)))  # 2000 own cells
    pool.claim([5, 6, 7])  # a busy slot sharing nothing
    assert pool.in_the_way(256) == [big, small]
    assert pool.in_the_way(301) == [big]


def test_an_idle_slot_that_mostly_shares_a_busy_prefix_stays():
    pool = SlotPool(4)
    system = list(range(1000, 7000))
    agent_a = resident(pool, system + list(range(1, 800)))
    claim = pool.claim(system + [9, 9, 9])  # agent B copies the 6k system prompt from A's slot
    assert claim.reused == len(system)
    assert pool.own_cells(agent_a) == 799
    assert pool.in_the_way(256) == []


def test_resident_cells_count_a_shared_prefix_once():
    pool = SlotPool(4)
    system = list(range(1000, 1600))
    resident(pool, system + [1, 2, 3])
    resident(pool, system + [4, 5])
    resident(pool, list(range(50)))
    assert pool.resident_cells() == 600 + 3 + 2 + 50
