"""Speculation policy without a model: n-gram proposals, acceptance estimates, the step-cost fit and the
draft lengths the planner picks."""

from __future__ import annotations

import random

import pytest

from lmdock.engine.ngram import MAX_MATCH, NgramIndex
from lmdock.engine.spec import SpecConfig
from lmdock.engine.speculation import Acceptance, CostLine, DraftState, Offer, Rate, StepCost, plan_drafts

# --- n-gram index -----------------------------------------------------------------------------------


def test_the_continuation_of_an_earlier_occurrence_is_proposed():
    index = NgramIndex(3, [1, 2, 3, 4, 5, 6, 7, 9, 9, 1, 2, 3])
    assert index.propose(3).tokens == [4, 5, 6]
    assert index.propose(12).tokens == [4, 5, 6, 7, 9, 9, 1, 2, 3, 4, 5, 6]  # then the same again


def test_nothing_is_proposed_without_a_match_of_n_tokens():
    index = NgramIndex(3, [1, 2, 3, 4, 5, 9, 2, 3])
    assert index.propose(4).tokens == []  # only (2, 3) matches: shorter than n
    index.append(4)
    assert index.propose(5).tokens == [5, 9, 2, 3, 4]
    assert NgramIndex(3, [1, 2]).propose(4).tokens == []
    assert NgramIndex(3, [1, 2, 3, 1, 2, 3]).propose(0).tokens == []


def test_the_longest_match_wins_and_among_equal_ones_the_latest():
    #       longer match (0, 1, 2, 3) then 7      shorter (9, 2, 3) then 8     current suffix
    history = [5, 0, 1, 2, 3, 7, 6, 9, 2, 3, 8, 6, 0, 1, 2, 3]
    proposal = NgramIndex(3, history).propose(1)
    assert proposal.tokens == [7] and proposal.match == 4
    latest = NgramIndex(3, [1, 2, 3, 4, 0, 1, 2, 3, 5, 0, 1, 2, 3])
    assert latest.propose(1).tokens == [5]


def test_the_match_length_is_capped():
    proposal = NgramIndex(2, [7] * 200).propose(4)
    assert proposal.match == MAX_MATCH and proposal.tokens == [7, 7, 7, 7]


def test_a_repeating_pattern_is_continued_past_the_history():
    assert NgramIndex(2, [5, 1, 2, 1, 2, 1, 2]).propose(5).tokens == [1, 2, 1, 2, 1]


def test_appending_keeps_the_index_equal_to_building_it_at_once():
    rng = random.Random(5)
    tokens = [rng.randrange(6) for _ in range(400)]
    grown = NgramIndex(2)
    for i, token in enumerate(tokens):
        grown.append(token)
        whole = NgramIndex(2, tokens[: i + 1])
        assert grown.propose(5) == whole.propose(5)


def test_an_n_below_one_is_refused():
    with pytest.raises(ValueError):
        NgramIndex(0)


# --- acceptance -------------------------------------------------------------------------------------


def test_a_rate_follows_recent_trials():
    rate = Rate(0.0, 1.0)
    for _ in range(200):
        rate.observe(True)
    assert rate.value > 0.99
    for _ in range(200):
        rate.observe(False)
    assert rate.value < 0.01


def test_trials_stop_at_the_first_wrong_guess_and_set_the_state():
    acc = Acceptance(fresh=Rate(0.0, 1.0), run=Rate(0.0, 1.0))
    assert acc.observe([1, 2, 3], [1, 2, 9]) == 2
    assert not acc.in_run
    assert acc.fresh.trials > 1 and acc.fresh.hits == pytest.approx(1.0)  # the first guess, right
    assert acc.run.hits == pytest.approx(0.97) and acc.run.trials > 2  # right, then wrong (decayed)
    assert acc.observe([4, 5], [4]) == 1 and acc.in_run
    assert acc.observe([6], [6, 7]) == 1 and not acc.in_run  # nothing proposed for 7: fresh again
    assert acc.observe([], [8]) == 0 and not acc.in_run


def test_copying_raises_the_run_rate_and_a_model_estimate_learns_alongside():
    model = Acceptance()
    acc = model.seeded()
    for i in range(50):
        acc.observe([i], [i], also=model)
    assert acc.first > 0.9 and acc.then > 0.9 and model.then > 0.9
    new = model.seeded()
    assert new.run.trials == pytest.approx(4.0) and new.then == pytest.approx(model.then)


def test_a_draft_state_counts_verified_and_accepted_tokens_and_indexes_what_was_sampled():
    state = DraftState(SpecConfig(draft_max=5, ngram_min=2), [1, 2, 3, 4, 5, 1, 2], Acceptance())
    assert state.propose() == [3, 4, 5, 1, 2]
    assert state.settle(2, [3, 4, 6]) == 2  # 2 verified and right, then 5 was not what came
    assert state.settle(0, [8]) == 0  # nothing proposed (the proposal was consumed)
    assert (state.proposed, state.accepted) == (2, 2)
    assert state.index.tokens[-4:] == [3, 4, 6, 8]
    state.propose()
    assert state.settle(3, [3]) == 0  # a verified draft whose first token was wrong
    assert (state.proposed, state.accepted) == (5, 2)


