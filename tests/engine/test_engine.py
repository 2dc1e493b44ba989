"""Engine correctness on the real default model: batching, prefix caching, cancellation."""

from __future__ import annotations

import asyncio

from lmdock.core.request import SamplingParams
from lmdock.engine import EngineRequest, Finished, TextChunk
from tests.engine.conftest import chatml, close, generate, make_engine, run

PROMPTS = [
    chatml("Write a Python function that reverses a string."),
    chatml("List three prime numbers."),
    chatml("What is the boiling point of water in Celsius?"),
    chatml("Explain recursion in one sentence."),
]


def test_batched_greedy_output_equals_output_alone(engine):
    alone = run(generate(engine, PROMPTS[0], 40))

    async def together():
        return await asyncio.gather(*[generate(engine, p, 40) for p in PROMPTS])

    batched = run(together())
    assert batched[0][0] == alone[0]
    assert batched[0][1].generated_tokens == alone[1].generated_tokens
    assert all(text for text, _ in batched)


def test_resident_prefix_hit_equals_cold_output(engine):
    prompt = chatml("Name a fruit that is yellow.", system="Nonce 4411: a fresh system prompt.")
    cold_text, cold = run(generate(engine, prompt))
    warm_text, warm = run(generate(engine, prompt))
    assert cold.cached_tokens <= 3  # only the "<|im_start|>system\n" header is shared
    assert warm.cached_tokens == cold.prompt_tokens - 1
    assert warm_text == cold_text


def test_shared_prefix_is_reused_across_different_prompts(engine):
    system = "You are a meticulous assistant. " * 20
    run(generate(engine, chatml("First question: what is 2+2?", system)))
    _, second = run(generate(engine, chatml("Second question: what is 3+3?", system)))
    shared = len(engine.vocab.tokenize(chatml("", system).split("<|im_start|>user")[0]))
    assert second.cached_tokens >= shared


def test_ram_and_disk_cache_hits_equal_cold_output(tmp_path):
    long_system = "Reference manual. " + " ".join(f"Rule {i}: keep item {i} dry." for i in range(60))
    prompt = chatml("Which rule mentions item 7?", long_system)
    first = make_engine(tmp_path, parallel=1)
    try:
        cold_text, cold = run(generate(first, prompt))
        # push the cached slot out of the KV cache: it must spill to host RAM
        for slot in first.engine.pool.evictable():
            first.engine.evict(slot)
        assert first.engine.cache.ram, "the evicted prompt should be in host RAM"
        ram_text, ram = run(generate(first, prompt))
        assert ram.cached_tokens >= cold.prompt_tokens - 1 - 32
        assert ram_text == cold_text
        assert first.engine.stats.hits_ram == 1  # the lookup counted by the tier it came from
    finally:
        close(first)
    # a new engine on the same cache dir (a restart) restores the persisted prefix from disk
    second = make_engine(tmp_path, parallel=1)
    try:
        assert second.engine.cache.disk, "the prompt should have been persisted"
        disk_text, disk = run(generate(second, prompt))
        assert disk.cached_tokens >= cold.prompt_tokens - 1 - 32
        assert disk_text == cold_text
        assert (second.engine.stats.hits_disk, second.engine.stats.misses) == (1, 0)
    finally:
        close(second)


def test_a_prompt_is_saved_to_disk_after_its_first_token_is_sent(tmp_path):
    """Saving an 11k-token prompt takes most of a second; a Claude Code turn used to wait for it before
    its first token. The first token goes out (the worker flushes on `on_step`) before the save."""
    prompt = chatml(
        "Which rule mentions item 3?",
        "Reference manual. " + " ".join(f"Rule {i}: keep item {i} dry." for i in range(60)),
    )
    client = make_engine(tmp_path, parallel=1)
    engine = client.engine
    assert engine.mover is not None
    flushes: list[int] = []  # tokens generated when the events were flushed, at each flush
    seen: list[tuple[int, int]] = []  # tokens generated at each save, and at the flush before it
    persist = engine.mover.persist

    def watched(seq):
        seen.append((seq.generated, flushes[-1] if flushes else -1))
        persist(seq)

    engine.on_step = lambda: flushes.append(sum(s.generated for s in engine.scheduler.running))
    engine.mover.persist = watched
    try:
        _, fin = run(generate(client, prompt, 8))
        assert fin.generated_tokens == 8
        assert seen == [(1, 1)], seen  # saved once, after the first token was flushed, not before
        assert engine.cache.disk
    finally:
        close(client)


def test_a_reply_that_ends_on_its_first_token_is_complete_only_once_its_prompt_is_saved(tmp_path):
    prompt = chatml(
        "Which rule mentions item 5?",
        "Reference manual. " + " ".join(f"Rule {i}: keep item {i} wet." for i in range(60)),
    )
    client = make_engine(tmp_path, parallel=1)
    try:

        async def first_token_only():
            request = EngineRequest(
                prompt=client.vocab.tokenize(prompt), max_tokens=1, sampling=SamplingParams(temperature=0)
            )
            async for event in await client.submit(request):
                if isinstance(event, Finished):
                    return event, list(client.engine.cache.disk)  # as the client sees it on Finished
            raise AssertionError("no Finished")

        fin, saved = run(first_token_only())
        assert fin.generated_tokens == 1 and len(saved) == 1
        assert saved[0].tokens == client.vocab.tokenize(prompt)
    finally:
        close(client)


def _rules(n: int) -> str:
    return "Reference manual. " + " ".join(
        f"Rule {i}: keep crate {i} at shelf {i * 7 % 23}." for i in range(n)
    )


