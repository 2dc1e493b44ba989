"""Speculative decoding on the real default model: what is emitted is what decoding one token per step
emits (greedy: the same text; see tests/greedy.py for the one allowance, a near-tie), with stops,
`max_tokens`, grammars, logprobs and cancellation exact, and the KV cache rolled back past every rejected
draft token.

The speculating engine here verifies every proposal whole (no cost policy) so that drafts are in the
batch whatever this machine's step timings say; the policy itself is tested in tests/unit.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import llama_cpp as L
import numpy as np
import pytest

from lmdock.core.request import SamplingParams
from lmdock.engine import ContextParams, EngineRequest, Finished, SpecConfig, TextChunk, TokenLogprob
from lmdock.engine.batch import Batch
from lmdock.engine.inproc import InProcessClient
from lmdock.engine.llama_model import LlamaModel
from lmdock.engine.logprobs import logits_row
from lmdock.engine.speculation import Offer
from tests.conftest import DEFAULT_MODEL, default_model_repack
from tests.engine.conftest import chatml, close, make_engine, run
from tests.greedy import assert_greedy_rows, assert_same_or_tied

SOURCE = (Path(__file__).resolve().parents[2] / "bench" / "data" / "edit_source.txt").read_text()
EDIT = chatml(
    f"Here is a Python file:\n\n```python\n{SOURCE}```\n\nRename every function to camelCase "
    "(load_items -> loadItems and so on) and give me the whole file back, changed only there."
)
PROSE = chatml("Write a short story about a lighthouse keeper who finds a message in a bottle.")
N_EDIT, N_PROSE = 160, 80


def verify_whole(offers: list[Offer], base_tokens: int, room: int, cost, margin: float = 0.0) -> list[int]:
    """Every proposal in full, as far as the batch has room."""
    lengths = []
    for offer in offers:
        lengths.append(max(0, min(offer.limit, room)))
        room -= lengths[-1]
    return lengths


@pytest.fixture(scope="module")
def plain():
    eng = make_engine(parallel=2, speculation=SpecConfig(type="none"))
    yield eng
    close(eng)


@pytest.fixture(scope="module")
def spec():
    eng = make_engine(parallel=2, speculation=SpecConfig(type="ngram", draft_max=8, ngram_min=3))
    eng.engine.speculator.sizer = verify_whole
    yield eng
    close(eng)


async def generate(
    engine: InProcessClient, prompt: str, max_tokens: int, **kw
) -> tuple[str, list[TokenLogprob], Finished]:
    """Greedy text, the logprobs of every token (2 alternatives) and the Finished event."""
    request = EngineRequest(
        prompt=engine.vocab.tokenize(prompt),
        max_tokens=max_tokens,
        sampling=SamplingParams(temperature=0),
        logprobs=2,
        **kw,
    )
    text: list[str] = []
    entries: list[TokenLogprob] = []
    async for event in await engine.submit(request):
        if isinstance(event, TextChunk):
            text.append(event.text)
            entries.extend(event.logprobs or [])
        elif isinstance(event, Finished):
            assert_greedy_rows(entries)  # exact, draft or no draft
            return "".join(text), entries, event
    raise AssertionError("stream ended without Finished")


@pytest.fixture(scope="module")
def edit_reference(plain):
    return run(generate(plain, EDIT, N_EDIT))


def kv_matches_tokens(engine: InProcessClient) -> None:
    """Every slot's KV holds exactly the tokens the engine thinks it does (rejected drafts removed)."""
    for slot in run(engine.snapshot()).slots:
        assert slot.kv_pos_max == slot.tokens - 1, slot


def test_the_edit_prompt_is_copied_with_drafts_and_gives_the_same_text_and_logprobs(spec, edit_reference):
    ref_text, ref_entries, ref_fin = edit_reference
    text, entries, fin = run(generate(spec, EDIT, N_EDIT))
    assert fin.spec_accepted > 20, "copying a file should accept many draft tokens"
    assert fin.spec_proposed >= fin.spec_accepted
    assert_same_or_tied(ref_entries, text)
    if text == ref_text:
        assert fin.generated_tokens == ref_fin.generated_tokens == len(entries)
        for want, got in zip(ref_entries, entries, strict=True):  # read from the row it was sampled from
            assert got.token == want.token and got.logprob == pytest.approx(want.logprob, abs=0.3)
    kv_matches_tokens(spec)
    stats = spec.engine.stats
    assert stats.spec_accepted_tokens >= fin.spec_accepted and stats.spec_proposed_tokens >= fin.spec_proposed


