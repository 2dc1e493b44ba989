"""Responses API: input items -> core request, core events -> typed Response and stream events."""

import json

import pytest
from openai.types.responses import Response, ResponseItem
from pydantic import TypeAdapter

from lmdock.api.responses.convert import namespaces_of, normalize_input, to_chat_request
from lmdock.api.responses.encode import ResponseEncoder
from lmdock.api.responses.routes import _base, _without_orphans
from lmdock.api.responses.schema import ResponseCreateParams
from lmdock.api.validation import validate_body
from lmdock.core import events as ev
from lmdock.core.errors import InvalidRequest

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}
ITEMS = TypeAdapter(list[ResponseItem])
DEEP_900 = '{"a": ' * 900 + "1" + "}" * 900
DEEP_5000 = "[" * 5000 + "]" * 5000


def _params(**body) -> ResponseCreateParams:
    return validate_body(ResponseCreateParams, {"model": "m", **body})


def _req(**body):
    params = _params(**body)
    return to_chat_request(params, normalize_input(params.input))


def test_string_input_and_instructions():
    req = _req(input="hi", instructions="be brief", max_output_tokens=9, temperature=0.2)
    assert [(m.role, m.content) for m in req.messages] == [("system", "be brief"), ("user", "hi")]
    assert req.max_tokens == 9 and req.sampling.temperature == 0.2 and req.tool_choice.mode == "none"


def test_item_list_with_tool_round_trip_and_reasoning():
    req = _req(
        input=[
            {"role": "developer", "content": "use tools"},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "weather?"}]},
            {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "need it"}]},
            {
                "type": "function_call",
                "call_id": "c1",
                "name": "get_weather",
                "arguments": '{"city":"Paris"}',
            },
            {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
            {"role": "assistant", "content": [{"type": "output_text", "text": "It is sunny."}]},
            {"role": "user", "content": "thanks"},
        ],
        tools=[WEATHER],
        tool_choice="required",
    )
    system, user, call, result, answer, last = req.messages
    assert (system.role, user.content) == ("system", "weather?")
    assert call.role == "assistant" and call.reasoning == "need it"
    assert call.tool_calls[0].arguments == {"city": "Paris"} and call.tool_calls[0].id == "c1"
    assert (result.role, result.content, result.name, result.tool_call_id) == (
        "tool",
        "sunny",
        "get_weather",
        "c1",
    )
    assert answer.content == "It is sunny." and last.content == "thanks"
    assert req.tool_choice.mode == "any"


def test_normalized_items_are_valid_response_items():
    items = normalize_input(
        [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "hello"},
            {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": "ok"},
        ]
    )
    parsed = ITEMS.validate_python(items)
    assert [i.type for i in parsed] == ["message", "message", "function_call", "function_call_output"]
    assert all(i.id for i in parsed)


def test_an_image_without_detail_comes_back_as_the_sdk_reads_it():
    image = {"type": "input_image", "image_url": "data:image/png;base64,iVBORw0KGgo="}
    items = normalize_input([{"role": "user", "content": [{"type": "input_text", "text": "what?"}, image]}])
    (message,) = ITEMS.validate_python(items)
    assert message.content[1].detail == "auto"
    kept = normalize_input([{"role": "user", "content": [{**image, "detail": "low"}]}])
    assert kept[0]["content"][0]["detail"] == "low"


