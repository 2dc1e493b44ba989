"""OpenAI request -> core request, core events -> OpenAI wire objects, validation messages."""

import json

import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from lmdock.api.openai.convert import to_chat_request
from lmdock.api.openai.encode import ChatEncoder
from lmdock.api.openai.schema import ChatCompletionParams
from lmdock.api.validation import validate_body
from lmdock.core import events as ev
from lmdock.core.errors import InvalidRequest

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


def _req(**body):
    return to_chat_request(validate_body(ChatCompletionParams, {"model": "m", **body}))


def _hi(**body):
    return _req(messages=[{"role": "user", "content": "hi"}], **body)


def test_history_with_tool_calls_and_content_parts():
    req = _req(
        messages=[
            {"role": "developer", "content": [{"type": "text", "text": "be brief"}]},
            {
                "role": "user",
                "content": [{"type": "text", "text": "look"}, {"type": "image_url", "image_url": {}}],
            },
            {
                "role": "assistant",
                "content": None,
                "reasoning_content": "need weather",
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        ],
        tools=[WEATHER],
    )
    system, user, assistant, tool = req.messages
    assert (system.role, system.content) == ("system", "be brief")
    assert user.content.startswith("look\n[image omitted")
    assert assistant.reasoning == "need weather"
    assert assistant.tool_calls[0].arguments == {"city": "Paris"}
    assert (tool.role, tool.tool_call_id, tool.name, tool.content) == (
        "tool",
        "call_1",
        "get_weather",
        "sunny",
    )


@pytest.mark.parametrize(
    ("choice", "mode", "name"),
    [
        (None, "auto", None),
        ("auto", "auto", None),
        ("none", "none", None),
        ("required", "any", None),
        ({"type": "function", "function": {"name": "get_weather"}}, "tool", "get_weather"),
    ],
)
def test_tool_choice_maps_to_core(choice, mode, name):
    body = {"tools": [WEATHER], "parallel_tool_calls": False}
    if choice is not None:
        body["tool_choice"] = choice
    req = _hi(**body)
    assert (req.tool_choice.mode, req.tool_choice.name, req.tool_choice.parallel) == (mode, name, False)


def test_no_tools_means_no_tool_calls():
    assert _hi().tool_choice.mode == "none"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"tool_choice": "required"}, "tool_choice"),
        (
            {"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "x"}}},
            "tool_choice.function.name",
        ),
        ({"n": 2}, "n"),
        ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
        ({"top_logprobs": 2}, "top_logprobs"),
        ({"temperature": 3}, "temperature"),
        ({"max_tokens": 0}, "max_tokens"),
    ],
)
def test_bad_requests_name_their_param(body, param):
    with pytest.raises(InvalidRequest) as err:
        _hi(**body)
    assert err.value.param == param and err.value.message.startswith(param.split(".")[0])


def test_invalid_tool_arguments_are_a_400():
    bad = {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{nope"}}
    with pytest.raises(InvalidRequest, match="not valid JSON"):
        _req(messages=[{"role": "assistant", "tool_calls": [bad]}])


def test_response_format_sampling_stop_and_limits():
    req = _hi(
        response_format={"type": "json_schema", "json_schema": {"name": "p", "schema": {"type": "integer"}}},
        temperature=0,
        top_k=5,
        seed=7,
        stop="END",
        max_completion_tokens=12,
    )
    assert req.response_schema == {"type": "integer"}
    assert (req.sampling.temperature, req.sampling.top_k, req.sampling.top_p, req.sampling.seed) == (
        0,
        5,
        None,  # unset: the model's default applies
        7,
    )
    assert req.stop == ["END"] and req.max_tokens == 12
    assert _hi(response_format={"type": "json_object"}).response_schema == {"type": "object"}
    assert _hi().max_tokens == 0  # the route allows the rest of the context


def test_reasoning_switches():
    assert _hi(reasoning_effort="none").thinking.enabled is False
    assert _hi(reasoning_effort="high").thinking.effort == "high"
    assert _hi(chat_template_kwargs={"enable_thinking": False}).thinking.enabled is False


def _events():
    return [
        ev.ThinkingDelta("hmm"),
        ev.TextDelta("Let me check."),
        ev.ToolCallStart(index=0, id="toolu_abc", name="get_weather"),
        ev.ToolCallArgsDelta(index=0, json='{"city": '),
        ev.ToolCallArgsDelta(index=0, json='"Paris"}'),
        ev.ToolCallEnd(index=0, arguments={"city": "Paris"}),
        ev.Done(stop_reason="tool_use", usage=ev.Usage(input_tokens=10, output_tokens=5, cached_tokens=4)),
    ]


def test_stream_chunks_add_up_to_the_completion():
    encoder = ChatEncoder("m", include_usage=True)
    chunks = [encoder.first_chunk()] + [c for e in _events() for c in encoder.feed(e)]
    wire = [ChatCompletionChunk.model_validate(c.model_dump(mode="json", exclude_unset=True)) for c in chunks]
    text = "".join(c.choices[0].delta.content or "" for c in wire if c.choices)
    args = "".join(
        tc.function.arguments or "" for c in wire if c.choices for tc in c.choices[0].delta.tool_calls or []
    )
    completion = ChatCompletion.model_validate(
        encoder.completion().model_dump(mode="json", exclude_unset=True)
    )
    message = completion.choices[0].message
    assert text == message.content == "Let me check."
    assert json.loads(args) == json.loads(message.tool_calls[0].function.arguments) == {"city": "Paris"}
    assert message.tool_calls[0].id == "call_abc"
    assert message.reasoning_content == "hmm"
    assert completion.choices[0].finish_reason == wire[-2].choices[0].finish_reason == "tool_calls"
    assert wire[-1].choices == [] and wire[-1].usage.prompt_tokens == 10
    assert wire[-1].usage.prompt_tokens_details.cached_tokens == 4
    assert all(c.usage is None for c in wire[:-1])
