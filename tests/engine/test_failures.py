"""Damaged prompt caches and failing requests on the real default model: the answer stays the cold
greedy answer, only the failing request ends, and the engine keeps serving."""

from __future__ import annotations

import asyncio
import shutil

import pytest

from lmdock.core.errors import EngineFailed
from lmdock.engine.engine import INTERNAL_ERROR
from tests.engine.conftest import chatml, close, complete, make_engine, run

SYSTEM = "Reference manual. " + " ".join(f"Rule {i}: keep item {i} dry." for i in range(60))
QUESTION = "Which rule mentions item 7?"


def prompts(engine) -> tuple[list[int], list[int]]:
    """The prompt under test, and another sharing a short prefix with it (too short to restore for)."""
    prompt = engine.vocab.tokenize(chatml(QUESTION, SYSTEM))
    other = prompt[:20] + engine.vocab.tokenize(" unrelated words " * 30)
    assert engine.engine.cache.min_gain > 20
    return prompt, other


def truncate_saved(engine, tokens: list[int]) -> None:
    (entry,) = [e for e in engine.engine.cache.disk if e.tokens == tokens]
    state = engine.engine.cache.files.state_path(entry.file)
    with state.open("r+b") as f:
        f.truncate(state.stat().st_size // 2)


@pytest.fixture(scope="module")
def cold(tmp_path_factory):
    """The cold greedy answer, and a cache folder holding the prompt's saved state."""
    folder = tmp_path_factory.mktemp("kv")
    engine = make_engine(folder, parallel=1)
    try:
        prompt, _ = prompts(engine)
        text, fin = run(complete(engine, prompt))
        assert fin.cached_tokens <= 3
    finally:
        close(engine)
    return text, folder


def copy_folder(src, dst):
    shutil.copytree(src, dst, dirs_exist_ok=True)
    return dst


def test_a_truncated_cache_file_is_deleted_and_the_prompt_served_cold(cold, tmp_path):
    cold_text, folder = cold
    engine = make_engine(copy_folder(folder, tmp_path), parallel=1)
    try:
        prompt, _ = prompts(engine)
        truncate_saved(engine, prompt)  # after start-up: only the check before loading can catch it
        text, fin = run(complete(engine, prompt))
        assert text == cold_text and fin.cached_tokens == 0
        assert all(
            engine.engine.cache.files.verify(e.file) for e in engine.engine.cache.disk
        )  # saved again, whole
        again, _ = run(complete(engine, prompt))  # alive, and now a resident hit
        assert again == cold_text
    finally:
        close(engine)


def test_a_truncated_cache_file_keeps_a_shorter_resident_prefix(cold, tmp_path):
    cold_text, folder = cold
    engine = make_engine(copy_folder(folder, tmp_path), parallel=1)
    try:
        prompt, other = prompts(engine)
        run(complete(engine, other, 4))  # now resident: 20 tokens shared with `prompt`
        truncate_saved(engine, prompt)
        text, fin = run(complete(engine, prompt))
        assert text == cold_text and fin.cached_tokens == 20
    finally:
        close(engine)


def test_a_state_llama_cpp_cannot_load_is_computed_cold_not_continued(cold):
    """The slot is emptied to load a state; when loading fails the prompt must restart at 0, not at the
    resident prefix the slot no longer holds (which continued a prompt the model never saw)."""
    cold_text, _ = cold
    engine = make_engine(None, parallel=1)
    try:
        prompt, other = prompts(engine)
        run(complete(engine, prompt))
        for slot in engine.engine.pool.evictable():
            engine.engine.evict(slot)
        (entry,) = engine.engine.cache.ram
        entry.data = entry.data[: len(entry.data) // 2]  # cut short: llama.cpp refuses it
        run(complete(engine, other, 4))
        text, fin = run(complete(engine, prompt))
        assert text == cold_text and fin.cached_tokens == 0
        # kept after one refusal (cells too scattered would look the same) until the prompt's slot, computed
        # again, spills a good copy over it
        assert entry in engine.engine.cache.ram and entry.load_failures == 1
        for slot in engine.engine.pool.evictable():
            engine.engine.evict(slot)
        assert entry not in engine.engine.cache.ram
        text, fin = run(complete(engine, prompt))
        assert text == cold_text and fin.cached_tokens >= len(prompt) - 1 - 32  # from the good copy
    finally:
        close(engine)


# --- failure isolation ------------------------------------------------------------------------------


def fail_for(engine, method: str, marker: int):
    """Make one runner method raise for requests with max_tokens == marker."""
    real = getattr(engine.engine.runner, method)

    def failing(seq, *args):
        if seq.request.max_tokens == marker:
            raise RuntimeError("injected failure")
        return real(seq, *args)

    setattr(engine.engine.runner, method, failing)


@pytest.mark.parametrize("method", ["sample", "start_sampler"])
def test_a_failing_request_ends_alone(method):
    engine = make_engine(None, parallel=2)
    try:
        prompt = engine.vocab.tokenize(chatml("List three prime numbers."))
        alone, _ = run(complete(engine, prompt, 20))
        fail_for(engine, method, 13)

        async def together():
            return await asyncio.gather(complete(engine, prompt, 13), complete(engine, prompt, 20))

        (_, failed), (text, ok) = run(together())
        assert failed.reason == "error" and failed.error == INTERNAL_ERROR
        assert ok.reason in ("eog", "length") and text == alone
        assert engine.failure is None and run(engine.snapshot()).active == 0
    finally:
        close(engine)


def test_a_failing_loop_ends_its_requests_and_then_the_engine_says_so():
    engine = make_engine(None, parallel=2)
    try:
        prompt = engine.vocab.tokenize(chatml("Say hi."))
        real = engine.engine.scheduler.schedule
        failures = [1]

        def schedule():
            if failures[0]:
                failures[0] -= 1
                raise RuntimeError("injected loop failure")
            return real()

        engine.engine.scheduler.schedule = schedule
        _, fin = run(complete(engine, prompt, 4))
        assert fin.reason == "error" and fin.error == INTERNAL_ERROR
        text, fin = run(complete(engine, prompt, 4))  # one failure does not stop the engine
        assert fin.reason in ("eog", "length") and text
        failures[0] = 100
        for _ in range(3):
            _, fin = run(complete(engine, prompt, 4))
            assert fin.reason == "error"
        engine.engine._thread.join(timeout=10)
        assert engine.failure and not engine.engine._thread.is_alive()
        with pytest.raises(EngineFailed):
            run(complete(engine, prompt, 4))
    finally:
        close(engine)