def test_a_tool_output_named_by_its_tool_needs_no_call_id():
    """Codex adds its goal context as a function_call_output with name and namespace, answering no call
    (the SDK's FunctionCallOutput: call_id, name and namespace are all optional)."""
    goal = {"type": "function_call_output", "name": "goal_objective", "namespace": "agent", "output": "hi"}
    items = normalize_input([{"role": "user", "content": "create hello.txt"}, goal])
    (parsed,) = ITEMS.validate_python(items[1:])
    assert parsed.type == "function_call_output" and parsed.name == "goal_objective"
    assert parsed.namespace == "agent" and parsed.call_id is None
    result = _req(input=[{"role": "user", "content": "create hello.txt"}, goal]).messages[-1]
    assert (result.role, result.content, result.name, result.tool_call_id) == (
        "tool",
        "hi",
        "goal_objective",
        None,
    )
    with pytest.raises(InvalidRequest) as err:  # neither a call_id nor a name: what does it answer?
        normalize_input([{"type": "function_call_output", "output": "x"}])
    assert err.value.param == "input.0.call_id"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": [{"type": "computer_call"}]}, "input.0.type"),
        ({"input": [{"role": "robot", "content": "x"}]}, "input.0.role"),
        (
            {"input": [{"type": "function_call", "call_id": "c", "name": "f", "arguments": "{"}]},
            "input.0.arguments",
        ),
        ({"input": [{"role": "user", "content": [{"type": "video"}]}]}, "input.0.content.0.type"),
        ({"input": "hi", "tools": [{"type": "web_search"}]}, "tools.0.type"),
        (
            {"input": "hi", "tools": [WEATHER], "tool_choice": {"type": "function", "name": "nope"}},
            "tool_choice.name",
        ),
        ({"input": "hi", "tool_choice": "required"}, "tool_choice"),
        ({"input": "hi", "text": {"format": {"type": "json_schema", "name": "x"}}}, "text.format.schema"),
        ({"input": []}, "input"),
        # issue 22: each of these was a 500 (or refused only after the generation ran)
        ({"input": [{"type": "reasoning", "summary": 5}]}, "input.0.summary"),
        ({"input": [{"type": "reasoning", "summary": [], "content": True}]}, "input.0.content"),
        ({"input": "hi", "tools": [{"type": "namespace", "name": "ns", "tools": 5}]}, "tools.0.tools"),
        ({"input": "hi", "tools": [{"type": "namespace", "tools": [WEATHER]}]}, "tools.0.name"),
        ({"input": "hi", "tools": [{"type": "namespace", "name": 5, "tools": [WEATHER]}]}, "tools.0.name"),
        (
            {"input": [{"type": "function_call", "call_id": "c", "name": "f", "arguments": DEEP_900}]},
            "input.0.arguments",
        ),
        (
            {"input": [{"type": "function_call", "call_id": "c", "name": "f", "arguments": DEEP_5000}]},
            "input.0.arguments",
        ),
        (
            {"input": [{"role": "user", "content": [{"type": ["input_text"], "text": "x"}]}]},
            "input.0.content.0.type",
        ),
        ({"input": [{"role": "user", "content": [{"type": {}, "text": "x"}]}]}, "input.0.content.0.type"),
        ({"input": "hi", "reasoning": {"effort": "ultra"}}, "reasoning.effort"),
        ({"input": "hi", "reasoning": {"summary": "bogus"}}, "reasoning.summary"),
        (
            {
                "input": [
                    {"role": "user", "content": "a", "id": "m1"},
                    {"role": "user", "content": "b", "id": "m1"},
                ]
            },
            "input.1.id",
        ),
    ],
)
def test_bad_requests_name_the_field(body, param):
    with pytest.raises(InvalidRequest) as err:
        _req(**body)
    assert err.value.param == param


def test_formats_and_reasoning():
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    req = _req(input="x", text={"format": {"type": "json_schema", "name": "r", "schema": schema}})
    assert req.response_schema == schema
    assert _req(input="x", text={"format": {"type": "json_object"}}).response_schema == {"type": "object"}
    assert _req(input="x", reasoning={"effort": "high"}).thinking.enabled is True
    assert _req(input="x", reasoning={"effort": "none"}).thinking.enabled is False
    assert _req(input="x", include=["message.output_text.logprobs"], top_logprobs=3).logprobs == 3
    assert _req(input="x").logprobs is None


def test_orphaned_tool_results_are_dropped_with_their_call():
    items = normalize_input(
        [
            {"type": "function_call_output", "call_id": "c1", "output": "ok"},
            {"role": "user", "content": "next"},
        ]
    )
    assert [i["type"] for i in _without_orphans(items)] == ["message"]


def _encode(events, **body):
    params = _params(input="x", **body)
    enc = ResponseEncoder(_base(params), logprobs=params.wants_logprobs)
    stream = enc.start_events()
    for event in events:
        stream += enc.feed(event)
    return enc, stream


