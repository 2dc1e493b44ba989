"""lmdock in front of upstreams that misbehave (a tiny local fake): every failure is a clear error in the
Anthropic envelope within the configured timeout, never a hang; tool calls and errors are translated."""

from __future__ import annotations

import json
import time

import anthropic
import httpx
import openai
import pytest

from tests.conftest import DEFAULT_MODEL, Server, start_server
from tests.upstream.fake_upstream import FakeUpstream

MODES = [
    "ok",
    "tools",
    "bare",
    "garbage",
    "jsongarbage",
    "hang",
    "stall",
    "midfail",
    "boom",
    "overflow",
    "clamp",
    "busy",
]
SECRET = "sk-upstream-secret-4711"
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]
WEATHER = {
    "name": "get_weather",
    "description": "Weather in a city",
    "input_schema": {
        "type": "object",
        "properties": {"location": {"type": "string"}, "unit": {"type": "string"}},
        "required": ["location"],
    },
}
TIME = {"name": "get_time", "input_schema": {"type": "object", "properties": {"tz": {"type": "string"}}}}


@pytest.fixture(scope="module")
def front(tmp_path_factory, fake: FakeUpstream) -> Server:
    tmp = tmp_path_factory.mktemp("front")
    (tmp / "home").mkdir()
    lines = []
    for mode in MODES:
        lines += [
            "[[upstream]]",
            f'name = "{mode}"',
            f'urls = ["{fake.base_url}/{mode}"]',
            'kind = "openai"',
            "timeout = 2",
            "connect_timeout = 1",
            "health_interval = 1",
            "context_length = 4096",
        ]
        if mode == "ok":
            lines.append('api_key_env = "LMDOCK_TEST_UPSTREAM_KEY"')
        lines.append("")
    lines += [  # raw prompts rendered and counted with a local GGUF's template and vocabulary
        "[[upstream]]",
        'name = "rawok"',
        f'urls = ["{fake.base_url}/ok"]',
        'kind = "openai"',
        'prompt = "raw"',
        f'tokenizer = "{DEFAULT_MODEL}"',
    ]
    (tmp / "home" / "upstreams.toml").write_text("\n".join(lines))
    srv = start_server(
        tmp,
        "--model",
        "ok",
        env={"LMDOCK_TEST_UPSTREAM_KEY": SECRET},
        ready=lambda h: len(h.get("upstreams", {})) == len(MODES) + 1,
    )
    yield srv
    srv.stop()
    assert SECRET not in srv.log()


@pytest.fixture(scope="module")
def client(front: Server) -> anthropic.Anthropic:
    return front.anthropic(timeout=60)


def _requests(fake: FakeUpstream, mode: str) -> list[dict]:
    """The chat requests the fake got (not the tokenize calls beside them)."""
    got = httpx.get(f"{fake.base_url}/{mode}/_requests").json()
    return [r for r in got if r["_path"] == "v1/chat/completions"]


def test_text_passes_through_with_usage_and_the_key_from_the_environment(client, fake):
    msg = client.messages.create(model="ok", max_tokens=20, messages=[{"role": "user", "content": "Hi"}])
    assert msg.content[0].text == "Hello world" and msg.stop_reason == "end_turn"
    assert msg.usage.input_tokens == 7 and msg.usage.cache_read_input_tokens == 4
    assert msg.usage.output_tokens == 3
    sent = _requests(fake, "ok")[-1]
    assert sent["_authorization"] == f"Bearer {SECRET}"
    assert sent["max_tokens"] == 20 and sent["stream"] is True
    assert "temperature" not in sent  # unset sampling is left to the upstream


def test_claude_names_and_explicit_sampling_reach_the_default_upstream(client, fake):
    client.messages.create(
        model="claude-sonnet-4-6",
        max_tokens=5,
        messages=[{"role": "user", "content": "Hi"}],
        extra_body={"temperature": 0.0, "top_p": 0.5},
    )
    sent = _requests(fake, "ok")[-1]
    assert sent["temperature"] == 0.0 and sent["top_p"] == 0.5


