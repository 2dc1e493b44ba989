"""Message Batches end to end: the official SDK (strict validation) against a real server and model."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import time
from collections import Counter
from pathlib import Path

import anthropic
import httpx
import pytest

from tests.conftest import Server, start_server

MODEL = "default"
SYSTEM = "You are a terse assistant. Answer in at most five words."
WEATHER = {
    "name": "get_weather",
    "description": "Current weather for a city.",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


def _ask(text: str, max_tokens: int = 8, **extra) -> dict:
    return {
        "model": MODEL,
        "max_tokens": max_tokens,
        "system": SYSTEM,
        "messages": [{"role": "user", "content": text}],
        **extra,
    }


def _wait_ended(client: anthropic.Anthropic, batch_id: str, deadline_s: float = 900):
    deadline = time.monotonic() + deadline_s
    while True:
        batch = client.messages.batches.retrieve(batch_id)
        if batch.processing_status == "ended":
            return batch
        assert time.monotonic() < deadline, f"batch {batch_id} did not end: {batch}"
        time.sleep(0.5)


def _results(client: anthropic.Anthropic, batch_id: str) -> dict[str, object]:
    lines = list(client.messages.batches.results(batch_id))
    ids = Counter(r.custom_id for r in lines)
    assert all(n == 1 for n in ids.values()), f"duplicated results: {ids}"
    return {r.custom_id: r.result for r in lines}


def test_a_batch_of_twenty_runs_to_the_end(client: anthropic.Anthropic):
    valid = [{"custom_id": f"q-{i}", "params": _ask(f"What is {i} plus {i}?")} for i in range(14)]
    tool = {
        "custom_id": "tool-any",
        "params": _ask("Weather in Paris?", 64, tools=[WEATHER], tool_choice={"type": "any"}),
    }
    too_long = {"custom_id": "too-long", "params": _ask("lorem ipsum " * 6000)}  # fails when it runs
    invalid = [
        {
            "custom_id": "no-max-tokens",
            "params": {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]},
        },
        {"custom_id": "any-without-tools", "params": _ask("hi", tool_choice={"type": "any"})},
        {"custom_id": "unknown-model", "params": {**_ask("hi"), "model": "no-such-model"}},
        {"custom_id": "streaming", "params": _ask("hi", stream=True)},
    ]
    requests = valid + [tool, too_long] + invalid
    assert len(requests) == 20
    created = client.messages.batches.create(requests=requests)
    assert created.id.startswith("msgbatch_")
    assert created.type == "message_batch"
    assert created.processing_status == "in_progress"
    assert created.request_counts.processing == 20 and created.results_url is None
    assert created.ended_at is None and created.cancel_initiated_at is None
    assert (created.expires_at - created.created_at).total_seconds() == pytest.approx(86400, abs=1)

    batch = _wait_ended(client, created.id)
    counts = batch.request_counts
    assert (counts.processing, counts.succeeded, counts.errored, counts.canceled, counts.expired) == (
        0,
        15,
        5,
        0,
        0,
    )
    assert batch.ended_at is not None and batch.ended_at >= batch.created_at
    assert batch.results_url.endswith(f"/v1/messages/batches/{created.id}/results")

    results = _results(client, created.id)
    assert set(results) == {r["custom_id"] for r in requests}
    for r in valid:
        result = results[r["custom_id"]]
        assert result.type == "succeeded", result
        assert result.message.role == "assistant" and result.message.content
        assert result.message.stop_reason in ("end_turn", "max_tokens")
        assert result.message.usage.output_tokens <= 8
    tool_result = results["tool-any"]
    assert tool_result.type == "succeeded"
    assert tool_result.message.stop_reason == "tool_use"
    calls = [b for b in tool_result.message.content if b.type == "tool_use"]
    assert calls and calls[0].name == "get_weather" and isinstance(calls[0].input.get("city"), str)
    assert results["too-long"].type == "errored"
    assert results["too-long"].error.error.message.startswith("prompt is too long:")
    assert results["no-max-tokens"].error.error.message == "max_tokens: Field required"
    assert results["any-without-tools"].error.error.type == "invalid_request_error"
    assert results["unknown-model"].error.error.type == "not_found_error"
    assert "stream" in results["streaming"].error.error.message
    assert all(results[r["custom_id"]].error.type == "error" for r in invalid)


def test_list_pages_through_every_batch(client: anthropic.Anthropic):
    ids = [
        client.messages.batches.create(requests=[{"custom_id": "a", "params": {"model": MODEL}}]).id
        for _ in range(3)
    ]  # invalid params: these end at once
    listed = [b.id for b in client.messages.batches.list(limit=1)]  # the SDK follows after_id pages
    assert listed[:3] == list(reversed(ids))
    assert len(listed) == len(set(listed))
    page = client.messages.batches.list(limit=2, before_id=ids[0])
    assert [b.id for b in page.data] == [ids[2], ids[1]]
    assert page.has_more is False


def test_cancel_and_delete(client: anthropic.Anthropic):
    requests = [
        {"custom_id": f"long-{i}", "params": _ask(f"Count from 1 to {100 + i}.", 200)} for i in range(8)
    ]
    batch = client.messages.batches.create(requests=requests)
    with pytest.raises(anthropic.BadRequestError):
        client.messages.batches.delete(batch.id)  # still running
    canceling = client.messages.batches.cancel(batch.id)
    assert canceling.processing_status in ("canceling", "ended")
    assert canceling.cancel_initiated_at is not None
    ended = _wait_ended(client, batch.id)
    assert ended.request_counts.canceled >= 1
    assert ended.request_counts.canceled + ended.request_counts.succeeded == 8
    results = _results(client, batch.id)
    assert set(results) == {r["custom_id"] for r in requests}
    assert {r.type for r in results.values()} <= {"succeeded", "canceled"}
    deleted = client.messages.batches.delete(batch.id)
    assert (deleted.id, deleted.type) == (batch.id, "message_batch_deleted")
    with pytest.raises(anthropic.NotFoundError):
        client.messages.batches.retrieve(batch.id)


def test_malformed_batches_are_rejected(client: anthropic.Anthropic):
    with pytest.raises(anthropic.BadRequestError) as err:
        client.messages.batches.create(requests=[{"custom_id": "bad id!", "params": _ask("x")}])
    assert "custom_id" in err.value.message
    with pytest.raises(anthropic.BadRequestError):
        client.messages.batches.create(
            requests=[{"custom_id": "same", "params": _ask("x")}, {"custom_id": "same", "params": _ask("y")}]
        )
    with pytest.raises(anthropic.NotFoundError):
        client.messages.batches.retrieve("msgbatch_nope")


def _committed(db: Path) -> dict[str, str]:
    """Results the server has committed, read straight from its database (as a crash leaves it)."""
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT custom_id, result FROM message_batch_requests WHERE state != 'pending'"
        ).fetchall()
    return dict(rows)


def test_a_killed_server_resumes_its_batch_without_losing_or_repeating_results(tmp_path):
    requests = [{"custom_id": f"r-{i}", "params": _ask(f"Name a colour, {i}.", 24)} for i in range(12)]
    db = tmp_path / "home" / "lmdock.db"
    first = start_server(tmp_path, "--parallel", "2")
    try:
        batch = first.anthropic().messages.batches.create(requests=requests)
        deadline = time.monotonic() + 600
        while len(_committed(db)) < 3:
            assert time.monotonic() < deadline, "no results were committed"
            time.sleep(0.1)
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait()
    finally:
        first.stop()
    before = _committed(db)
    assert 3 <= len(before) < len(requests), "the kill did not land half-way through the batch"

    second = start_server(tmp_path, "--parallel", "2")
    try:
        client = second.anthropic()
        ended = _wait_ended(client, batch.id)
        assert ended.request_counts.succeeded == len(requests)
        results = _results(client, batch.id)
        assert set(results) == {r["custom_id"] for r in requests}
        raw = httpx.get(ended.results_url, timeout=60).text.splitlines()
        lines = {line["custom_id"]: line["result"] for line in map(json.loads, raw)}
        for custom_id, committed in before.items():
            assert lines[custom_id] == json.loads(committed)  # the same message, not a second run
        with sqlite3.connect(db) as conn:
            attempts = dict(conn.execute("SELECT custom_id, attempts FROM message_batch_requests").fetchall())
        assert all(attempts[c] == 1 for c in before)  # finished before the kill: never started again
    finally:
        second.stop()


def test_cli_follows_a_batch_and_prints_its_results(server: Server, client: anthropic.Anthropic):
    def cli(*args: str) -> subprocess.CompletedProcess:
        return server.cli("batch", *args)

    requests = [{"custom_id": f"c-{i}", "params": _ask(f"Say {i}.")} for i in range(3)]
    batch = client.messages.batches.create(requests=requests)
    shown = cli("show", batch.id)  # follows the batch with a progress bar until it ends
    assert shown.returncode == 0, shown.stderr
    assert f"{batch.id}  ended" in shown.stdout and "3 succeeded" in shown.stdout
    listed = json.loads(cli("ls", "--json").stdout)
    assert batch.id in [b["id"] for b in listed]
    table = cli("ls").stdout
    assert batch.id in table and "SUCCEEDED" in table
    lines = [json.loads(line) for line in cli("results", batch.id).stdout.splitlines()]
    assert sorted(line["custom_id"] for line in lines) == ["c-0", "c-1", "c-2"]
    assert all(line["result"]["type"] == "succeeded" for line in lines)
    assert "ended" in cli("cancel", batch.id).stdout
    assert f"Deleted {batch.id}" in cli("delete", batch.id).stdout
    missing = cli("show", batch.id)
    assert missing.returncode == 1 and "not found" in missing.stderr


def _metric(server: Server, name: str) -> float:
    text = httpx.get(f"{server.base_url}/metrics", timeout=30).text
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + "{"))


def test_interactive_requests_go_ahead_of_batch_work(tmp_path):
    """One slot, held by a long batch request: an interactive request preempts it and finishes first,
    then the batch request resumes and completes (nothing it generated is lost or repeated)."""
    server = start_server(tmp_path, "--parallel", "1", "--batch-slots", "1")
    db = tmp_path / "home" / "lmdock.db"
    try:
        client = server.anthropic()
        params = {
            "model": MODEL,
            "max_tokens": 120,
            "temperature": 0.0,
            "messages": [{"role": "user", "content": "Count from 1 to 200, one number per line."}],
        }
        requests = [{"custom_id": f"long-{i}", "params": params} for i in range(2)]
        batch = client.messages.batches.create(requests=requests)
        deadline = time.monotonic() + 600
        while _metric(server, "lmdock_active_sequences") < 1:  # the batch holds the only slot
            assert time.monotonic() < deadline, "the batch never started"
            time.sleep(0.05)
        preemptions = _metric(server, "lmdock_preemptions_total")
        reply = client.messages.create(
            model=MODEL, max_tokens=4, messages=[{"role": "user", "content": "Say hi."}]
        )
        assert reply.content and reply.usage.output_tokens <= 4
        # ordering, not timing: the interactive request finished while the batch request it found
        # running (120 tokens to generate) had not, so it was admitted ahead of it
        assert _committed(db) == {}
        assert _metric(server, "lmdock_preemptions_total") > preemptions

        ended = _wait_ended(client, batch.id)
        assert ended.request_counts.succeeded == 2
        results = _results(client, batch.id)
        for result in results.values():
            text = result.message.content[0].text
            numbers = [line for line in text.splitlines() if line.strip()]
            assert numbers[:5] == ["1", "2", "3", "4", "5"], text  # resumed text continues, no repeat
            assert len(numbers) == len(set(numbers)), text
    finally:
        server.stop()


def test_requests_sharing_a_system_prompt_reuse_its_cache(client: anthropic.Anthropic):
    system = " ".join(f"Rule {i}: label each fruit by colour, size and season, briefly." for i in range(60))
    requests = [
        {
            "custom_id": f"fruit-{i}",
            "params": {
                "model": MODEL,
                "max_tokens": 4,
                "system": system,
                "messages": [{"role": "user", "content": f"Label fruit number {i}: a {fruit}."}],
            },
        }
        for i, fruit in enumerate(["pear", "plum", "fig", "lime", "kiwi", "date"])
    ]
    batch = client.messages.batches.create(requests=requests)
    _wait_ended(client, batch.id)
    usages = [r.message.usage for r in _results(client, batch.id).values()]
    shared = [
        u for u in usages if u.cache_read_input_tokens >= 0.8 * (u.input_tokens + u.cache_read_input_tokens)
    ]
    # the first request of the group computes the system prompt; every sibling reads it from the cache
    assert len(shared) >= len(requests) - 1, usages
