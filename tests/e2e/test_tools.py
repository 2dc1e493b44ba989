"""Tools, structured output and thinking through the anthropic SDK on the real default model."""

from __future__ import annotations

import json
import random
from concurrent.futures import ThreadPoolExecutor

import anthropic
import jsonschema
import pytest

GREEDY = {"extra_body": {"temperature": 0.0}}
WEATHER = {
    "name": "get_weather",
    "description": "Get the current weather in a given location",
    "input_schema": {
        "type": "object",
        "properties": {
            "location": {"type": "string", "description": "The city and state, e.g. San Francisco, CA"},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        },
        "required": ["location"],
    },
}
TIME = {
    "name": "get_time",
    "description": "Get the current time in a time zone",
    "input_schema": {
        "type": "object",
        "properties": {"timezone": {"type": "string"}},
        "required": ["timezone"],
    },
}
ASK = [{"role": "user", "content": "What is the weather like in Paris right now?"}]


def _tool_uses(msg):
    return [b for b in msg.content if b.type == "tool_use"]


def test_tool_choice_any_returns_a_valid_call(client: anthropic.Anthropic):
    msg = client.messages.create(
        model="default",
        max_tokens=200,
        tools=[WEATHER, TIME],
        tool_choice={"type": "any"},
        messages=ASK,
        **GREEDY,
    )
    calls = _tool_uses(msg)
    assert msg.stop_reason == "tool_use" and calls
    assert calls[0].name == "get_weather"
    assert isinstance(calls[0].input["location"], str) and calls[0].input["location"]
    assert calls[0].id.startswith("toolu_")
    jsonschema.validate(calls[0].input, WEATHER["input_schema"])


def test_tool_choice_tool_forces_the_named_tool(client: anthropic.Anthropic):
    msg = client.messages.create(
        model="default",
        max_tokens=200,
        tools=[WEATHER, TIME],
        tool_choice={"type": "tool", "name": "get_time", "disable_parallel_tool_use": True},
        messages=ASK,
        **GREEDY,
    )
    calls = _tool_uses(msg)
    assert [c.name for c in calls] == ["get_time"]
    jsonschema.validate(calls[0].input, TIME["input_schema"])


def test_tool_choice_none_never_calls(client: anthropic.Anthropic):
    msg = client.messages.create(
        model="default", max_tokens=120, tools=[WEATHER], tool_choice={"type": "none"}, messages=ASK, **GREEDY
    )
    assert not _tool_uses(msg) and msg.stop_reason != "tool_use"


def test_tool_result_round_trip_continues_the_conversation(client: anthropic.Anthropic):
    first = client.messages.create(
        model="default", max_tokens=200, tools=[WEATHER], tool_choice={"type": "any"}, messages=ASK, **GREEDY
    )
    call = _tool_uses(first)[0]
    second = client.messages.create(
        model="default",
        max_tokens=100,
        tools=[WEATHER],
        tool_choice={"type": "none"},  # a 0.5B model happily calls again; make it answer from the result
        messages=[
            *ASK,
            {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": call.id, "content": "Sunny, 24 degrees Celsius"}
                ],
            },
        ],
        **GREEDY,
    )
    text = "".join(b.text for b in second.content if b.type == "text")
    # the model's answer quality is not under test (tool-history rendering is, in tests/unit/chat)
    assert second.stop_reason in ("end_turn", "max_tokens") and text.strip()
    assert not _tool_uses(second)


def test_streamed_tool_call_accumulates_to_the_json_answer(client: anthropic.Anthropic):
    params = dict(
        model="default", max_tokens=200, tools=[WEATHER], tool_choice={"type": "any"}, messages=ASK, **GREEDY
    )
    plain = client.messages.create(**params)
    partials = []
    with client.messages.stream(**params) as stream:
        for event in stream:
            if event.type == "input_json":
                partials.append(event.partial_json)
        final = stream.get_final_message()
    assert [b.type for b in final.content] == [b.type for b in plain.content]
    assert _tool_uses(final)[0].input == _tool_uses(plain)[0].input
    assert json.loads("".join(partials)) == _tool_uses(final)[0].input


WRITE = {
    "name": "write_file",
    "description": "Write text to a file",
    "input_schema": {
        "type": "object",
        "properties": {"path": {"type": "string"}, "content": {"type": "string"}},
        "required": ["path", "content"],
    },
}
WRITE_ASK = [{"role": "user", "content": "Save a one-sentence greeting for new users to welcome.txt."}]


