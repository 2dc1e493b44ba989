"""Speculation policy: how many proposed tokens each decoding sequence verifies in the next step.

Pure decisions over numbers (no llama.cpp, no Sequence): the engine's `Speculator` feeds them what the
n-gram index proposed, what was then sampled and how long steps took, and applies the draft lengths.

- `Acceptance` estimates, per sequence, the chance that a proposed token is the one the sampler picks,
  in two states: inside a run of right guesses (an agent copying a file: nearly always right) and
  outside one (a fresh lookup: often wrong). Every sampled token that had a proposal is a trial, whether
  it was verified or not, so the estimate stays current while nothing is verified.
- `StepCost` learns how long one `llama_decode` takes for a batch of B tokens on this machine, at the KV
  depth it runs at, from the steps the engine runs (no fixed numbers: a 2-core laptop and a 64-core
  server differ by far more than any default could cover, and a step over 20k cached tokens costs
  several times one over none).
- `plan_drafts` picks the draft lengths that maximise expected emitted tokens per second of the step,
  so a draft is verified only where it is expected to pay for the batch tokens it adds.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from lmdock.engine.ngram import NgramIndex
from lmdock.engine.spec import SpecConfig

DECAY = 0.97  # weight of a trial one trial later: the estimate follows roughly the last 30 tokens
GAIN_MARGIN = 1.05  # a draft must promise this much more throughput than none (estimates are noisy)


@dataclass
class Rate:
    """A probability estimated from recent trials, older ones counting less."""

    hits: float
    trials: float

    @property
    def value(self) -> float:
        return self.hits / self.trials if self.trials > 0 else 0.0

    def observe(self, hit: bool) -> None:
        self.hits = self.hits * DECAY + (1.0 if hit else 0.0)
        self.trials = self.trials * DECAY + 1.0

    def seed(self, weight: float) -> Rate:
        """A new estimate that starts at this one's value with the weight of `weight` trials."""
        return Rate(self.value * weight, weight)


@dataclass
class Acceptance:
    """The chance that a proposed token is sampled: after a right guess (`run`) or not (`fresh`)."""

    fresh: Rate = field(default_factory=lambda: Rate(1.0, 4.0))
    run: Rate = field(default_factory=lambda: Rate(3.0, 4.0))
    in_run: bool = False

    @property
    def first(self) -> float:
        """Chance that the next proposed token is right."""
        return (self.run if self.in_run else self.fresh).value

    @property
    def then(self) -> float:
        """Chance that a proposed token is right, given the one before it was."""
        return self.run.value

    def observe(self, proposal: Sequence[int], sampled: Sequence[int], also: Acceptance | None = None) -> int:
        """Compare what was proposed with what was then sampled, position by position, up to the first
        difference; `also` (a model-wide estimate) learns the same trials. Returns the number of leading
        proposed tokens that were sampled."""
        right = 0
        for want, got in zip(proposal, sampled, strict=False):
            hit = want == got
            for acc in (self, also) if also is not None else (self,):
                (acc.run if acc.in_run else acc.fresh).observe(hit)
                acc.in_run = hit
            if not hit:
                return right
            right += 1
        if len(sampled) > len(proposal):  # a token nothing was proposed for: the next lookup is fresh
            self.in_run = False
            if also is not None:
                also.in_run = False
        return right

    def seeded(self, weight: float = 4.0) -> Acceptance:
        """A new sequence's estimate: this (model-wide) one's values, with little weight."""
        return Acceptance(self.fresh.seed(weight), self.run.seed(weight))


class CostLine:
    """Seconds of one `llama_decode` step as a function of its token count B at one KV depth, learned
    from decode-only steps: a line `a + b * (B - 1)` fitted by recency-weighted least squares. Until
    steps of different sizes have been seen, the slope leans on a prior (`prior_slope` of a one-token
    step per extra token: what a shallower depth measured, or `PRIOR_SLOPE`, on the dear side so that
    drafts start only where acceptance is high)."""

    PRIOR_SLOPE = 0.5
    PRIOR_WEIGHT = 4.0  # the prior counts like this much spread in B (in B^2 units)
    DECAY = 0.99  # per observed step: the fit follows the machine as its load changes

    def __init__(self, prior_slope: float = PRIOR_SLOPE) -> None:
        self.prior_slope = prior_slope
        self._w = self._x = self._xx = self._y = self._xy = 0.0

    def observe(self, tokens: int, seconds: float) -> None:
        if tokens < 1 or seconds <= 0:
            return
        d, x = self.DECAY, tokens - 1.0
        self._w = self._w * d + 1.0
        self._x = self._x * d + x
        self._xx = self._xx * d + x * x
        self._y = self._y * d + seconds
        self._xy = self._xy * d + x * seconds

    def line(self) -> tuple[float, float]:
        """(a, b): seconds of a one-token step and of each further token (0, 0 before any step)."""
        if self._w <= 0:
            return 0.0, 0.0
        mx, my = self._x / self._w, self._y / self._w
        sxx = self._xx - self._w * mx * mx
        sxy = self._xy - self._w * mx * my
        prior = self.prior_slope * my / (1.0 + self.prior_slope * mx)
        b = max((sxy + self.PRIOR_WEIGHT * prior) / (max(sxx, 0.0) + self.PRIOR_WEIGHT), 0.0)
        a = max(my - b * mx, 1e-6)
        return a, b

    def seconds(self, tokens: int) -> float:
        a, b = self.line()
        return a + b * max(tokens - 1, 0) if a > 0 else float(max(tokens, 1))

    def slope(self) -> float:
        """What each further token costs, as a share of a one-token step (the prior before any step)."""
        a, b = self.line()
        return b / a if a > 0 else self.prior_slope


