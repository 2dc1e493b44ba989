"""Anthropic request -> core request conversion and validation messages."""

import pytest

from lmdock.api.anthropic.convert import to_chat_request
from lmdock.api.anthropic.schema import CountTokensParams, MessageCreateParams, parse
from lmdock.api.anthropic.signature import sign_thinking
from lmdock.core.errors import InvalidRequest


def _req(**body):
    return to_chat_request(parse(MessageCreateParams, {"model": "m", "max_tokens": 10, **body}))


def test_tool_history_maps_to_template_conventions():
    req = _req(
        system=[{"type": "text", "text": "sys"}],
        tools=[{"name": "get_weather", "input_schema": {"type": "object", "properties": {}}}],
        messages=[
            {"role": "user", "content": "weather?"},
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": "Checking."},
                    {
                        "type": "tool_use",
                        "id": "toolu_1",
                        "name": "get_weather",
                        "input": {"location": "Paris"},
                    },
                ],
            },
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "toolu_1",
                        "content": [{"type": "text", "text": "sunny"}],
                    },
                    {"type": "text", "text": "and tomorrow?"},
                ],
            },
        ],
    )
    roles = [m.role for m in req.messages]
    assert roles == ["system", "user", "assistant", "tool", "user"]
    assert req.messages[2].tool_calls[0].arguments == {"location": "Paris"}
    assert req.messages[3].content == "sunny" and req.messages[3].name == "get_weather"
    assert req.tool_choice.mode == "auto"


def test_consecutive_same_role_turns_merge():
    req = _req(messages=[{"role": "user", "content": "a"}, {"role": "user", "content": "b"}])
    assert [m.content for m in req.messages] == ["a\n\nb"]


def test_thinking_in_history_is_kept_only_with_a_valid_signature():
    good = {"type": "thinking", "thinking": "hmm", "signature": sign_thinking("hmm")}
    bad = {"type": "thinking", "thinking": "edited", "signature": "forged"}
    for block, expected in ((good, "hmm"), (bad, None)):
        req = _req(messages=[{"role": "user", "content": "q"}, {"role": "assistant", "content": [block]}])
        assert req.messages[1].reasoning == expected


def test_tool_choice_variants():
    tools = [{"name": "a", "input_schema": {"type": "object"}}]
    msgs = [{"role": "user", "content": "x"}]
    assert _req(messages=msgs, tools=tools, tool_choice={"type": "any"}).tool_choice.mode == "any"
    tc = _req(
        messages=msgs,
        tools=tools,
        tool_choice={"type": "tool", "name": "a", "disable_parallel_tool_use": True},
    )
    assert (tc.tool_choice.mode, tc.tool_choice.name, tc.tool_choice.parallel) == ("tool", "a", False)
    with pytest.raises(InvalidRequest, match="not in tools"):
        _req(messages=msgs, tools=tools, tool_choice={"type": "tool", "name": "b"})


def test_unset_sampling_stays_unset_for_the_model_defaults():
    """Not the Messages API's documented temperature 1.0: the model layer fills in the model's defaults."""
    req = _req(messages=[{"role": "user", "content": "x"}])
    assert req.sampling.explicit() == {}
    req = _req(messages=[{"role": "user", "content": "x"}], temperature=0, top_k=3)
    assert req.sampling.explicit() == {"temperature": 0, "top_k": 3}


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "bot", "content": "x"}]}, "messages.0.role"),
        ({"max_tokens": 0, "messages": [{"role": "user", "content": "x"}]}, "max_tokens"),
    ],
)
def test_validation_messages_name_the_field(body, needle):
    with pytest.raises(InvalidRequest) as err:
        parse(MessageCreateParams, {"model": "m", "max_tokens": 10, **body})
    assert err.value.message.startswith(needle)


def test_count_tokens_needs_no_max_tokens():
    params = parse(CountTokensParams, {"model": "m", "messages": [{"role": "user", "content": "x"}]})
    assert to_chat_request(params).messages[0].content == "x"