def test_prose_gives_the_same_text(plain, spec):
    _, ref_entries, _ = run(generate(plain, PROSE, N_PROSE))
    text, _, fin = run(generate(spec, PROSE, N_PROSE))
    assert_same_or_tied(ref_entries, text)
    assert fin.spec_accepted <= fin.spec_proposed


SEEDS = range(16)


async def sampled_texts(engine: InProcessClient, max_tokens: int = 32) -> list[tuple[str, Finished]]:
    """The edit answer at temperature 0.8, one request per seed, one at a time (so that, drafts aside, both
    engines compute every row in the same batch shape: the prompt's last row comes from the cache)."""

    async def one(seed: int) -> tuple[str, Finished]:
        request = EngineRequest(
            prompt=engine.vocab.tokenize(EDIT),
            max_tokens=max_tokens,
            sampling=SamplingParams(temperature=0.8, seed=seed),
        )
        text: list[str] = []
        async for event in await engine.submit(request):
            if isinstance(event, TextChunk):
                text.append(event.text)
            elif isinstance(event, Finished):
                return "".join(text), event
        raise AssertionError("stream ended without Finished")

    return [await one(seed) for seed in SEEDS]


def test_a_seed_draws_the_same_text_with_drafts_as_without(plain, spec):
    """Sampled, every emitted token is one draw of the sequence's own seeded chain, draft or no draft (a
    draft token is kept only while it is the token drawn), so a seed's text is the one-token-per-step
    text, and the distribution over seeds is the target's. The allowance is a draw that falls within
    batch-shape noise (tests/greedy.py) of the boundary between two likely tokens, in a row computed
    behind a draft: 2 seeds of 12 in each of three runs here, at rows whose two best tokens were close
    (" the complete" / " the whole"; the docstring or not after "```python"). Drafts that consumed or
    skipped draws would shift every later draw: then most seeds differ at the first uncertain row after
    their first draft."""
    reference = run(sampled_texts(plain))
    drafted = run(sampled_texts(spec))
    assert len({text for text, _ in reference}) >= 4, "temperature 0.8 should give different texts"
    assert sum(fin.spec_accepted for _, fin in drafted) > 30, "copying should accept draft tokens"
    differ = [(a, b) for (a, _), (b, _) in zip(reference, drafted, strict=True) if a != b]
    assert len(differ) <= len(SEEDS) // 2, differ
    kv_matches_tokens(spec)


def test_a_stop_sequence_inside_an_accepted_draft_ends_the_text_there(spec, edit_reference):
    ref_text, ref_entries, _ = edit_reference
    start = len(ref_text) * 2 // 3  # inside the copied file, where drafts are long
    stop = ref_text[start : start + 12]
    while ref_text.find(stop) < start:  # the first occurrence must be this one
        start += 1
        stop = ref_text[start : start + 12]
    text, _, fin = run(generate(spec, EDIT, N_EDIT, stop=[stop]))
    if text != ref_text[:start]:
        assert_same_or_tied(ref_entries, text)  # a near-tie before the stop: then nothing else to check
        return
    assert fin.reason == "stop" and fin.stop_sequence == stop
    assert fin.spec_accepted > 0
    kv_matches_tokens(spec)


@pytest.mark.parametrize("max_tokens", [37, 58])
def test_max_tokens_ending_inside_a_draft_emits_exactly_that_many(spec, edit_reference, max_tokens):
    _, ref_entries, _ = edit_reference
    text, entries, fin = run(generate(spec, EDIT, max_tokens))
    assert fin.reason == "length" and fin.generated_tokens == max_tokens == len(entries)
    assert_same_or_tied(ref_entries[:max_tokens], text)
    kv_matches_tokens(spec)


def test_a_grammar_checks_every_draft_token(plain, spec):
    schema = {
        "type": "object",
        "properties": {"functions": {"type": "array", "items": {"type": "string"}}},
        "required": ["functions"],
        "additionalProperties": False,
    }
    grammar = f"start: %json{json.dumps(schema)}"
    prompt = chatml(
        f"```python\n{SOURCE}```\n\nList the names of every function in this file as JSON: "
        '{"functions": ["load_items", ...]}'
    )
    _, ref_entries, ref_fin = run(generate(plain, prompt, 120, grammar=grammar))
    text, _, fin = run(generate(spec, prompt, 120, grammar=grammar))
    assert_same_or_tied(ref_entries, text)
    assert ref_fin.reason in ("grammar", "eog") and fin.reason in ("grammar", "eog")
    assert isinstance(json.loads(text)["functions"], list)
    assert fin.spec_proposed > 0
    kv_matches_tokens(spec)


