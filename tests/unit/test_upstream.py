"""Upstream routing, config, conversion and error mapping, without a network."""

from __future__ import annotations

import json

import pytest

from lmdock.core.errors import InvalidRequest, PromptTooLong
from lmdock.core.events import Done, TextDelta, ThinkingDelta, ToolCallArgsDelta, ToolCallEnd, ToolCallStart
from lmdock.core.request import ChatRequest, Message, SamplingParams, Tool, ToolCall, ToolChoice
from lmdock.upstream.config import UpstreamConfigError, load_specs, parse_flag, spec_from_dict
from lmdock.upstream.errors import UpstreamError, client_error, overflow_of
from lmdock.upstream.openai_chat import ChatTranslator, chat_body, explicit_sampling
from lmdock.upstream.router import Node, Router, affinity_key

TOOLS = [Tool("get_weather", "w", {"type": "object"}), Tool("get_time", "t", {"type": "object"})]


def _req(*messages: Message, **kw) -> ChatRequest:
    return ChatRequest(model="m", messages=list(messages), max_tokens=10, **kw)


def test_flag_and_file_config(tmp_path):
    spec = parse_flag("Big=http://a:8000/v1/,http://b:8000")
    assert spec.key == "big" and spec.urls == ["http://a:8000", "http://b:8000"] and spec.kind == "auto"
    path = tmp_path / "upstreams.toml"
    path.write_text(
        '[[upstream]]\nname = "big"\nurls = ["http://x:1"]\nkind = "openai"\napi_key_env = "K"\n'
        'context_length = 4096\nprompt = "raw"\n'
    )
    specs = load_specs(path, ["big=http://y:2", "other=http://z:3"])
    assert [s.name for s in specs] == ["big", "other"]
    assert specs[0].urls == ["http://y:2"] and specs[0].context_length == 4096 and specs[0].prompt == "raw"
    with pytest.raises(UpstreamConfigError):
        parse_flag("no-url")
    with pytest.raises(UpstreamConfigError):
        spec_from_dict({"name": "x", "urls": ["ftp://x"]})
    with pytest.raises(UpstreamConfigError):
        spec_from_dict({"name": "x", "urls": ["http://x"], "api_key": "inline keys are refused"})


def test_api_key_comes_from_the_environment_and_is_not_in_the_repr(monkeypatch):
    spec = spec_from_dict({"name": "x", "urls": ["http://x"], "api_key_env": "UP_KEY"})
    monkeypatch.setenv("UP_KEY", "sk-123")
    assert spec.api_key() == "sk-123" and "sk-123" not in repr(spec)


def test_affinity_key_is_stable_across_turns_and_differs_between_conversations():
    system, first = Message("system", "be brief"), Message("user", "hello")
    turn1 = _req(system, first, tools=TOOLS)
    turn3 = _req(system, first, Message("assistant", "hi"), Message("user", "more"), tools=TOOLS)
    other = _req(system, Message("user", "something else"), tools=TOOLS)
    assert affinity_key(turn1) == affinity_key(turn3) != affinity_key(other)
    assert affinity_key(turn1) != affinity_key(_req(system, first))
    billed = [
        Message("system", f"x-anthropic-billing-header: cc_version=2.1; cch={c};\nYou are Claude Code.")
        for c in ("ab12c", "9f8e7")
    ]
    assert affinity_key(_req(billed[0], first)) == affinity_key(_req(billed[1], first))


def test_router_affinity_least_outstanding_and_failover():
    a, b = Node("http://a"), Node("http://b")
    router = Router([a, b])
    a.outstanding = 2
    assert router.pick("conv1") is b
    router.bind("conv1", b)
    b.outstanding = 5
    assert router.pick("conv1") is b  # affinity beats load
    assert router.pick("conv2") is a  # a new conversation goes to the least busy node
    b.mark_down("refused")
    assert router.pick("conv1") is a  # the bound node is down: fail over
    assert router.pick("conv1", exclude={a}) is None
    a.mark_busy(7)
    assert router.pick("x") is None and 1 <= router.retry_after() <= 8
    b.mark_up(5)
    assert router.pick("conv1") is b


def test_backoff_grows_and_is_capped():
    n = Node("http://a")
    waits = []
    for _ in range(10):
        n.mark_down("x", now=0.0)
        waits.append(n.next_check)
    assert waits[0] == 0.5 and waits[1] == 1.0 and waits[-1] == 30.0


def test_chat_body_tool_choice_for_weak_and_exact_upstreams():
    req = _req(Message("user", "hi"), tools=TOOLS, tool_choice=ToolChoice("tool", "get_time", parallel=False))
    weak = chat_body(req, "up", exact_tool_choice=False, max_tokens=10)
    assert [t["function"]["name"] for t in weak["tools"]] == ["get_time"] and weak[
        "tool_choice"
    ] == "required"
    assert weak["parallel_tool_calls"] is False
    exact = chat_body(req, "up", exact_tool_choice=True, max_tokens=10)
    assert len(exact["tools"]) == 2 and exact["tool_choice"]["function"]["name"] == "get_time"
    none = chat_body(
        _req(Message("user", "hi"), tools=TOOLS, tool_choice=ToolChoice("none")),
        "up",
        exact_tool_choice=False,
        max_tokens=None,
    )
    assert "tools" not in none and "max_tokens" not in none