def test_streamed_tool_call_gives_input_json_deltas(client, fake):
    with client.messages.stream(
        model="tools", max_tokens=50, tools=[WEATHER, TIME], tool_choice={"type": "any"}, messages=ASK
    ) as stream:
        partials = [e.partial_json for e in stream if e.type == "input_json"]
        final = stream.get_final_message()
    call = final.content[-1]
    assert call.type == "tool_use" and call.name == "get_weather" and call.id.startswith("toolu_")
    assert call.input == {"location": "Paris", "unit": "celsius"}
    assert len(partials) > 1 and json.loads("".join(partials)) == call.input
    assert final.stop_reason == "tool_use"
    sent = _requests(fake, "tools")[-1]
    assert sent["tool_choice"] == "required" and len(sent["tools"]) == 2


def test_tool_choice_tool_and_none_are_sent_so_weak_upstreams_obey(client, fake):
    msg = client.messages.create(
        model="tools",
        max_tokens=50,
        tools=[WEATHER, TIME],
        tool_choice={"type": "tool", "name": "get_time", "disable_parallel_tool_use": True},
        messages=ASK,
    )
    assert [b.name for b in msg.content if b.type == "tool_use"] == ["get_time"]
    sent = _requests(fake, "tools")[-1]
    assert [t["function"]["name"] for t in sent["tools"]] == ["get_time"]
    assert sent["tool_choice"] == "required" and sent["parallel_tool_calls"] is False
    client.messages.create(
        model="tools", max_tokens=50, tools=[WEATHER], tool_choice={"type": "none"}, messages=ASK
    )
    sent = _requests(fake, "tools")[-1]
    assert "tools" not in sent and "tool_choice" not in sent


def test_a_tool_call_written_as_text_is_recovered(client):
    msg = client.messages.create(model="bare", max_tokens=50, tools=[WEATHER], messages=ASK)
    calls = [b for b in msg.content if b.type == "tool_use"]
    assert calls and calls[0].input == {"location": "Paris"} and msg.stop_reason == "tool_use"
    assert msg.content[-1].type == "tool_use"  # chatter after the call ends the turn, as the grammar would


@pytest.mark.parametrize("mode", ["garbage", "jsongarbage"])
@pytest.mark.parametrize("stream", [False, True])
def test_garbage_is_a_502_in_the_anthropic_envelope(front: Server, mode: str, stream: bool):
    r = httpx.post(
        f"{front.base_url}/v1/messages",
        json={"model": mode, "max_tokens": 5, "stream": stream, "messages": ASK},
        timeout=30,
    )
    assert r.status_code == 502, r.text
    body = r.json()
    assert body["type"] == "error" and body["error"]["type"] == "api_error"
    assert "invalid response" in body["error"]["message"]


@pytest.mark.parametrize("stream", [False, True])
def test_a_hanging_upstream_is_a_504_not_a_hang(front: Server, stream: bool):
    started = time.monotonic()
    r = httpx.post(
        f"{front.base_url}/v1/messages",
        json={"model": "hang", "max_tokens": 5, "stream": stream, "messages": ASK},
        timeout=60,
    )
    assert time.monotonic() - started < 30
    assert r.status_code == 504, r.text
    assert r.json()["error"]["type"] == "timeout_error"
    assert r.headers["x-should-retry"] == "true"


def test_a_stream_that_stalls_ends_with_an_error_event(front: Server):
    started = time.monotonic()
    events = []
    with httpx.stream(
        "POST",
        f"{front.base_url}/v1/messages",
        json={"model": "stall", "max_tokens": 5, "stream": True, "messages": ASK},
        timeout=60,
    ) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))
    assert time.monotonic() - started < 30
    assert events[0]["type"] == "message_start"
    assert any(e.get("delta", {}).get("text") == "Hel" for e in events)
    assert events[-1]["type"] == "error" and events[-1]["error"]["type"] == "timeout_error"