def test_cancelling_mid_draft_frees_the_sequence_and_its_kv(spec):
    async def cancel_after(chunks: int) -> None:
        request = EngineRequest(prompt=spec.vocab.tokenize(EDIT), max_tokens=400)
        stream = await spec.submit(request)
        seen = 0
        async for event in stream:
            if isinstance(event, TextChunk) and event.text:
                seen += 1
                if seen == chunks:
                    break
        await stream.aclose()

    async def both() -> None:
        await asyncio.gather(cancel_after(30), cancel_after(45))

    before = spec.engine.stats.spec_accepted_tokens
    run(both())
    for _ in range(100):
        snap = run(spec.snapshot())
        if snap.active == 0 and snap.waiting == 0:
            break
        run(asyncio.sleep(0.05))
    assert snap.active == 0 and snap.waiting == 0
    assert spec.engine.stats.spec_accepted_tokens > before
    kv_matches_tokens(spec)


def test_a_batch_sequence_preempted_while_copying_resumes_where_it_was(edit_reference):
    """One slot, a batch request copying the file with drafts, then an interactive request: the batch
    sequence leaves its slot between two draft steps and comes back reading its own output as prompt;
    its text goes on where it stopped (nothing lost, nothing repeated) and its KV holds what it emitted."""
    solo = make_engine(parallel=1, speculation=SpecConfig(type="ngram", draft_max=8, ngram_min=3))
    solo.engine.speculator.sizer = verify_whole
    _, ref_entries, _ = edit_reference
    n = 100
    try:

        async def scenario() -> tuple[str, list[TokenLogprob], Finished]:
            request = EngineRequest(
                prompt=solo.vocab.tokenize(EDIT),
                max_tokens=n,
                sampling=SamplingParams(temperature=0),
                logprobs=2,
                priority=1,
            )
            text: list[str] = []
            entries: list[TokenLogprob] = []
            interactive = None
            async for event in await solo.submit(request):
                if isinstance(event, TextChunk):
                    text.append(event.text)
                    entries.extend(event.logprobs or [])
                    if interactive is None and solo.engine.stats.spec_accepted_tokens > 10:
                        interactive = asyncio.ensure_future(generate(solo, PROSE, 8))  # inside the copy
                elif isinstance(event, Finished):
                    assert interactive is not None, "no draft was accepted before the end"
                    await interactive
                    return "".join(text), entries, event

            raise AssertionError("stream ended without Finished")

        text, entries, fin = run(scenario())
        assert solo.engine.stats.preemptions >= 1
        assert fin.reason == "length" and fin.generated_tokens == n == len(entries)
        assert_greedy_rows(entries)
        assert_same_or_tied(ref_entries[:n], text)
        assert fin.spec_accepted > 10
        kv_matches_tokens(solo)
    finally:
        close(solo)


def test_draft_tokens_cannot_change_the_row_before_them():
    """Exact, with the same batch shape both times: the pending token's logits are bit for bit the same
    whatever draft follows it in the batch, so a rejected draft never leaked into what was sampled. (The
    same row computed in a one-token batch may differ in its last bits: tests/greedy.py.)"""
    params = ContextParams(
        n_ctx=1024, n_batch=64, n_seq_max=1, n_threads=2, use_extra_bufts=default_model_repack()
    )
    llama = LlamaModel(DEFAULT_MODEL, params)
    batch = Batch(64)
    try:
        prompt = llama.tokenize(chatml("Give me the file back, unchanged."))
        for i, token in enumerate(prompt):
            batch.add(token, i, 0, False)
        assert L.llama_decode(llama.ctx, batch.raw) == 0
        pending, pos = llama.tokenize("```")[0], len(prompt)
        rows = []
        for draft in (
            llama.tokenize(" the quick brown fox jumps"),
            llama.tokenize("def load_items(path: Path)"),
        ):
            batch.clear()
            batch.add(pending, pos, 0, True)
            for i, token in enumerate(draft[:4], 1):
                batch.add(token, pos + i, 0, True)
            assert L.llama_decode(llama.ctx, batch.raw) == 0
            rows.append(logits_row(L.llama_get_logits_ith(llama.ctx, 0), llama.n_vocab).copy())
            L.llama_memory_seq_rm(llama.memory, 0, pos, -1)  # roll back as the engine does
        assert np.array_equal(rows[0], rows[1])
    finally:
        batch.close()
        llama.close()
