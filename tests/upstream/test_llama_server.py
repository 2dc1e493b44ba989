"""lmdock in front of two real llama-server nodes serving the default model.

The project's own Anthropic SDK checks (imported from tests/e2e) run here against the upstream model,
through the `server` / `client` fixtures of this package's conftest. Then what only routing can show:
affinity keeps a conversation (and its prefix cache) on one node, a killed node fails new conversations
over, and with every node down the answer is 529 with retry-after.
"""

from __future__ import annotations

import json

import anthropic
import httpx
import pytest

from tests.conftest import Server
from tests.e2e.test_messages import (  # noqa: F401
    test_assistant_prefill_is_continued,
    test_bad_requests_are_400_with_the_field_named,
    test_claude_model_names_resolve_to_the_default_model,
    test_count_tokens_equals_usage_input_tokens,
    test_create_returns_a_complete_message,
    test_max_tokens_beyond_the_context_is_clamped,
    test_max_tokens_stop_reason,
    test_models_list_paginates_and_ends,
    test_prompt_too_long_has_the_wording_claude_code_compacts_on,
    test_stop_sequence_in_stream,
    test_stop_sequence_is_reported_and_not_emitted,
    test_stream_accumulates_to_the_json_answer,
    test_system_blocks_mid_conversation_system_and_unknown_fields_are_accepted,
    test_unknown_model_is_404_listing_models,
)
from tests.e2e.test_sse import (  # noqa: F401
    test_error_before_stream_is_json_not_sse,
    test_stream_event_sequence,
)
from tests.e2e.test_tools import (  # noqa: F401
    WEATHER,
    test_streamed_tool_call_accumulates_to_the_json_answer,
    test_structured_output_matches_its_schema,
    test_tool_choice_any_returns_a_valid_call,
    test_tool_choice_none_never_calls,
    test_tool_choice_tool_forces_the_named_tool,
    test_tool_result_round_trip_continues_the_conversation,
)
from tests.upstream.conftest import NAME, RAW, start_front, start_node

GREEDY = {"extra_body": {"temperature": 0.0}}


def _nodes(server: Server, name: str = NAME) -> dict[str, dict]:
    models = httpx.get(f"{server.base_url}/api/v1/models", timeout=30).json()["models"]
    entry = next(m for m in models if m["key"] == name)
    return {n["url"]: n for n in entry["upstream"]["nodes"]}


def test_a_conversation_stays_on_one_node_and_its_cache_grows(server: Server, client: anthropic.Anthropic):
    before = _nodes(server)
    system = "You are a marine biologist. Nonce 90417. Answer in one short sentence."
    messages: list[dict] = [{"role": "user", "content": "Tell me one fact about octopuses."}]
    cached = []
    for turn in range(3):
        msg = client.messages.create(model=NAME, max_tokens=24, system=system, messages=messages, **GREEDY)
        cached.append(msg.usage.cache_read_input_tokens or 0)
        messages += [
            {"role": "assistant", "content": msg.content[0].text},
            {"role": "user", "content": f"Tell me fact number {turn + 2}."},
        ]
    after = _nodes(server)
    served = sorted(after[u]["requests"] - before[u]["requests"] for u in after)
    assert served == [0, 3], (before, after)
    assert cached[0] < cached[1] < cached[2], cached


def test_openai_sdk_through_the_upstream(server: Server):
    oai = server.openai(strict=False, timeout=600)
    reply = oai.chat.completions.create(
        model=NAME, max_tokens=12, temperature=0, messages=[{"role": "user", "content": "Say hi."}]
    )
    assert reply.choices[0].message.content and reply.usage.prompt_tokens > 5
    chunks = list(
        oai.chat.completions.create(
            model=NAME,
            max_tokens=12,
            temperature=0,
            stream=True,
            messages=[{"role": "user", "content": "Say hi."}],
        )
    )
    assert (
        "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        == reply.choices[0].message.content
    )


def test_raw_prompts_use_lmdocks_template_and_parser(client: anthropic.Anthropic):
    params = dict(model=RAW, messages=[{"role": "user", "content": "What is 2 + 2? Answer with a number."}])
    counted = client.messages.count_tokens(**params).input_tokens
    msg = client.messages.create(max_tokens=10, **params, **GREEDY)
    assert "4" in msg.content[0].text
    assert msg.usage.input_tokens + (msg.usage.cache_read_input_tokens or 0) == counted
    call = client.messages.create(
        model=RAW,
        max_tokens=100,
        tools=[WEATHER],
        messages=[{"role": "user", "content": "What is the weather like in Paris right now?"}],
        **GREEDY,
    )
    uses = [b for b in call.content if b.type == "tool_use"]
    assert (
        call.stop_reason == "tool_use" and uses[0].name == "get_weather" and uses[0].id.startswith("toolu_")
    )


def test_upstream_is_listed_with_its_nodes(server: Server):
    nodes = _nodes(server)
    assert len(nodes) == 2 and all(n["state"] == "up" for n in nodes.values())
    models = httpx.get(f"{server.base_url}/api/v1/models").json()["models"]
    entry = next(m for m in models if m["key"] == NAME)
    assert entry["upstream"]["engine"] == "llama.cpp" and entry["max_context_length"] == 8192
    metrics = httpx.get(f"{server.base_url}/metrics").text
    assert f'lmdock_upstream_generated_tokens_total{{model="{NAME}"' in metrics


def _events(server: Server, body: dict):
    with httpx.stream("POST", f"{server.base_url}/v1/messages", json=body, timeout=600) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("data: "):
                yield json.loads(line[6:])


@pytest.fixture
def own_nodes(tmp_path):
    nodes = [start_node(tmp_path, i) for i in range(2)]
    yield nodes
    for node in nodes:
        node.stop()


def test_killing_nodes_fails_over_then_529(tmp_path, own_nodes):
    front = start_front(tmp_path, own_nodes)
    try:
        client = front.anthropic(strict=False, timeout=600)
        # a long answer streams from one node; kill that node mid-stream
        events = _events(
            front,
            {
                "model": NAME,
                "max_tokens": 400,
                "stream": True,
                "temperature": 0,
                "messages": [{"role": "user", "content": "Count from 1 to 300, one number per line."}],
            },
        )
        seen = []
        for event in events:
            seen.append(event)
            if event["type"] == "content_block_delta":
                break
        busy = [u for u, n in _nodes(front).items() if n["outstanding"]]
        assert len(busy) == 1
        victim = next(n for n in own_nodes if n.base_url == busy[0])
        victim.proc.kill()
        seen += list(events)
        assert seen[-1]["type"] == "error"  # a stream already under way ends with an error event, no hang

        # new conversations, not started when the node died: no client error, all on the other node
        for i in range(4):
            msg = client.messages.create(
                model=NAME,
                max_tokens=8,
                messages=[{"role": "user", "content": f"Say the number {i}."}],
                **GREEDY,
            )
            assert msg.content[0].text
        nodes = _nodes(front)
        assert nodes[victim.base_url]["state"] == "down"
        survivor = next(n for n in own_nodes if n is not victim)
        assert nodes[survivor.base_url]["requests"] >= 4

        survivor.proc.kill()
        survivor.proc.wait()
        with pytest.raises(anthropic.APIStatusError) as err:
            client.messages.create(model=NAME, max_tokens=8, messages=[{"role": "user", "content": "Hi"}])
        assert err.value.status_code == 529
        assert err.value.body["error"]["type"] == "overloaded_error"
        assert 1 <= int(err.value.response.headers["retry-after"]) <= 60
    finally:
        front.stop()
