"""lmdock in front of another lmdock node (kind detected by probing): the exact tool_choice reaches the
node, count_tokens is the node's own count, and `lmdock ps` shows the upstream model with its health."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import Server, start_server
from tests.e2e.test_tools import TIME, WEATHER

ASK = [{"role": "user", "content": "What is the weather like in Paris right now?"}]


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    node = start_server(tmp_path_factory.mktemp("node"))
    front = None
    try:
        front = start_server(
            tmp_path_factory.mktemp("front"),
            "--model",
            "via-node",
            "--upstream",
            f"via-node={node.base_url}",
            ready=lambda h: h["upstreams"].get("via-node", {}).get("healthy_nodes") == 1,
        )
        yield node, front
    finally:
        if front is not None:
            front.stop()
        node.stop()


def test_an_lmdock_node_is_detected_and_serves_tools_exactly(pair: tuple[Server, Server]):
    _, front = pair
    client = front.anthropic(strict=False)
    msg = client.messages.create(
        model="via-node",
        max_tokens=100,
        tools=[WEATHER, TIME],
        tool_choice={"type": "tool", "name": "get_time"},
        messages=ASK,
        extra_body={"temperature": 0.0},
    )
    assert [b.name for b in msg.content if b.type == "tool_use"] == ["get_time"]
    params = dict(model="via-node", system="Be brief.", messages=[{"role": "user", "content": "Hi there"}])
    counted = client.messages.count_tokens(**params).input_tokens
    reply = client.messages.create(max_tokens=5, **params, extra_body={"temperature": 0.0})
    assert counted == reply.usage.input_tokens + (reply.usage.cache_read_input_tokens or 0)
    ps = front.cli("ps", timeout=60)
    assert ps.returncode == 0 and "via-node" in ps.stdout and "upstream 1/1 up" in ps.stdout, ps.stdout
    status = front.cli("status", timeout=60)
    assert "Upstream: via-node (1/1 nodes up)" in status.stdout, status.stdout
    r = httpx.post(f"{front.base_url}/api/v1/models/load", json={"model": "via-node"}, timeout=30)
    assert r.status_code == 400 and "upstream" in r.json()["error"]["message"]
