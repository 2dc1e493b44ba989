"""The OpenAI-compatible API through the official `openai` SDK, on the shared server and default model."""

from __future__ import annotations

import json

import httpx
import jsonschema
import numpy as np
import openai
import pytest

from tests.conftest import Server

MODEL = "qwen2.5-coder-0.5b-instruct"
GREEDY = {"temperature": 0.0}
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
ASK_WEATHER = [{"role": "user", "content": "What is the weather in Paris right now?"}]


@pytest.fixture(scope="module")
def lenient(server: Server) -> openai.OpenAI:
    """Without strict validation: completion stream chunks carry `finish_reason: null` (as OpenAI's
    do), which the SDK's type does not allow, and base64 embeddings are strings until the SDK decodes them."""
    return server.openai(strict=False)


@pytest.fixture(scope="module")
def oai(server: Server) -> openai.OpenAI:
    """The official SDK, validating every non-streamed response strictly against its own types."""
    return server.openai()


def test_models_list_parses(oai: openai.OpenAI):
    models = oai.models.list()
    assert MODEL in [m.id for m in models]
    assert all(m.object == "model" and m.owned_by for m in models)


def test_chat_completion(oai: openai.OpenAI):
    r = oai.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Say hello."}], max_tokens=20, **GREEDY
    )
    assert r.id.startswith("chatcmpl-") and r.object == "chat.completion" and r.model == MODEL
    choice = r.choices[0]
    assert choice.message.role == "assistant" and choice.message.content.strip()
    assert choice.finish_reason in ("stop", "length")
    assert r.usage.prompt_tokens > 5 and 0 < r.usage.completion_tokens <= 20
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_stream_adds_up_to_the_answer_and_reports_usage(oai: openai.OpenAI):
    params = dict(
        model=MODEL, messages=[{"role": "user", "content": "Name three colors."}], max_tokens=25, **GREEDY
    )
    plain = oai.chat.completions.create(**params)
    chunks = list(oai.chat.completions.create(stream=True, stream_options={"include_usage": True}, **params))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == plain.choices[0].finish_reason
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == plain.usage.completion_tokens
    assert len({c.id for c in chunks}) == 1


def test_stop_string_is_not_emitted(oai: openai.OpenAI):
    r = oai.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Count from 1 to 10, separated by commas."}],
        stop=["5"],
        max_tokens=60,
        **GREEDY,
    )
    assert r.choices[0].finish_reason == "stop"
    assert "5" not in r.choices[0].message.content and "4" in r.choices[0].message.content


def test_seed_makes_sampling_repeatable(oai: openai.OpenAI):
    params = dict(model=MODEL, messages=[{"role": "user", "content": "Write a word."}], max_tokens=12)
    # warm the prefix cache first: a cold prefill's logits differ in the last bits from a cached one's
    oai.chat.completions.create(seed=42, temperature=1.0, **params)
    first = oai.chat.completions.create(seed=42, temperature=1.0, **params)
    second = oai.chat.completions.create(seed=42, temperature=1.0, **params)
    assert first.choices[0].message.content == second.choices[0].message.content


@pytest.mark.parametrize(
    "tool_choice", ["auto", "required", {"type": "function", "function": {"name": "get_weather"}}]
)
def test_tool_choice_calls_the_tool(oai: openai.OpenAI, tool_choice):
    r = oai.chat.completions.create(
        model=MODEL, messages=ASK_WEATHER, tools=[WEATHER], tool_choice=tool_choice, max_tokens=80, **GREEDY
    )
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.id.startswith("call_") and call.type == "function" and call.function.name == "get_weather"
    assert "paris" in json.loads(call.function.arguments)["city"].lower()


def test_tool_choice_none_answers_in_text(oai: openai.OpenAI):
    r = oai.chat.completions.create(
        model=MODEL, messages=ASK_WEATHER, tools=[WEATHER], tool_choice="none", max_tokens=40, **GREEDY
    )
    assert r.choices[0].message.tool_calls is None and r.choices[0].finish_reason in ("stop", "length")


def test_parallel_tool_calls_false_allows_one_call(oai: openai.OpenAI):
    r = oai.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "What is the weather in Paris and in Tokyo?"}],
        tools=[WEATHER],
        tool_choice="required",
        parallel_tool_calls=False,
        max_tokens=120,
        **GREEDY,
    )
    assert len(r.choices[0].message.tool_calls) == 1


def test_streamed_tool_call_matches_the_json_answer(oai: openai.OpenAI):
    params = dict(
        model=MODEL, messages=ASK_WEATHER, tools=[WEATHER], tool_choice="required", max_tokens=80, **GREEDY
    )
    plain = oai.chat.completions.create(**params).choices[0].message.tool_calls[0]
    deltas = [
        tc
        for c in oai.chat.completions.create(stream=True, **params)
        if c.choices
        for tc in c.choices[0].delta.tool_calls or []
    ]
    assert deltas[0].id.startswith("call_") and deltas[0].function.name == "get_weather"
    assert json.loads("".join(d.function.arguments or "" for d in deltas)) == json.loads(
        plain.function.arguments
    )