def test_a_saved_prompt_longer_than_the_free_cells_restores_once_idle_slots_give_way(tmp_path):
    """llama.cpp loads a saved state into free KV cells only. A 20k-token prompt saved before a restart,
    asked again beside a cached 8k one in a 24k context, did not fit: the load failed, the entry was
    dropped and the prompt computed cold. Idle slots now give way first (spilled as any eviction), and the
    entry restores in full; the same here at a tenth of the size."""
    long_prompt, short_prompt = (
        chatml(f"Which rule names crate 9? {_rules(100)}"),
        chatml(f"Which rule names crate 9? {_rules(50)}"),
    )
    first = make_engine(tmp_path, parallel=1, n_ctx=2048)
    try:
        cold_text, cold = run(generate(first, long_prompt, 8))
        assert 1400 < cold.prompt_tokens < 2000, cold
    finally:
        close(first)
    second = make_engine(tmp_path, parallel=1, n_ctx=2048)
    try:
        _, short = run(generate(second, short_prompt, 8))  # half of the saved prompt, from the disk entry
        assert 2 * short.prompt_tokens > cold.prompt_tokens and short.cached_tokens > 0
        assert 2048 - second.engine.pool.resident_cells() < cold.prompt_tokens  # no room beside it
        again_text, again = run(generate(second, long_prompt, 8))
        assert again.cached_tokens >= cold.prompt_tokens - 1 - 32, again
        assert again_text == cold_text
        assert second.engine.stats.hits_disk == 2 and second.engine.cache.disk
    finally:
        close(second)


def test_cancelled_streams_free_their_sequences_and_kv(engine):
    async def cancel_one(i: int):
        tokens = engine.vocab.tokenize(chatml(f"Write a very long essay about topic number {i}."))
        stream = await engine.submit(EngineRequest(prompt=tokens, max_tokens=500, sampling=SamplingParams()))
        async for event in stream:
            if isinstance(event, TextChunk) and event.text:
                break  # the consumer goes away mid-generation
        await stream.aclose()

    async def cancel_all():
        for batch in range(10):
            await asyncio.gather(*[cancel_one(batch * 5 + j) for j in range(5)])

    run(cancel_all())
    for _ in range(100):
        snap = run(engine.snapshot())
        if snap.active == 0 and snap.waiting == 0:
            break
        asyncio.run(asyncio.sleep(0.05))
    snap = run(engine.snapshot())
    assert snap.active == 0 and snap.waiting == 0
    for slot in snap.slots:
        assert not slot.busy
        # a cancelled sequence's slot is emptied: no KV cells remain under its sequence id
        if slot.tokens == 0:
            assert slot.kv_pos_max == -1
    # the engine still serves normally
    text, fin = run(generate(engine, PROMPTS[1], 8))
    assert text and fin.reason in ("eog", "length")


def test_prompts_that_do_not_fit_together_wait_instead_of_failing():
    small = make_engine(parallel=3, n_ctx=2048, ram_bytes=0)
    try:
        prompts = [
            chatml(f"Summarize: {' '.join(f'fact {i}-{j} is true;' for j in range(120))}") for i in range(3)
        ]

        async def together():
            return await asyncio.gather(*[generate(small, p, 16) for p in prompts])

        results = run(together())
        assert all(fin.reason in ("eog", "length") for _, fin in results), [fin for _, fin in results]
        assert all(fin.prompt_tokens > 600 for _, fin in results)
    finally:
        close(small)


def test_batch_work_suspended_for_an_interactive_request_resumes_where_it_was():
    solo = make_engine(parallel=1)
    try:
        long_prompt = solo.vocab.tokenize(chatml("Count from 1 to 40, one number per line."))
        greedy = SamplingParams(temperature=0)

        async def scenario():
            batch = await solo.submit(
                EngineRequest(prompt=long_prompt, max_tokens=30, sampling=greedy, priority=1)
            )
            text: list[str] = []
            async for event in batch:
                if isinstance(event, TextChunk) and event.text:
                    text.append(event.text)
                    break  # it is decoding: now an interactive request arrives
            interactive = asyncio.ensure_future(generate(solo, PROMPTS[1], 4))
            async for event in batch:
                if isinstance(event, TextChunk):
                    text.append(event.text)
            return "".join(text), await interactive

        alone, _ = run(generate(solo, chatml("Count from 1 to 40, one number per line."), 30))
        suspended_text, (_, quick) = run(scenario())
        assert quick.reason in ("eog", "length")
        assert solo.stats.preemptions >= 1
        assert suspended_text == alone  # nothing lost, nothing repeated
    finally:
        close(solo)


def test_two_identical_long_prompts_at_once_compute_the_prefill_once(engine):
    system = "Reference manual. " + " ".join(
        f"Clause {i}: store crate {i} at bay {i * 5 % 17}." for i in range(120)
    )
    prompt = chatml("Which bay holds crate 11?", system)
    n = len(engine.vocab.tokenize(prompt))
    assert n > 1100  # longer than the shortest prefix coalesced (slots.LONG_PREFIX)
    before = engine.engine.stats.prompt_tokens_processed

    async def both():
        return await asyncio.gather(generate(engine, prompt, 4), generate(engine, prompt, 4))

    (_, a), (_, b) = run(both())
    processed = engine.engine.stats.prompt_tokens_processed - before
    assert processed <= n + 1, (processed, n)  # one prompt, and the token the second evaluates itself
    assert sorted([a.cached_tokens, b.cached_tokens])[1] == n - 1
