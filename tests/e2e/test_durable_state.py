"""Durable state on a real server: owners, byte quotas, and a disk that really fills and empties again.

The full disk is a small tmpfs holding LMDOCK_HOME (database and prompt cache); the model stays where it
is. Clients are the official SDKs, which see each refusal in their protocol's error envelope.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import time
from pathlib import Path

import anthropic
import httpx
import openai
import pytest

from tests.conftest import Server, start_server
from tests.small_disk import fill, small_disk

MODEL = "qwen2.5-coder-0.5b-instruct"
ALICE, BOB, ADMIN = "alice-key", "bob-key", "root-key"


def _anthropic(server: Server, key: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        base_url=server.base_url, api_key=key, max_retries=0, timeout=300, _strict_response_validation=True
    )


def _openai(server: Server, key: str) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=server.base_url + "/v1",
        api_key=key,
        max_retries=0,
        timeout=300,
        _strict_response_validation=True,
    )


def _ask(text: str, max_tokens: int = 8) -> dict:
    return {"model": MODEL, "max_tokens": max_tokens, "messages": [{"role": "user", "content": text}]}


def _wait_for(predicate, what: str, deadline_s: float = 600, every: float = 0.5):
    deadline = time.monotonic() + deadline_s
    while not (value := predicate()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(every)
    return value


@pytest.fixture(scope="module")
def keyed(tmp_path_factory) -> Server:
    """Two API keys and an admin key; small quotas (1 MiB each)."""
    tmp = tmp_path_factory.mktemp("keyed")
    server = start_server(
        tmp,
        *("--api-key", f"{ALICE},{BOB}", "--admin-key", ADMIN),
        *("--batches-max-mib", "1", "--responses-max-mib", "1"),
        api_key=ALICE,
    )
    yield server
    server.stop()


def test_another_key_cannot_see_or_touch_a_batch(keyed: Server):
    alice, bob, admin = (_anthropic(keyed, k) for k in (ALICE, BOB, ADMIN))
    batch = alice.messages.batches.create(requests=[{"custom_id": "a", "params": _ask("Say hi.")}])
    for attempt in (
        lambda: bob.messages.batches.retrieve(batch.id),
        lambda: bob.messages.batches.cancel(batch.id),
        lambda: bob.messages.batches.delete(batch.id),
        lambda: list(bob.messages.batches.results(batch.id)),
    ):
        with pytest.raises(anthropic.NotFoundError):
            attempt()
    assert batch.id not in [b.id for b in bob.messages.batches.list(limit=100)]
    assert batch.id in [b.id for b in alice.messages.batches.list(limit=100)]
    assert admin.messages.batches.retrieve(batch.id).id == batch.id  # the admin key sees all
    assert batch.id in [b.id for b in admin.messages.batches.list(limit=100)]
    _wait_for(lambda: alice.messages.batches.retrieve(batch.id).processing_status == "ended", "the batch")
    assert [r.custom_id for r in alice.messages.batches.results(batch.id)] == ["a"]


def test_another_key_cannot_read_continue_or_delete_a_stored_response(keyed: Server):
    alice, bob, admin = (_openai(keyed, k) for k in (ALICE, BOB, ADMIN))
    first = alice.responses.create(model=MODEL, input="My name is Ada.", max_output_tokens=8, store=True)
    for attempt in (
        lambda: bob.responses.retrieve(first.id),
        lambda: bob.responses.input_items.list(first.id),
        lambda: bob.responses.delete(first.id),
        lambda: bob.responses.create(model=MODEL, input="And mine?", previous_response_id=first.id),
    ):
        with pytest.raises(openai.NotFoundError):
            attempt()
    assert admin.responses.retrieve(first.id).id == first.id
    again = alice.responses.create(
        model=MODEL, input="What is my name?", previous_response_id=first.id, max_output_tokens=8
    )
    assert again.previous_response_id == first.id


def test_quotas_refuse_with_the_reason(keyed: Server):
    big = "lorem ipsum " * 120_000  # about 1.4 MB: over the 1 MiB quotas by itself
    with pytest.raises(anthropic.APIStatusError) as batch:
        _anthropic(keyed, ALICE).messages.batches.create(requests=[{"custom_id": "big", "params": _ask(big)}])
    assert batch.value.status_code == 413 and "--batches-max-mib" in batch.value.message
    with pytest.raises(openai.APIStatusError) as stored:
        _openai(keyed, ALICE).responses.create(model=MODEL, input=big, max_output_tokens=1, store=True)
    assert stored.value.status_code == 413 and "--responses-max-mib" in stored.value.message


def test_a_full_disk_degrades_and_everything_recovers_when_space_returns(tmp_path: Path):
    with small_disk(tmp_path / "disk", 64) as disk:
        home = disk / "home"
        server = start_server(
            tmp_path, "--cache-dir", str(disk / "cache"), "--parallel", "2", env={"LMDOCK_HOME": str(home)}
        )
        try:
            _full_disk_scenario(server, disk)
        finally:
            server.stop()


def _full_disk_scenario(server: Server, disk: Path) -> None:
    claude, oai = _anthropic(server, "k"), _openai(server, "k")
    pid = server.proc.pid
    requests = [{"custom_id": f"q{i}", "params": _ask(f"Count to {i + 3}.", 48)} for i in range(12)]
    batch = claude.messages.batches.create(requests=requests)
    filler = fill(disk)

    # the database still has room in its WAL and free pages; new batches take it (each runs later and
    # ends at once: its prompt is too long), then durable work is refused with a clear error in each
    # protocol's envelope
    refused = None
    for _ in range(300):
        try:
            claude.messages.batches.create(requests=[{"custom_id": "big", "params": _ask("x " * 50_000)}])
        except anthropic.APIStatusError as exc:
            refused = exc
            break
    assert refused is not None and refused.status_code == 507 and "is full" in refused.message
    assert refused.body["error"]["type"] == "api_error"
    with pytest.raises(openai.APIStatusError) as unsaved:
        oai.responses.create(model=MODEL, input="Say hi.", max_output_tokens=4, store=True)
    assert unsaved.value.status_code == 507 and "is full" in unsaved.value.message
    with oai.responses.stream(model=MODEL, input="Say hi.", max_output_tokens=4, store=True) as stream:
        events = [e.type for e in stream]
    assert events[-1] == "response.failed" and "response.completed" not in events
    # ...while what needs no disk goes on, and the prompt cache stops saving and says so once
    long_prompt = "Here is a long document about sailing. " * 80
    for i in range(3):
        reply = claude.messages.create(**_ask(f"{i}: {long_prompt} Summarise it.", 4))
        assert reply.stop_reason in ("end_turn", "max_tokens")
    assert oai.responses.create(model=MODEL, input="Say hi.", max_output_tokens=4, store=False).output
    _wait_for(
        lambda: "batch runner: saving results" in server.log(), "the batch runner to notice the full disk"
    )
    assert not list((disk / "cache").rglob("*.tmp"))

    filler.unlink()  # space returns: nothing to restart, nothing to retry by hand
    _wait_for(lambda: claude.messages.batches.retrieve(batch.id).processing_status == "ended", "the batch")
    first = [r.model_dump() for r in claude.messages.batches.results(batch.id)]
    second = [r.model_dump() for r in claude.messages.batches.results(batch.id)]
    assert first == second
    assert sorted(r["custom_id"] for r in first) == sorted(r["custom_id"] for r in requests)  # each once
    assert all(r["result"]["type"] == "succeeded" for r in first)
    saved = oai.responses.create(model=MODEL, input="Say hi.", max_output_tokens=4, store=True)
    assert oai.responses.retrieve(saved.id).id == saved.id

    def cache_saves_again() -> bool:
        claude.messages.create(**_ask(f"{time.monotonic()}: {long_prompt} Summarise it.", 2))
        return "prompt cache: saving to disk: working again" in server.log()

    _wait_for(cache_saves_again, "the prompt cache to save again", every=5)
    log = server.log()
    assert log.count("batch runner: saving results: the disk") == 1, log  # said once, not every second
    assert log.count("prompt cache: saving to disk: the disk is nearly full") == 1, log
    assert "Traceback" not in log
    assert server.proc.poll() is None and server.proc.pid == pid
    health = httpx.get(f"{server.base_url}/health", timeout=10).json()
    assert all(w["crashes"] == 0 for w in health["workers"].values()), json.dumps(health)


def test_a_worker_crash_interrupts_batch_requests_without_erroring_them(tmp_path: Path):
    """The requests in flight when the model's worker dies run again; none ends `errored`."""
    server = start_server(tmp_path, "--parallel", "3")
    try:
        claude = _anthropic(server, "k")
        requests = [
            {"custom_id": f"c{i}", "params": _ask(f"Write {i + 2} lines about rain.", 96)} for i in range(6)
        ]
        batch = claude.messages.batches.create(requests=requests)

        def busy_worker() -> int | None:
            (worker,) = httpx.get(f"{server.base_url}/health", timeout=10).json()["workers"].values()
            return worker["pid"] if worker["in_flight"] else None

        os.kill(_wait_for(busy_worker, "a batch request in flight", every=0.05), signal.SIGKILL)
        _wait_for(
            lambda: claude.messages.batches.retrieve(batch.id).processing_status == "ended", "the batch"
        )
        results = {r.custom_id: r.result.type for r in claude.messages.batches.results(batch.id)}
        assert results == {r["custom_id"]: "succeeded" for r in requests}
        with sqlite3.connect(tmp_path / "home" / "lmdock.db") as db:
            attempts = [n for (n,) in db.execute("SELECT attempts FROM message_batch_requests")]
        assert max(attempts) == 2  # the crash did hit a request, which ran again
        assert "restarting its worker" in server.log()
    finally:
        server.stop()