def test_tool_result_round_trip(oai: openai.OpenAI):
    messages = ASK_WEATHER + [
        {
            "role": "assistant",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "Sunny, 24 degrees Celsius."},
    ]
    r = oai.chat.completions.create(
        model=MODEL, messages=messages, tools=[WEATHER], tool_choice="none", max_tokens=40, **GREEDY
    )
    # the 0.5B model's answer is not under test (tool-history rendering is, in tests/unit/chat)
    assert r.choices[0].message.content.strip() and r.choices[0].message.tool_calls is None
    assert r.choices[0].finish_reason in ("stop", "length") and r.usage.prompt_tokens > 40


def test_json_schema_output_validates(oai: openai.OpenAI):
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["name", "age"],
        "additionalProperties": False,
    }
    r = oai.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Invent a person."}],
        response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": schema}},
        max_tokens=60,
        **GREEDY,
    )
    jsonschema.validate(json.loads(r.choices[0].message.content), schema)


def test_json_object_output_is_an_object(oai: openai.OpenAI):
    r = oai.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Describe a cat in JSON."}],
        response_format={"type": "json_object"},
        max_tokens=60,
        **GREEDY,
    )
    assert isinstance(json.loads(r.choices[0].message.content), dict)


def test_completions_continue_a_raw_prompt(oai: openai.OpenAI):
    r = oai.completions.create(
        model=MODEL, prompt="def add(a, b):\n    return", max_tokens=8, echo=True, **GREEDY
    )
    assert r.object == "text_completion" and r.id.startswith("cmpl-")
    text = r.choices[0].text
    assert text.startswith("def add(a, b):\n    return") and "a + b" in text
    assert r.usage.completion_tokens <= 8 and r.choices[0].finish_reason in ("stop", "length")
    assert (
        oai.completions.create(model=MODEL, prompt="Once upon a time", **GREEDY).usage.completion_tokens <= 16
    )


def test_completions_stream_and_several_prompts(oai: openai.OpenAI, lenient: openai.OpenAI):
    params = dict(model=MODEL, prompt="The capital of France is", max_tokens=6, stop=["\n"], **GREEDY)
    plain = oai.completions.create(**params)
    chunks = list(lenient.completions.create(stream=True, stream_options={"include_usage": True}, **params))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == plain.choices[0].text
    assert chunks[-1].usage.completion_tokens == plain.usage.completion_tokens
    both = oai.completions.create(model=MODEL, prompt=["1, 2, 3,", "a, b, c,"], max_tokens=4, **GREEDY)
    assert [c.index for c in both.choices] == [0, 1] and "4" in both.choices[0].text


def test_embeddings_float_base64_and_tokens(oai: openai.OpenAI, lenient: openai.OpenAI):
    texts = ["The cat sits on the mat.", "A cat is sitting on a mat.", "Interest rates rose sharply."]
    floats = oai.embeddings.create(model=MODEL, input=texts, encoding_format="float")
    vectors = np.array([d.embedding for d in floats.data])
    assert vectors.shape == (3, 896) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-4)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2]
    assert floats.usage.prompt_tokens == floats.usage.total_tokens > 10
    decoded = lenient.embeddings.create(model=MODEL, input=texts[0])  # the SDK's default: base64
    assert np.allclose(decoded.data[0].embedding, vectors[0], atol=1e-6)
    tokens = oai.embeddings.create(model=MODEL, input=[[785, 8251]], encoding_format="float")
    assert len(tokens.data[0].embedding) == 896


def test_errors_use_the_openai_envelope(server: Server, oai: openai.OpenAI):
    with pytest.raises(openai.BadRequestError) as err:
        oai.chat.completions.create(model=MODEL, messages=[], max_tokens=5)
    assert err.value.param == "messages"
    with pytest.raises(openai.NotFoundError) as err:
        oai.chat.completions.create(model="no-such-model", messages=ASK_WEATHER, max_tokens=5)
    assert MODEL in err.value.message
    with pytest.raises(openai.BadRequestError) as err:
        oai.embeddings.create(model=MODEL, input="x", dimensions=3, encoding_format="float")
    assert err.value.param == "dimensions"
    r = httpx.post(
        f"{server.base_url}/v1/completions", content=b"{oops", headers={"content-type": "application/json"}
    )
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    r = httpx.post(
        f"{server.base_url}/v1/chat/completions", json={"model": MODEL, "messages": ASK_WEATHER, "top_p": 7}
    )
    assert r.status_code == 400 and r.json()["error"]["param"] == "top_p"