# --- step cost --------------------------------------------------------------------------------------


def test_the_step_cost_fits_a_line_through_what_was_measured():
    cost = CostLine()
    for _ in range(100):
        for tokens in (1, 4, 9):
            cost.observe(tokens, 0.020 + 0.004 * (tokens - 1))
    a, b = cost.line()
    assert a == pytest.approx(0.020, rel=0.05) and b == pytest.approx(0.004, rel=0.1)
    assert cost.seconds(17) == pytest.approx(0.084, rel=0.1)


def test_with_one_step_size_seen_the_slope_is_the_prior():
    cost = CostLine()
    for _ in range(50):
        cost.observe(1, 0.030)
    a, b = cost.line()
    assert a == pytest.approx(0.030) and b == pytest.approx(0.030 * CostLine.PRIOR_SLOPE)


def test_before_any_step_each_token_costs_a_whole_step():
    assert CostLine().seconds(1) == 1 and CostLine().seconds(5) == 5
    assert StepCost().at(8000).seconds(5) == 5


def test_a_draft_at_depth_is_priced_by_steps_at_that_depth_not_by_the_short_chat_before():
    """A short chat decoded with drafts (extra tokens at 0.4 of a step), then a long prompt decoded one
    token at a time: one line over both saw dear one-token steps and cheap drafts, and priced a draft at
    8k cells as nearly free. The 8k band has its own line: with one step size seen there, the slope the
    shallow band measured, until drafts at 8k show their own."""
    cost = StepCost()
    for _ in range(100):
        for tokens in (1, 4, 9):
            cost.observe(tokens, 40, 0.020 + 0.008 * (tokens - 1))
    for _ in range(60):
        cost.observe(1, 8000, 0.050)
    shallow, deep = cost.at(40), cost.at(8100)
    assert shallow.seconds(2) / shallow.seconds(1) == pytest.approx(1.4, rel=0.05)
    assert deep.seconds(1) == pytest.approx(0.050)
    assert deep.seconds(2) / deep.seconds(1) == pytest.approx(1.4, rel=0.05)
    for _ in range(100):
        for tokens in (1, 2, 3):
            cost.observe(tokens, 8000, 0.050 * tokens)  # at depth each token costs a whole step
    assert deep.seconds(3) / deep.seconds(1) == pytest.approx(3.0, rel=0.05)
    assert shallow.seconds(2) / shallow.seconds(1) == pytest.approx(1.4, rel=0.05)


def test_a_depth_no_step_has_reached_borrows_the_nearest_line():
    cost = StepCost()
    for _ in range(50):
        cost.observe(1, 3000, 0.030)
        cost.observe(5, 3000, 0.050)
    assert cost.at(20000) is cost.at(3000) and cost.at(10) is cost.at(3000)
    for _ in range(5):
        cost.observe(1, 16000, 0.090)
    assert cost.at(20000) is not cost.at(3000)
    assert StepCost.band(0) == 0 and StepCost.band(4095) == StepCost.band(2048) != StepCost.band(4096)


# --- planning ---------------------------------------------------------------------------------------


def _linear(a: float, b: float):
    return lambda tokens: a + b * (tokens - 1)


def test_no_draft_where_acceptance_is_low_or_tokens_are_dear():
    assert plan_drafts([Offer(0.1, 0.3, 16)], 1, 511, _linear(1.0, 0.3)) == [0]
    assert plan_drafts([Offer(0.9, 0.9, 16)], 1, 511, _linear(1.0, 1.0)) == [0]


def test_a_copy_run_gets_a_long_draft_when_tokens_are_cheap():
    (n,) = plan_drafts([Offer(0.98, 0.98, 16)], 1, 511, _linear(1.0, 0.05))
    assert n == 16
    (m,) = plan_drafts([Offer(0.98, 0.98, 16)], 1, 511, _linear(1.0, 0.3))
    assert 2 <= m < 16


def test_drafts_go_where_they_pay_most_and_fit_the_room():
    lengths = plan_drafts([Offer(0.2, 0.5, 8), Offer(0.95, 0.95, 8)], 2, 511, _linear(1.0, 0.1))
    assert lengths[0] == 0 and lengths[1] > 0
    assert sum(plan_drafts([Offer(0.99, 0.99, 8)] * 4, 4, 5, _linear(1.0, 0.01))) == 5


def test_the_limit_caps_a_draft():
    assert plan_drafts([Offer(0.99, 0.99, 2)], 1, 511, _linear(1.0, 0.01)) == [2]
    assert plan_drafts([Offer(0.99, 0.99, 0)], 1, 511, _linear(1.0, 0.01)) == [0]
