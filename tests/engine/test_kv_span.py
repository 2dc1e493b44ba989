"""The KV span of a decode step: a short sequence attends over its own cells, not over cached prefixes of
other conversations (llama.cpp's unified KV cache walks every used cell, so the engine moves unrelated
idle prefixes to host RAM before a new prompt takes cells), and the moved prefixes come back unchanged."""

from __future__ import annotations

from dataclasses import replace

from lmdock.engine.slots import MOVE_REUSED_AFTER
from tests.engine.conftest import chatml, close, generate, make_engine, run


def _facts(tag: str, n: int) -> str:
    return " ".join(f"{tag} fact {i} is that ledger {i} sits at berth {i * 7 % 31}." for i in range(n))


def test_a_short_sequence_does_not_attend_over_unrelated_cached_prefixes():
    client = make_engine(parallel=2)
    engine = client.engine
    try:
        long_prompt = chatml(f"Summarize: {_facts('harbor', 60)}")
        cold_text, cold = run(generate(client, long_prompt, 8))
        assert cold.prompt_tokens > 600
        assert engine.pool.resident_cells() >= cold.prompt_tokens  # cached, idle
        # the decode steps' own llama_decode time leaves out the steps that only read the prompt
        assert 0 < engine.stats.decode_step_seconds < engine.stats.decode_seconds

        before = replace(engine.stats)
        _, short = run(generate(client, chatml("List three prime numbers."), 16))
        steps = engine.stats.decode_steps - before.decode_steps
        mean_span = (engine.stats.kv_cells - before.kv_cells) / steps
        # its own prompt and output only; before the fix every step spanned the cached prefix too
        assert mean_span <= short.prompt_tokens + short.generated_tokens, (mean_span, short)
        assert engine.stats.demotions > before.demotions
        assert engine.cache.ram, "the unrelated prefix waits in host RAM"

        # the prefix comes back from RAM on its next hit and still holds its context. The tail it
        # recomputes (up to a chunk) runs in another batch shape than the cold prefill did, which can
        # flip a later greedy choice of a 0.5B model (seen in CI at 2 threads): compare the opening.
        warm_text, warm = run(generate(client, long_prompt, 8))
        assert warm.cached_tokens >= cold.prompt_tokens - 1 - 64
        assert warm_text.split()[:2] == cold_text.split()[:2], (warm_text, cold_text)
    finally:
        close(client)


def test_a_conversations_reused_prefix_moves_out_only_beside_work_that_pays_for_the_move():
    client = make_engine(parallel=2)
    engine = client.engine

    def conversation_resident() -> bool:  # a reused prefix, in a slot
        return any(slot.reuses and slot.tokens for slot in engine.pool.slots)

    try:
        turn1 = chatml(f"Summarize: {_facts('harbor', 130)}")
        reply, _ = run(generate(client, turn1, 4))
        turn2 = f"{turn1}{reply}<|im_end|>\n<|im_start|>user\nIn one line?<|im_end|>\n<|im_start|>assistant\n"
        _, second = run(generate(client, turn2, 4))
        assert second.cached_tokens > engine.pool.long_prefix and conversation_resident()

        _, title = run(generate(client, chatml("Name a colour."), 4))  # a move would cost it more
        assert conversation_resident()

        before = replace(engine.stats)
        _, side = run(generate(client, chatml("List three prime numbers."), MOVE_REUSED_AFTER))
        steps = engine.stats.decode_steps - before.decode_steps
        mean_span = (engine.stats.kv_cells - before.kv_cells) / steps
        assert engine.stats.demotions > before.demotions and not conversation_resident()
        own = side.prompt_tokens + side.generated_tokens
        assert mean_span <= own + title.prompt_tokens + title.generated_tokens, (mean_span, side, title)
        _, third = run(generate(client, turn2, 4))
        assert third.cached_tokens >= second.cached_tokens - 64, "restored from host RAM"
    finally:
        close(client)


def _agent_prompt(project: str) -> str:
    system = (
        f"You are a coding agent. Your memory is at /home/dev/.agent/projects/{project}/memory/ and the "
        f"working directory is /home/dev/{project}.\nTools:\n{_facts('tool', 70)}"
    )
    return chatml("What is the capital of France? Answer with one word.", system)


def test_a_prefix_moved_out_to_ram_still_gives_its_runs_to_chunk_reuse():
    client = make_engine(parallel=2)
    engine = client.engine
    try:
        beta_text, beta_cold = run(generate(client, _agent_prompt("beta-service-api"), 8))
        _, alpha = run(generate(client, _agent_prompt("alpha-notes"), 8))  # takes the tool block over
        assert alpha.cached_tokens > 0.8 * alpha.prompt_tokens
        demoted = engine.stats.demotions
        run(generate(client, chatml("List three prime numbers."), 16))  # moves the agent prompts to RAM
        assert engine.stats.demotions > demoted
        moved = engine.stats.moved_tokens
        again_text, again = run(generate(client, _agent_prompt("beta-service-api"), 8))
        assert engine.stats.moved_tokens > moved, "the tool block should move in from the RAM entry"
        assert again.cached_tokens > 0.8 * again.prompt_tokens, again
        assert again_text == beta_text
    finally:
        close(client)


def test_a_prompt_saved_before_a_restart_gives_its_runs_to_chunk_reuse(tmp_path):
    """An agent's first request in a new folder after a restart still takes the tool block over: chunk
    reuse plans over resident slots, so the disk entry is loaded into an idle slot first."""
    client = make_engine(tmp_path, parallel=2)
    try:
        _, cold = run(generate(client, _agent_prompt("beta-service-api"), 8))
        assert cold.cached_tokens == 0
    finally:
        close(client)
    client = make_engine(tmp_path, parallel=2)
    try:
        assert client.engine.cache.disk, "the cold prompt was saved"
        _, alpha = run(generate(client, _agent_prompt("alpha-notes"), 8))
        assert client.engine.stats.moved_tokens > 0, "the tool block should move in from the disk entry"
        assert alpha.cached_tokens > 0.8 * alpha.prompt_tokens, alpha
    finally:
        close(client)