def test_chat_body_history_in_openai_form():
    req = _req(
        Message("user", "weather?"),
        Message(
            "assistant", "", reasoning="think", tool_calls=[ToolCall("toolu_1", "get_weather", {"a": 1})]
        ),
        Message("tool", "sunny", tool_call_id="toolu_1"),
        Message("assistant", "It is"),
    )
    body = chat_body(req, "up", exact_tool_choice=False, max_tokens=10)
    call = body["messages"][1]["tool_calls"][0]
    assert call["function"]["arguments"] == json.dumps({"a": 1}) and call["id"] == "toolu_1"
    assert body["messages"][1]["reasoning_content"] == "think"
    assert body["messages"][2] == {"role": "tool", "content": "sunny", "tool_call_id": "toolu_1"}
    assert body["continue_final_message"] is True and body["add_generation_prompt"] is False


def test_only_explicit_sampling_is_sent():
    assert explicit_sampling(SamplingParams()) == {}  # unset stays unset: the upstream's defaults apply
    assert explicit_sampling(SamplingParams(temperature=1.0)) == {"temperature": 1.0}  # set is set
    sent = explicit_sampling(SamplingParams(temperature=0.0, top_p=0.5, seed=3, repeat_penalty=1.1))
    assert sent == {"temperature": 0.0, "top_p": 0.5, "seed": 3, "repetition_penalty": 1.1}


def _chunk(delta=None, finish=None, usage=None):
    c = {"choices": [{"index": 0, "delta": delta or {}, "finish_reason": finish}]}
    if usage:
        c["usage"] = usage
    return c


def test_translator_streams_text_thinking_and_tool_calls_in_order():
    t = ChatTranslator(["get_weather"], [])
    events = []
    for chunk in [
        _chunk({"reasoning_content": "hmm"}),
        _chunk({"content": "Let me check."}),
        _chunk(
            {
                "tool_calls": [
                    {"index": 0, "id": "c1", "function": {"name": "get_weather", "arguments": '{"lo'}}
                ]
            }
        ),
        _chunk({"tool_calls": [{"index": 0, "function": {"arguments": 'c": "Paris"}'}}]}),
        _chunk(finish="tool_calls"),
        {"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 4}, "timings": {"cache_n": 3}},
    ]:
        events += t.feed(chunk)
    events += t.finish()
    kinds = [type(e) for e in events]
    assert kinds == [
        ThinkingDelta,
        TextDelta,
        ToolCallStart,
        ToolCallArgsDelta,
        ToolCallArgsDelta,
        ToolCallEnd,
        Done,
    ]
    assert events[2].id.startswith("toolu_") and events[5].arguments == {"loc": "Paris"}
    done = events[-1]
    assert done.stop_reason == "tool_use" and done.usage.input_tokens == 9 and done.usage.cached_tokens == 3


def test_translator_applies_client_stop_sequences():
    t = ChatTranslator([], ["5"])
    events = t.feed(_chunk({"content": "1, 2, 3, 4, "})) + t.feed(_chunk({"content": "5, 6"}))
    assert t.stop.hit == "5"
    events += t.finish()
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    assert (
        text.rstrip() == "1, 2, 3, 4,"
        and events[-1].stop_reason == "stop_sequence"
        and events[-1].stop_sequence == "5"
    )


def test_context_overflow_wordings_map_to_claude_codes_message():
    vllm = "This model's maximum context length is 4096 tokens. However, you requested 5000 tokens (4500 in the messages, 500 in the completion)."
    o = overflow_of({"error": {"message": vllm}}, vllm)
    assert (o.prompt_tokens, o.n_ctx) == (4500, 4096)
    err = client_error("m", 400, {}, o)
    assert isinstance(err, PromptTooLong) and err.message == "prompt is too long: 4500 tokens > 4096 maximum"
    llama = {
        "error": {
            "type": "exceed_context_size_error",
            "message": "the request exceeds the available context size, try increasing it",
            "n_prompt_tokens": 9000,
            "n_ctx": 8192,
        }
    }
    o = overflow_of(llama, llama["error"]["message"])
    assert (o.prompt_tokens, o.n_ctx) == (9000, 8192)
    sglang = "The input (9000 tokens) is longer than the model's context length (8192 tokens)."
    assert overflow_of({}, sglang).n_ctx == 8192
    assert overflow_of({}, "bad tool schema") is None
    assert isinstance(client_error("m", 422, {"detail": "bad"}, None), InvalidRequest)
    assert isinstance(client_error("m", 401, {}, None), UpstreamError)
    assert client_error("m", 500, {"error": {"message": "boom"}}, None).status == 502


def test_text_after_a_finished_call_ends_the_turn_and_one_call_without_parallel():
    t = ChatTranslator(["get_weather"], [])
    events = t.feed(_chunk({"content": '{"name": "get_weather", "arguments": {"location": "Paris"}}'}))
    events += t.feed(_chunk({"content": ". It is sunny in Paris."}))
    assert t.ended
    events += t.finish()
    assert [type(e) for e in events if not isinstance(e, ToolCallArgsDelta)] == [
        ToolCallStart,
        ToolCallEnd,
        Done,
    ]
    assert events[-1].stop_reason == "tool_use"
    t = ChatTranslator(["a", "b"], [], parallel=False)
    call = {"index": 0, "id": "1", "function": {"name": "a", "arguments": "{}"}}
    second = {"index": 1, "id": "2", "function": {"name": "b", "arguments": "{}"}}
    events = t.feed(_chunk({"tool_calls": [call]})) + t.feed(_chunk({"tool_calls": [second]}))
    assert t.ended and [e.name for e in events if isinstance(e, ToolCallStart)] == ["a"]
    assert [type(e) for e in t.finish()] == [Done]