class StepCost:
    """Seconds of a decode step of B tokens at a KV depth of n_kv cells: one `CostLine` per depth band
    (an octave of n_kv). Attention walks every cell for every token of the batch, so both a one-token
    step and each token a draft adds cost more the deeper the KV (measured on 2 EPYC cores, default
    model: a second token adds 0.8 of a step at 70 cells, 1.0 at 8k); one line for all depths, fitted
    mostly on the short chat decoded before, priced a draft at 8k cells at 0.6. A band's first line
    starts from the nearest band's slope; a band no step has reached yet borrows the nearest band's line
    (only its shape matters: drafts are sized by ratios of step costs)."""

    def __init__(self) -> None:
        self._bands: dict[int, CostLine] = {}

    @staticmethod
    def band(n_kv: int) -> int:
        return max(n_kv, 0).bit_length()

    def observe(self, tokens: int, n_kv: int, seconds: float) -> None:
        band = self.band(n_kv)
        if band not in self._bands:
            self._bands[band] = CostLine(self.at(n_kv).slope())  # the nearest band's, or the prior
        self._bands[band].observe(tokens, seconds)

    def at(self, n_kv: int) -> CostLine:
        """The line for steps at `n_kv` cells (a fresh one before any step)."""
        if not self._bands:
            return CostLine()
        want = self.band(n_kv)
        return self._bands[min(self._bands, key=lambda b: (abs(b - want), -b))]


@dataclass(frozen=True)
class Offer:
    """One decoding sequence's case for a draft: how likely its tokens are accepted, and how many it may
    verify (its proposal's length, capped by `draft_max`, its `max_tokens` and the grammar)."""

    first: float
    then: float
    limit: int


def plan_drafts(
    offers: list[Offer],
    base_tokens: int,
    room: int,
    cost: Callable[[int], float],
    margin: float = GAIN_MARGIN,
) -> list[int]:
    """Draft lengths, one per offer, that maximise expected emitted tokens per second of the step.

    The step already holds `base_tokens` (one per decoding sequence, plus prefill chunks) and may take
    `room` more. Draft token j of a sequence adds `first * then**(j-1)` expected tokens (it counts only if
    every one before it was accepted) and costs the batch one more token (`cost(B)`: seconds of a step of
    B tokens). Taking the most valuable tokens first is optimal because each sequence's values fall."""
    values: list[tuple[float, int]] = []
    for i, offer in enumerate(offers):
        value = offer.first
        for _ in range(offer.limit):
            values.append((value, i))
            value *= offer.then
    values.sort(key=lambda v: -v[0])
    del values[max(room, 0) :]
    expected = float(len(offers))
    best_n, best_rate = 0, expected / cost(base_tokens) * margin
    for n, (value, _) in enumerate(values, 1):
        expected += value
        rate = expected / cost(base_tokens + n)
        if rate > best_rate:
            best_n, best_rate = n, rate
    lengths = [0] * len(offers)
    for _, i in values[:best_n]:
        lengths[i] += 1
    return lengths


class DraftState:
    """One sequence's speculation: its history index, its acceptance estimate, the proposal made for the
    step under way, and what it verified (for its usage line)."""

    def __init__(self, config: SpecConfig, prompt: Sequence[int], acceptance: Acceptance) -> None:
        self.config = config
        self.index = NgramIndex(config.ngram_min, prompt)
        self.acceptance = acceptance
        self.proposal: list[int] = []  # proposed for the positions after the pending token
        self.proposed = 0  # draft tokens verified
        self.accepted = 0  # of those, the ones sampled (emitted)

    def propose(self) -> list[int]:
        """Look the history up; the proposal is kept to be compared with what is sampled next."""
        self.proposal = self.index.propose(self.config.draft_max).tokens
        return self.proposal

    def settle(self, verified: int, sampled: Sequence[int], model: Acceptance | None = None) -> int:
        """After a step: `verified` leading proposal tokens were in the batch, `sampled` are the tokens the
        sampler then picked. Learn from them, index them; returns the draft tokens accepted."""
        right = self.acceptance.observe(self.proposal, sampled, model)
        accepted = min(right, verified)
        self.proposed += verified
        self.accepted += accepted
        self.index.extend(sampled)
        self.proposal = []
        return accepted