def test_a_failure_reported_mid_stream_is_an_error_event(front: Server):
    with httpx.stream(
        "POST",
        f"{front.base_url}/v1/messages",
        json={"model": "midfail", "max_tokens": 5, "stream": True, "messages": ASK},
        timeout=60,
    ) as r:
        assert r.status_code == 200, r.read()
        events = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1]["type"] == "error" and events[-1]["error"]["type"] == "api_error"
    assert "engine crashed" in events[-1]["error"]["message"]


def test_an_upstream_server_error_keeps_its_message(client):
    with pytest.raises(anthropic.APIStatusError) as err:
        client.messages.create(model="boom", max_tokens=5, messages=ASK)
    assert err.value.status_code == 502
    assert "CUDA error: out of memory" in err.value.body["error"]["message"]


def test_context_overflow_has_claude_codes_wording(client):
    with pytest.raises(anthropic.BadRequestError) as err:
        client.messages.create(model="overflow", max_tokens=500, messages=ASK)
    assert err.value.body["error"]["message"] == "prompt is too long: 4500 tokens > 4096 maximum"


def test_max_tokens_beyond_the_context_is_clamped_and_retried(client, fake):
    msg = client.messages.create(model="clamp", max_tokens=4000, messages=ASK)
    assert msg.stop_reason == "model_context_window_exceeded"
    assert [r["max_tokens"] for r in _requests(fake, "clamp")][-2:] == [4000, 100]


def test_every_node_busy_is_529_with_retry_after(client):
    with pytest.raises(anthropic.APIStatusError) as err:
        client.messages.create(model="busy", max_tokens=5, messages=ASK)
    assert err.value.status_code == 529
    assert err.value.body["error"]["type"] == "overloaded_error"
    assert 1 <= int(err.value.response.headers["retry-after"]) <= 60


def test_upstreams_are_listed_with_health_and_metrics(front: Server, client):
    ids = [m.id for m in client.models.list(limit=1000)]
    assert ids[: len(MODES)] == MODES
    assert client.models.retrieve("tools").max_input_tokens == 4096
    models = httpx.get(f"{front.base_url}/api/v1/models").json()["models"]
    entry = next(m for m in models if m["key"] == "ok")
    assert entry["format"] == "upstream" and entry["state"] == "loaded"
    assert entry["upstream"]["nodes"][0]["url"].endswith("/ok")
    health = httpx.get(f"{front.base_url}/health").json()
    assert health["upstreams"]["ok"]["healthy_nodes"] == 1
    metrics = httpx.get(f"{front.base_url}/metrics").text
    assert 'lmdock_upstream_requests_total{model="ok"' in metrics
    assert 'lmdock_upstream_errors_total{model="garbage"' in metrics
    for text in (json.dumps(models), json.dumps(health), metrics):
        assert SECRET not in text


def test_raw_prompts_render_and_count_with_a_local_gguf(client, fake):
    params = dict(model="rawok", system="Be brief.", messages=[{"role": "user", "content": "Hi"}])
    counted = client.messages.count_tokens(**params).input_tokens
    msg = client.messages.create(max_tokens=5, **params)
    assert msg.content[0].text == "Hello world"
    got = httpx.get(f"{fake.base_url}/ok/_requests").json()
    sent = [r for r in got if r["_path"] == "v1/completions"][-1]
    assert sent["prompt"].startswith("<|im_start|>system\nBe brief.<|im_end|>")
    assert sent["prompt"].endswith("<|im_start|>assistant\n")
    assert 10 < counted < 40


def test_text_completions_pass_through_and_refuse_logprobs(front: Server, fake):
    """/v1/completions on an upstream model: the prompt as-is; logprobs (which the translation cannot
    carry) are a 400 naming the field, not a server error."""
    oai = front.openai(timeout=60)
    out = oai.completions.create(model="ok", prompt="Say hi", max_tokens=5)
    assert out.choices[0].text == "Hello world"
    got = httpx.get(f"{fake.base_url}/ok/_requests").json()
    assert [r for r in got if r["_path"] == "v1/completions"][-1]["prompt"] == "Say hi"
    with pytest.raises(openai.BadRequestError, match="logprobs"):
        oai.completions.create(model="ok", prompt="Say hi", max_tokens=5, logprobs=2)
