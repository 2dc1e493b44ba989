"""Why a prompt found what it found: the cache lookup explained, and why a request waited (no model)."""

from __future__ import annotations

from lmdock.engine.lookup import SNIPPET_CHARS, Nearest, explain, nearer, nearest
from lmdock.engine.reuse import Run
from lmdock.engine.types import CacheLookup, EngineStats
from tests.unit.engine.test_scheduler import scheduler, seq

TEXT = "The system prompt says hello. Today is 2026-12-03, the git status is clean; now the task."


def tok(text: str) -> list[int]:
    """One token per character (its code point), so token indexes are character indexes."""
    return [ord(c) for c in text]


def piece(token: int) -> bytes:
    return chr(token).encode()


def test_the_nearest_entry_is_the_longest_shared_prefix_and_keeps_what_followed():
    prompt = tok(TEXT)
    old_day = tok(TEXT.replace("12-03", "12-02"))
    near = nearest(prompt, [tok("The system"), old_day, tok("Other")])
    at = TEXT.index("12-03") + 4
    assert near is not None and near.common == at and near.diverges
    assert near.after[:2] == tok("2,")


def test_an_entry_the_prompt_extends_does_not_diverge_and_wins_a_tie():
    prompt = tok(TEXT)
    near = nearest(prompt, [tok(TEXT[:30] + "X"), tok(TEXT[:30])])
    assert near == Nearest(30, []) and not near.diverges
    assert nearest(prompt, [tok("nothing shared")]) is None
    assert nearer(Nearest(5, [1]), Nearest(9, [2])) == Nearest(9, [2])
    assert nearer(Nearest(9, [1]), Nearest(9, [])) == Nearest(9, [])
    assert nearer(None, Nearest(3, [])) == Nearest(3, [])


def test_a_partial_hit_says_where_the_prompt_diverged_with_text_on_each_side():
    prompt = tok(TEXT)
    at = TEXT.index("12-03") + 4
    near = nearest(prompt, [tok(TEXT.replace("12-03", "12-02"))])
    lookup = explain(prompt, near, "ram", at, [], piece)
    assert (lookup.tier, lookup.cached_tokens, lookup.diverged_at) == ("ram", at, at)
    assert lookup.before == TEXT[:at][-SNIPPET_CHARS:] and lookup.before.endswith("2026-12-0")
    assert lookup.prompt_after.startswith("3, the git") and lookup.cached_after.startswith("2, the git")
    assert len(lookup.prompt_after) <= SNIPPET_CHARS and len(lookup.cached_after) <= SNIPPET_CHARS


def test_a_miss_has_no_tier_and_chunk_reuse_is_counted_apart():
    prompt = tok(TEXT)
    miss = explain(prompt, None, "slot", 0, [], piece)
    assert miss == CacheLookup(tier=None, cached_tokens=0)
    runs = [Run(src=50, dst=40, length=30), Run(src=90, dst=80, length=10)]
    chunk = explain(prompt, Nearest(12, tok("xyz")), "slot", 12, runs, piece)
    assert (chunk.tier, chunk.cached_tokens, chunk.chunk_reused_tokens, chunk.diverged_at) == (
        "slot",
        12,
        40,
        12,
    )


def test_lookups_are_counted_by_tier_and_as_misses():
    stats = EngineStats()
    for lookup in [
        CacheLookup("slot", 10),
        CacheLookup("ram", 5),
        CacheLookup("disk", 7),
        CacheLookup(None, 0),
    ]:
        stats.counted(20, lookup)
    assert (stats.hits_slot, stats.hits_ram, stats.hits_disk, stats.misses) == (1, 1, 1, 1)
    assert (stats.prompt_tokens, stats.cache_hit_tokens) == (80, 22)


def test_each_waiting_request_learns_why_it_waits_the_first_time():
    s = scheduler(n_slots=4, parallel=1)
    first, second, third = seq([1, 2, 3]), seq([4, 5, 6]), seq([7, 8, 9])
    s.add(first)
    assert [a for a, _ in s.admit()] == [first] and first.blocked_by is None
    s.add(second)
    s.add(third)
    s.admit()
    assert second.blocked_by == "all 1 parallel sequences are running"
    assert third.blocked_by == "queued behind an earlier request (all 1 parallel sequences are running)"
    s.remove(first, keep_cache=True)
    assert [a for a, _ in s.admit()] == [second]
    assert second.blocked_by == "all 1 parallel sequences are running"  # the first reason stays


def test_admission_notes_the_resident_slot_nearest_the_prompt_before_claiming_it():
    s = scheduler(n_slots=1, parallel=1)
    first = seq([1, 2, 3, 4, 5])
    s.add(first)
    s.admit()
    first.slot.tokens = [1, 2, 3, 4, 5]
    s.remove(first, keep_cache=True)
    second = seq([1, 2, 9, 9])
    s.add(second)
    s.admit()
    assert second.nearest == Nearest(2, [3, 4, 5])  # what the slot held, though it was truncated to reuse
    assert second.slot.tokens == [1, 2]
