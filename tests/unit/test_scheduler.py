"""Batch policy: prefill shares the budget left by decodes, capped while others decode."""

from lmdock.engine.scheduler import plan_prefill
from lmdock.engine.slots import common_prefix_len


def test_full_budget_when_nothing_decodes():
    plans = plan_prefill(["a", "b"], [1000, 50], budget=512, n_decoding=0, cap_while_decoding=64)
    assert [(p.seq, p.n_tokens) for p in plans] == [("a", 512)]


def test_prefill_is_capped_while_decoding():
    plans = plan_prefill(["a", "b"], [1000, 50], budget=509, n_decoding=3, cap_while_decoding=64)
    assert [(p.seq, p.n_tokens) for p in plans] == [("a", 64)]


def test_short_prompts_share_the_rest_of_the_budget_oldest_first():
    plans = plan_prefill(["a", "b", "c"], [10, 20, 500], budget=100, n_decoding=0, cap_while_decoding=64)
    assert [(p.seq, p.n_tokens) for p in plans] == [("a", 10), ("b", 20), ("c", 70)]


def test_common_prefix_len():
    a = list(range(1000))
    assert common_prefix_len(a, a) == 1000
    assert common_prefix_len(a, a[:300] + [-1]) == 300
    assert common_prefix_len([], a) == 0
