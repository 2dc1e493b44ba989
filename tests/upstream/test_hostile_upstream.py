"""lmdock in front of a deliberately hostile upstream (issue 22): credentials in its URLs never leave
the server, huge bodies and lines are a 502 "oversized upstream response" with the server's memory
intact, error text comes back cut, max_tokens holds against an upstream that ignores it, and the
upstream stream is closed when the client leaves."""

from __future__ import annotations

import base64
import json
import socket
import time

import anthropic
import httpx
import pytest

from tests.conftest import Server, start_server
from tests.upstream.fake_upstream import FakeUpstream

PASSWORD = "s3cret-pa55"
MODES = ["hugeerror", "longerror", "hugejson", "hugeline", "hugechunk", "endless", "slow", "hugeprobe"]
HI = [{"role": "user", "content": "hi"}]
API_KEY = "front-key"


@pytest.fixture(scope="module")
def front(tmp_path_factory, fake: FakeUpstream) -> Server:
    tmp = tmp_path_factory.mktemp("hostile-front")
    (tmp / "home").mkdir()
    host = fake.base_url.removeprefix("http://")
    lines = []
    for mode in [*MODES, "ok"]:
        lines += [
            "[[upstream]]",
            f'name = "{mode}"',
            f'urls = ["http://alice:{PASSWORD}@{host}/{mode}"]',
            'kind = "openai"',
            "timeout = 30",
            "health_interval = 1",
            "context_length = 4096",
            "",
        ]
    (tmp / "home" / "upstreams.toml").write_text("\n".join(lines))
    srv = start_server(
        tmp,
        "--model",
        "ok",
        "--api-key",
        API_KEY,
        ready=lambda h: sum(u["healthy_nodes"] for u in h.get("upstreams", {}).values()) == len(MODES) + 1,
    )
    yield srv
    srv.stop()
    assert PASSWORD not in srv.log()


@pytest.fixture(scope="module")
def client(front: Server) -> anthropic.Anthropic:
    return front.anthropic(api_key=API_KEY, timeout=120)


def _streams(fake: FakeUpstream, mode: str) -> dict:
    return httpx.get(f"{fake.base_url}/{mode}/_streams").json()


def _requests(fake: FakeUpstream, mode: str) -> list[dict]:
    return httpx.get(f"{fake.base_url}/{mode}/_requests").json()


def _closed(fake: FakeUpstream, mode: str) -> None:
    """Wait until the fake has no answer of `mode` still being written (lmdock hung up on it)."""
    deadline = time.monotonic() + 60  # a bound for a broken build, not a timing assertion
    while _streams(fake, mode)["open"]:
        assert time.monotonic() < deadline, f"lmdock still reads {mode}: {_streams(fake, mode)}"
        time.sleep(0.2)


def _rss(front: Server) -> int:
    return httpx.get(f"{front.base_url}/health").json()["server_rss_bytes"]


def test_credentials_reach_the_upstream_and_nowhere_else(front: Server, client, fake):
    assert client.messages.create(model="ok", max_tokens=5, messages=HI).content[0].text == "Hello world"
    sent = _requests(fake, "ok")[-1]["_authorization"]
    assert sent == "Basic " + base64.b64encode(f"alice:{PASSWORD}".encode()).decode()
    auth = {"authorization": f"Bearer {API_KEY}"}
    shown = [
        httpx.get(f"{front.base_url}/api/v1/models", headers=auth).text,
        httpx.get(f"{front.base_url}/v1/models", headers=auth).text,
        httpx.get(f"{front.base_url}/metrics").text,
        httpx.get(f"{front.base_url}/health").text,
        front.log(),
    ]
    assert all(PASSWORD not in text and "alice" not in text for text in shown)
    listed = json.loads(shown[0])["models"]
    assert next(m for m in listed if m["key"] == "ok")["upstream"]["nodes"][0]["url"] == fake.base_url + "/ok"
    # /health needs no key: with --api-key it does not say where the upstream nodes are
    health = json.loads(shown[3])
    assert fake.base_url.removeprefix("http://") not in shown[3]
    assert health["upstreams"]["ok"]["nodes"][0]["state"] == "up"


@pytest.mark.parametrize("mode", ["hugeerror", "hugejson", "hugeline"])
@pytest.mark.parametrize("stream", [False, True])
def test_huge_answers_are_a_502_and_leave_memory_alone(front: Server, client, fake, mode: str, stream: bool):
    before, sent = _rss(front), _streams(fake, mode)["sent"]
    with pytest.raises(anthropic.APIStatusError) as err:
        client.messages.create(model=mode, max_tokens=5, messages=HI, stream=stream)
    assert err.value.status_code == 502
    assert "oversized upstream response" in err.value.body["error"]["message"]
    _closed(fake, mode)
    assert _streams(fake, mode)["sent"] - sent < 64 << 20  # it stopped reading long before 300 MB
    assert _rss(front) - before < 64 << 20


def test_a_long_error_message_is_relayed_cut(client):
    with pytest.raises(anthropic.BadRequestError) as err:
        client.messages.create(model="longerror", max_tokens=5, messages=HI)
    message = err.value.body["error"]["message"]
    assert message.count("L") > 500 and len(message) < 2000


@pytest.mark.parametrize("mode", ["endless", "hugechunk"])
def test_max_tokens_holds_when_the_upstream_ignores_it(front: Server, client, fake, mode: str):
    msg = client.messages.create(model=mode, max_tokens=4, messages=HI)
    assert msg.stop_reason == "max_tokens"
    assert 0 < len(msg.content[0].text) <= 4 * 32
    with client.messages.stream(model=mode, max_tokens=4, messages=HI) as s:
        final = s.get_final_message()
    assert final.stop_reason == "max_tokens" and len(final.content[0].text) <= 4 * 32
    chat = front.openai(api_key=API_KEY).chat.completions
    done = chat.create(model=mode, max_tokens=4, messages=HI)
    assert done.choices[0].finish_reason == "length" and len(done.choices[0].message.content) <= 4 * 32
    _closed(fake, mode)


def test_the_upstream_stream_is_closed_when_the_client_leaves(front: Server, client, fake):
    with client.messages.stream(model="slow", max_tokens=100_000, messages=HI) as s:
        for event in s:
            if event.type == "content_block_delta":
                break
    _closed(fake, "slow")


def test_clients_that_leave_before_the_answer_starts_close_the_upstream_stream(front: Server, fake):
    raw = json.dumps({"model": "slow", "max_tokens": 100_000, "stream": True, "messages": HI}).encode()
    head = (
        f"POST /v1/messages HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {API_KEY}\r\nContent-Length: {len(raw)}\r\n\r\n"
    ).encode()
    port = front.port
    asked = len(_requests(fake, "slow"))
    for _ in range(10):
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(head + raw)
    deadline = time.monotonic() + 60  # a bound for a broken build, not a timing assertion
    while len(_requests(fake, "slow")) < asked + 10:  # every one reached the upstream
        assert time.monotonic() < deadline
        time.sleep(0.2)
    _closed(fake, "slow")


def test_a_huge_probe_answer_is_not_read_whole(client, fake):
    assert (
        client.messages.create(model="hugeprobe", max_tokens=5, messages=HI).content[0].text == "Hello world"
    )
    assert _streams(fake, "hugeprobe")["sent"] < 64 << 20