def _streamed_input(client: anthropic.Anthropic, **params):
    """The input_json pieces and the final message."""
    pieces = []
    with client.messages.stream(
        model="default", tools=[WRITE], tool_choice={"type": "tool", "name": "write_file"}, **params, **GREEDY
    ) as stream:
        for event in stream:
            if event.type == "input_json":
                pieces.append(event.partial_json)
        return pieces, stream.get_final_message()


def test_a_tool_calls_input_streams_while_the_model_writes_it(client: anthropic.Anthropic):
    pieces, final = _streamed_input(client, max_tokens=300, messages=WRITE_ASK)
    call = _tool_uses(final)[0]
    assert final.stop_reason == "tool_use" and call.input["content"]
    # as the Anthropic API does: many deltas, each a piece of the text the model wrote, not one at the end
    assert len(pieces) >= 5 and not any(call.input["content"] in piece for piece in pieces)
    assert json.loads("".join(pieces)) == call.input


def test_a_tool_call_cut_by_max_tokens_still_ends_as_valid_json(client: anthropic.Anthropic):
    pieces, final = _streamed_input(client, max_tokens=24, messages=WRITE_ASK)
    plain = client.messages.create(
        model="default",
        max_tokens=24,
        tools=[WRITE],
        tool_choice={"type": "tool", "name": "write_file"},
        messages=WRITE_ASK,
        **GREEDY,
    )
    assert final.stop_reason == plain.stop_reason == "max_tokens"
    call = _tool_uses(final)[0]
    assert json.loads("".join(pieces)) == call.input == _tool_uses(plain)[0].input
    assert isinstance(call.input, dict) and call.input


SCHEMAS = [
    {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0, "maximum": 120}},
        "required": ["name", "age"],
        "additionalProperties": False,
    },
    {
        "type": "object",
        "properties": {"color": {"type": "string", "enum": ["red", "green", "blue"]}},
        "required": ["color"],
    },
    {
        "type": "object",
        "properties": {"items": {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 3}},
        "required": ["items"],
    },
    {
        "type": "object",
        "properties": {
            "point": {
                "type": "object",
                "properties": {"x": {"type": "number"}, "y": {"type": "number"}},
                "required": ["x", "y"],
            },
            "label": {"type": "string", "maxLength": 12},
        },
        "required": ["point", "label"],
    },
    {
        "type": "object",
        "properties": {"ok": {"type": "boolean"}, "score": {"type": "number", "minimum": -1, "maximum": 1}},
        "required": ["ok", "score"],
    },
]


def test_structured_output_matches_its_schema(client: anthropic.Anthropic):
    schema = SCHEMAS[0]
    msg = client.messages.create(
        model="default",
        max_tokens=120,
        messages=[{"role": "user", "content": "Invent a person. Reply in JSON."}],
        output_config={"format": {"type": "json_schema", "schema": schema}},
    )
    jsonschema.validate(json.loads(msg.content[0].text), schema)


@pytest.mark.parametrize("index", range(len(SCHEMAS)))
def test_constrained_tool_inputs_always_validate(client: anthropic.Anthropic, index: int):
    """40 sampled (temperature 1) generations per schema, 200 in all, four at a time: every one validates."""
    schema = SCHEMAS[index]
    tool = {"name": "record", "description": "Record the data", "input_schema": schema}
    rng = random.Random(index)

    def one(nonce: int):
        return client.messages.create(
            model="default",
            max_tokens=160,
            tools=[tool],
            tool_choice={"type": "tool", "name": "record"},
            messages=[{"role": "user", "content": f"Record something interesting #{nonce}."}],
            extra_body={"temperature": 1.0, "top_k": 40},
        )

    with ThreadPoolExecutor(4) as pool:
        messages = list(pool.map(one, [rng.randint(0, 10**6) for _ in range(40)]))
    for msg in messages:
        if msg.stop_reason == "max_tokens":
            continue  # a cut-off call cannot be complete; only finished calls must validate
        calls = _tool_uses(msg)
        assert calls, msg
        jsonschema.validate(calls[0].input, schema)
    assert sum(m.stop_reason == "tool_use" for m in messages) >= 30
