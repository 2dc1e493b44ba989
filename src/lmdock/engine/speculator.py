"""Draftless speculative decoding in the step loop (engine thread only).

Before a step, `plan` gives each decoding sequence a draft: tokens its own history proposes
(engine/ngram.py), as many as the policy (engine/speculation.py) expects to pay for their place in the
batch. The runner puts them in the batch after the sequence's pending token, each with its logits. The
engine then samples position by position with the sequence's own sampler chain and grammar, and keeps a
draft token only while it equals what was sampled: the output is exactly what decoding one token at a
time gives, for any sampler. `settle` learns from what was sampled; the engine rolls the KV back past the
rejected tokens.
"""

from __future__ import annotations

from lmdock.engine.scheduler import Step
from lmdock.engine.sequence import Sequence
from lmdock.engine.speculation import Acceptance, DraftState, Offer, SpecConfig, StepCost, plan_drafts
from lmdock.engine.types import EngineStats


class Speculator:
    """Proposes, sizes and accounts for every sequence's drafts; learns the step cost of this machine."""

    def __init__(self, config: SpecConfig, n_batch: int, stats: EngineStats) -> None:
        self.config = config
        self.n_batch = n_batch
        self.stats = stats
        self.cost = StepCost()
        self.acceptance = Acceptance()  # model-wide: where a new sequence's estimate starts
        self.sizer = plan_drafts  # the draft-length policy (engine tests may verify every proposal whole)
        self._hold = False  # the last step with drafts found the KV cache full: one step without

    def plan(self, step: Step, n_kv: int) -> None:
        """Set `draft` on every decoding sequence of `step` (empty where none pays); the step attends over
        `n_kv` KV cells besides its own tokens."""
        for seq in step.decode:
            seq.draft = []
        if not self.config.enabled or not step.decode:
            return
        offers = [self._offer(seq) for seq in step.decode]
        if self._hold:
            self._hold = False
            return
        base = len(step.decode) + sum(p.n_tokens for p in step.prefill)
        lengths = self.sizer(offers, base, self.n_batch - base, self.cost.at(n_kv).seconds)
        for seq, n in zip(step.decode, lengths, strict=True):
            if n and seq.spec is not None:
                seq.draft = seq.spec.proposal[:n]

    def _offer(self, seq: Sequence) -> Offer:
        spec = self._state(seq)
        proposal = spec.propose()
        limit = min(len(proposal), seq.max_tokens - seq.generated - 1)
        if seq.constraint is not None and limit > 0:
            limit = seq.constraint.valid_prefix(proposal[:limit])  # a forbidden token ends the draft
        return Offer(spec.acceptance.first, spec.acceptance.then, max(limit, 0))

    def _state(self, seq: Sequence) -> DraftState:
        if seq.spec is None:
            seq.spec = DraftState(self.config, seq.request.prompt, self.acceptance.seeded())
        return seq.spec

    def settle(self, seq: Sequence, draft: list[int], sampled: list[int]) -> None:
        """Learn from the tokens sampled after `pending` (with `draft` verified) and count them."""
        if not self.config.enabled:
            return
        accepted = self._state(seq).settle(len(draft), sampled, self.acceptance)
        self.stats.spec_proposed_tokens += len(draft)
        self.stats.spec_accepted_tokens += accepted

    def timed(self, step: Step, n_kv: int, seconds: float) -> None:
        """A decoded step over `n_kv` cells took `seconds`: learn the step cost from decode-only steps."""
        if step.decode and not step.prefill:
            self.cost.observe(sum(1 + len(s.draft) for s in step.decode), n_kv, seconds)

    def retract(self, step: Step) -> bool:
        """llama.cpp found no room for `step`: if it carried drafts, drop them and run the next step
        without any (True); otherwise room must be made (False)."""
        if not any(s.draft for s in step.decode):
            return False
        for seq in step.decode:
            seq.draft = []
        self._hold = True
        return True
