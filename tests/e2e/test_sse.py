"""Raw SSE checks: event names, order, indices, one message_delta, no [DONE], pings during prefill."""

from __future__ import annotations

import json

import httpx

from tests.conftest import Server


def _events(server: Server, body: dict) -> list[tuple[str, dict]]:
    events = []
    with httpx.stream("POST", f"{server.base_url}/v1/messages?beta=true", json=body, timeout=600) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["request-id"].startswith("req_")
        name = None
        for line in r.iter_lines():
            assert "[DONE]" not in line
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                data = json.loads(line[6:])
                assert data["type"] == name
                events.append((name, data))
    return events


def _check_sequence(events: list[tuple[str, dict]]) -> None:
    names = [n for n, _ in events if n != "ping"]
    assert names[0] == "message_start" and names[-1] == "message_stop"
    assert names.count("message_delta") == 1 and names[-2] == "message_delta"
    open_index = None
    next_index = 0
    for name, data in events:
        if name == "content_block_start":
            assert open_index is None and data["index"] == next_index
            open_index = data["index"]
            next_index += 1
        elif name == "content_block_delta":
            assert data["index"] == open_index
        elif name == "content_block_stop":
            assert data["index"] == open_index
            open_index = None
    assert open_index is None


def test_stream_event_sequence(server: Server):
    events = _events(
        server,
        {
            "model": "default",
            "max_tokens": 20,
            "stream": True,
            "temperature": 0,
            "messages": [{"role": "user", "content": "Say hi."}],
        },
    )
    _check_sequence(events)
    start = events[0][1]["message"]
    assert start["usage"]["input_tokens"] > 0 and start["content"] == [] and start["stop_reason"] is None
    delta = next(d for n, d in events if n == "message_delta")
    assert delta["delta"]["stop_reason"] in ("end_turn", "max_tokens")
    assert delta["usage"]["output_tokens"] > 0
    first_block = next(d for n, d in events if n == "content_block_start")
    assert first_block["content_block"] == {"type": "text", "text": "", "citations": None}


def test_pings_keep_a_long_prefill_alive(server: Server):
    # ~6k tokens of fresh text: several seconds of prefill on two cores; the test server pings every second
    filler = " ".join(f"item{i} costs {i * 7 % 101} coins;" for i in range(600))
    events = _events(
        server,
        {
            "model": "default",
            "max_tokens": 5,
            "stream": True,
            "messages": [{"role": "user", "content": filler + "\nWhich item costs 3 coins?"}],
        },
    )
    _check_sequence(events)
    first_block = next(i for i, (n, _) in enumerate(events) if n == "content_block_start")
    assert any(n == "ping" for n, _ in events[1:first_block]), [n for n, _ in events]


def test_error_before_stream_is_json_not_sse(server: Server):
    r = httpx.post(
        f"{server.base_url}/v1/messages",
        json={
            "model": "default",
            "max_tokens": 0,
            "stream": True,
            "messages": [{"role": "user", "content": "x"}],
        },
    )
    assert r.status_code == 400 and r.headers["content-type"].startswith("application/json")