def test_text_stream_adds_up_to_the_response():
    lp = [ev.TokenLogprob("Hel", -0.1, [("Hel", -0.1), ("Hi", -2.5)])]
    enc, stream = _encode(
        [
            ev.TextDelta("Hel", lp),
            ev.TextDelta("lo", [ev.TokenLogprob("lo", -0.2)]),
            ev.Done("end_turn", ev.Usage(10, 2, 4)),
        ],
        include=["message.output_text.logprobs"],
        top_logprobs=2,
    )
    types = [e.type for e in stream]
    assert types == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e.sequence_number for e in stream] == list(range(len(stream)))
    final = Response.model_validate(enc.response().model_dump(mode="json", exclude_unset=True, by_alias=True))
    assert final.output_text == "Hello" and final.status == "completed"
    assert [x.token for x in final.output[0].content[0].logprobs] == ["Hel", "lo"]
    assert final.usage.input_tokens_details.cached_tokens == 4 and final.usage.total_tokens == 12
    assert stream[-1].response.output == final.output


def test_tool_call_and_incomplete():
    enc, stream = _encode(
        [
            ev.ThinkingDelta("hmm"),
            ev.ToolCallStart(0, "toolu_1", "get_weather"),
            ev.ToolCallArgsDelta(0, '{"city": '),
            ev.ToolCallArgsDelta(0, '"Paris"}'),
            ev.ToolCallEnd(0, {"city": "Paris"}),
            ev.Done("max_tokens", ev.Usage(10, 5, 0)),
        ],
        tools=[WEATHER],
    )
    types = [e.type for e in stream]
    assert "response.reasoning_text.delta" in types and types[-1] == "response.incomplete"
    assert types.count("response.function_call_arguments.delta") == 2
    closed = types.index("response.reasoning_text.done")  # the reasoning item ends before the call starts
    assert types[closed : closed + 4] == [
        "response.reasoning_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.output_item.added",
    ]
    assert stream[closed].text == "hmm" and stream[closed + 1].part.type == "reasoning_text"
    assert stream[closed + 1].part.text == "hmm" and stream[closed + 1].content_index == 0
    final = enc.response()
    reasoning, call = final.output
    assert reasoning.type == "reasoning" and reasoning.content[0].text == "hmm"
    assert call.type == "function_call" and json.loads(call.arguments) == {"city": "Paris"}
    assert call.call_id == "call_1" and final.incomplete_details.reason == "max_output_tokens"


def test_failure_events():
    enc, stream = _encode([ev.TextDelta("a")])
    failed = enc.fail(RuntimeError("boom"))
    assert [e.type for e in failed] == ["error", "response.failed"]
    assert failed[-1].response.status == "failed" and failed[-1].response.error.message


def test_namespace_tools_are_function_tools_and_calls_name_their_namespace():
    agents = {
        "type": "namespace",
        "name": "multi_agent_v1",
        "description": "sub-agents",
        "tools": [{"type": "function", "name": "spawn_agent", "parameters": {"type": "object"}}],
    }
    req = _req(input="x", tools=[WEATHER, agents])
    assert [t.name for t in req.tools] == ["get_weather", "spawn_agent"]
    params = _params(input="x", tools=[WEATHER, agents])
    enc = ResponseEncoder(_base(params), namespaces=namespaces_of(params.tools))
    for event in [
        ev.ToolCallStart(0, "toolu_9", "spawn_agent"),
        ev.ToolCallEnd(0, {}),
        ev.Done("tool_use", ev.Usage(1, 1, 0)),
    ]:
        enc.feed(event)
    final = Response.model_validate(enc.response().model_dump(mode="json", exclude_unset=True, by_alias=True))
    assert final.output[0].namespace == "multi_agent_v1" and final.tools[1].type == "namespace"


def test_a_tool_output_part_without_a_string_type_reads_as_nothing():
    items = normalize_input(
        [
            {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
            {
                "type": "function_call_output",
                "call_id": "c1",
                "output": [{"type": {"a": 1}}, {"type": "input_text", "text": "ok"}],
            },
        ]
    )
    assert _req(input=items).messages[-1].content == "ok"
