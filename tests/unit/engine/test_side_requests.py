"""Short side requests between the turns of a long conversation never push its prefix out: the slot
and host-RAM policy ranks what to lose by reuse count and length (no model; no client names)."""

from __future__ import annotations

import itertools

from lmdock.engine.prompt_cache import PromptCache
from lmdock.engine.slots import MOVE_REUSED_AFTER, CopyPrefix, Slot, SlotPool

LONG = 64  # the pool's long-prefix threshold in these tests
HEADER = [1, 2, 3]  # a chat template's opening tokens, shared by every prompt
SYSTEM = HEADER + list(range(1000, 1200))  # the main conversation's long system prompt and tools


def pool(n: int) -> SlotPool:
    ticks = itertools.count()
    return SlotPool(n, clock=lambda: float(next(ticks)), long_prefix=LONG)


def serve(p: SlotPool, prompt: list[int], generated: int = 2) -> Slot:
    """Claim a slot for `prompt`, compute it and a short answer, and give the slot back cached."""
    claim = p.claim(prompt)
    assert claim is not None
    claim.slot.tokens = list(prompt) + [9] * generated
    p.release(claim.slot, keep_cache=True)
    return claim.slot


def side(i: int) -> list[int]:
    """A short one-off request with its own small system prompt (a title, a summary, a prefix check)."""
    return HEADER + [500 + i] * 20


def test_the_reuse_count_follows_the_conversation_from_slot_to_slot():
    p = pool(4)
    turn1 = serve(p, SYSTEM + [7])
    assert turn1.reuses == 0 and p.keep_rank(turn1) == 2  # long, not reused yet
    turn2 = serve(p, SYSTEM + [7, 9, 9, 8])  # the next turn copies the prefix into an empty slot
    assert turn2 is not turn1 and turn2.reuses == 1 and p.keep_rank(turn2) == 3
    assert p.keep_rank(turn1) == 0  # superseded: its tokens are turn 2's prefix too
    short = serve(p, side(0))
    assert p.keep_rank(short) == 1


def test_side_requests_take_every_other_slot_before_the_conversations():
    p = pool(3)
    serve(p, SYSTEM + [7])
    main = serve(p, SYSTEM + [7, 9, 9, 8])
    for i in range(6):  # more one-off requests than there are slots, with and without the header
        serve(p, side(i) if i % 2 else [600 + i] * 20)
        assert main.tokens[: len(SYSTEM)] == SYSTEM and main.reuses == 1
    claim = p.claim(SYSTEM + [7, 9, 9, 8, 9, 9, 6])  # the next turn still finds all of it resident
    assert claim is not None and claim.slot is main and claim.reused == len(SYSTEM) + 6


def test_a_side_request_sharing_only_the_header_does_not_truncate_the_conversation_in_place():
    p = pool(2)
    main = serve(p, SYSTEM + [7])
    serve(p, side(0))
    assert serve(p, SYSTEM + [7, 9, 9, 8]) is main  # no empty slot: continued in place, now reused
    assert main.reuses == 1
    claim = p.claim(side(1))  # its longest shared prefix (the header) is the conversation's first
    assert claim is not None and claim.slot is not main and claim.reused == len(HEADER)
    assert CopyPrefix(main.seq_id, claim.slot.seq_id, len(HEADER)) in claim.ops
    assert main.tokens[: len(SYSTEM) + 6] == SYSTEM + [7, 9, 9, 8, 9, 9]


def test_what_gives_way_when_the_kv_cache_is_full_is_the_cheapest_to_lose():
    p = pool(5)
    serve(p, SYSTEM + [7])
    main = serve(p, SYSTEM + [7, 9, 9, 8])
    one_off = serve(p, HEADER + list(range(3000, 3100)))  # long, never reused
    short = serve(p, side(1))
    assert p.evictable()[0] is not main and p.evictable()[-1] is main
    assert p.evictable()[-2:] == [one_off, main] and short in p.evictable()[:3]


def test_a_conversations_prefix_stays_resident_beside_an_unrelated_short_request():
    p = pool(4)
    serve(p, SYSTEM + [7])
    main = serve(p, SYSTEM + [7, 9, 9, 8])
    other = serve(p, [77] * 100)  # long, unrelated, never reused
    p.claim(side(2))  # running now
    assert main not in p.in_the_way(16) and other in p.in_the_way(16)


def test_a_conversations_prefix_gives_way_to_work_that_would_pay_more_for_it_than_its_move():
    """A subagent or a long side request beside an idle main loop walks every cell of the main loop's
    prefix on each of its steps; past `MOVE_REUSED_AFTER` tokens of work a move to RAM and back is cheaper."""
    p = pool(4)
    serve(p, SYSTEM + [7])
    main = serve(p, SYSTEM + [7, 9, 9, 8])
    assert p.keep_rank(main) == 3
    p.claim(side(2))
    assert main not in p.in_the_way(16, MOVE_REUSED_AFTER - 1)
    assert p.in_the_way(16, MOVE_REUSED_AFTER)[0] is main  # the largest first
    p.claim(SYSTEM + [7, 9, 9, 8, 9, 9, 5])  # its next turn runs: sharing a busy prefix, it stays
    assert main not in p.in_the_way(16, MOVE_REUSED_AFTER)


def test_host_ram_drops_one_off_entries_before_a_reused_one():
    ticks = itertools.count()
    cache = PromptCache(ram_bytes=10, disk_dir=None, min_tokens=1, clock=lambda: float(next(ticks)))
    cache.add_ram([1, 2, 3], b"main", reuses=2)  # the oldest, but reused
    cache.add_ram([4], b"side")
    cache.add_ram([5], b"more")  # 12 bytes > 10: the one-off that was least recently used goes
    assert [e.tokens for e in cache.ram] == [[1, 2, 3], [5]]
    cache.add_ram([6], b"last")
    assert [e.tokens for e in cache.ram] == [[1, 2, 3], [6]]
