"""ChatFormatter: messages in the HF convention, system placement, stable prefixes, prefill, reasoning."""

from __future__ import annotations

import json

import pytest

from lmdock.chat import ChatFormatter, normalize_billing_header
from lmdock.core.request import ChatRequest, Message, ThinkingConfig, ToolCall, ToolChoice

from . import templates
from .helpers import TOOLS, feed, summary

ECHO = "{{ messages | tojson }}|{{ tools | tojson }}|{{ add_generation_prompt }}"


def req(messages, **kw) -> ChatRequest:
    return ChatRequest("m", messages, 100, **kw)


def history() -> list[Message]:
    return [
        Message("system", "x-anthropic-billing-header: cc_version=2.1; cch=a1b2c;\nYou are helpful."),
        Message("user", "Weather in Paris?"),
        Message("assistant", "", tool_calls=[ToolCall("toolu_abc", "get_weather", {"city": "Paris"})]),
        Message("tool", "18C and sunny", tool_call_id="toolu_abc"),
        Message("assistant", "It is 18C."),
        Message("system", "Reminder: be brief."),
        Message("user", "And the time?"),
    ]


def test_messages_follow_the_hf_convention():
    out = ChatFormatter(ECHO).render(
        req(history()[:4] + [Message("tool", "oops", tool_call_id="toolu_abc", is_error=True)], tools=TOOLS)
    )
    msgs, tools, gen = out.text.split("|")
    msgs = json.loads(msgs)
    assert msgs[2] == {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {
                "id": "toolu_abc",
                "type": "function",
                "function": {"name": "get_weather", "arguments": {"city": "Paris"}},
            }
        ],
    }
    assert msgs[3] == {
        "role": "tool",
        "content": "18C and sunny",
        "tool_call_id": "toolu_abc",
        "name": "get_weather",
    }
    assert msgs[4]["content"] == "Error: oops"
    assert [t["function"]["name"] for t in json.loads(tools)] == ["get_weather", "get_time"]
    assert json.loads(tools)[0] == {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": TOOLS[0].description,
            "parameters": TOOLS[0].parameters,
        },
    }
    assert gen == "True"


def test_no_tools_renders_none():
    assert ChatFormatter(ECHO).render(req([Message("user", "hi")])).text.split("|")[1] == "null"


def test_billing_header_is_pinned():
    text = "x-anthropic-billing-header: cc_version=2.1.3; cc_entrypoint=cli; cch=9f8e7;\nrest"
    assert (
        normalize_billing_header(text)
        == "x-anthropic-billing-header: cc_version=2.1.3; cc_entrypoint=cli; cch=fffff;\nrest"
    )
    assert normalize_billing_header("other cch=12345;") == "other cch=12345;"
    out = ChatFormatter(ECHO).render(req(history())).text
    assert "cch=fffff;" in out and "a1b2c" not in out


def test_chatml_fallback_describes_tools_and_writes_calls_as_json():
    formatter = ChatFormatter(None)
    assert (formatter.format_name, formatter.supports_tools) == ("generic", False)
    text = formatter.render(req(history(), tools=TOOLS)).text
    assert text.startswith("<|im_start|>system\nx-anthropic-billing-header")
    assert '"name": "get_weather"' in text and '{"tool_calls": [{"name": "get_weather"' in text
    assert '{"tool_response": {"tool_call_id": "toolu_abc"' in text
    assert text.endswith("<|im_start|>assistant\n")
    assert "<|im_start|>system\nReminder: be brief.<|im_end|>" in text


def test_strict_template_folds_system_text_into_user_turns():
    formatter = ChatFormatter(templates.STRICT, bos_token="<bos>")
    assert (
        not formatter.caps.system and not formatter.caps.mid_system and not formatter.caps.consecutive_users
    )
    text = formatter.render(req(history(), tools=TOOLS)).text
    assert text.startswith("<bos><start_of_turn>user\nx-anthropic-billing-header: cc_version=2.1; cch=fffff;")
    assert "You are helpful.\n\n" in text and "Weather in Paris?" in text
    assert "<start_of_turn>user\nReminder: be brief.\n\nAnd the time?<end_of_turn>" in text
    assert text.endswith("<start_of_turn>model\n")


@pytest.mark.parametrize("source", [None, templates.STRICT, templates.QWEN3, templates.MISTRAL])
def test_prefix_is_byte_stable_when_turns_are_appended(source):
    formatter = ChatFormatter(source)
    convo = history()
    for cut in (2, 4, 5, 7):
        first = formatter.render(req(convo[:cut], tools=TOOLS)).text
        later = (
            convo[: cut + 1] + [Message("user", "next")]
            if cut < len(convo)
            else convo + [Message("assistant", "Noon."), Message("user", "next")]
        )
        later[0] = Message("system", later[0].content.replace("a1b2c", "zz9zz"))  # cch changes every request
        assert formatter.render(req(later, tools=TOOLS)).text.startswith(
            first.removesuffix(_gen_prompt(source))
        )


def _gen_prompt(source: str | None) -> str:
    return {templates.STRICT: "<start_of_turn>model\n", templates.MISTRAL: ""}.get(
        source, "<|im_start|>assistant\n"
    )


def test_prefill_continues_the_assistant_text():
    out = ChatFormatter(templates.QWEN3).render(
        req([Message("user", "JSON?"), Message("assistant", '{"a":')])
    )
    assert out.text.endswith('<|im_start|>assistant\n{"a":') and out.grammar is None


def test_thinking_switch_and_open_reasoning():
    qwen3 = ChatFormatter(templates.QWEN3)
    assert qwen3.supports_thinking
    off = qwen3.render(req([Message("user", "hi")], thinking=ThinkingConfig(enabled=False)))
    assert off.text.endswith("<think>\n\n</think>\n\n") and not off.thinking_open

    r1 = ChatFormatter(templates.OPENS_THINK, bos_token="<bos>")
    opened = r1.render(req([Message("user", "hi")]))
    assert opened.text.endswith("<think>\n") and opened.thinking_open and r1.supports_thinking
    assert summary(feed(opened.new_parser, "hmm</think>Hello")) == [("think", "hmm"), ("text", "Hello")]
    closed = r1.render(req([Message("user", "hi")], thinking=ThinkingConfig(enabled=False)))
    assert closed.text.endswith("<think>\n\n</think>\n\n") and not closed.thinking_open


def test_mistral_history_ids_fit_the_template():
    formatter = ChatFormatter(templates.MISTRAL)
    text = formatter.render(req(history()[1:5], tools=TOOLS)).text
    assert formatter.format_name == "mistral" and '"id": "' in text and "toolu_abc" not in text


def test_tool_choice_none_parses_calls_as_text():
    out = ChatFormatter(templates.QWEN3).render(
        req([Message("user", "hi")], tools=TOOLS, tool_choice=ToolChoice("none"))
    )
    call = '<tool_call>{"name": "get_time", "arguments": {}}</tool_call>'
    assert out.grammar is None and summary(feed(out.new_parser, call)) == [("text", call)]


def test_each_request_gets_a_fresh_parser():
    out = ChatFormatter(templates.QWEN3).render(req([Message("user", "hi")], tools=TOOLS))
    first, second = out.new_parser(), out.new_parser()
    first.feed('<tool_call>{"name": "get_time", "arguments": {}}</tool_call>')
    assert first.tool_calls == 1 and second.tool_calls == 0


@pytest.mark.parametrize("source", [None, templates.STRICT, templates.QWEN3])
def test_system_message_after_a_user_turn_joins_it(source):
    """Claude Code sends [user, system(environment)]: the block must not become the last turn."""
    formatter = ChatFormatter(source)
    first = [
        Message("system", "Be useful."),
        Message("user", "Write hello.txt"),
        Message("system", "CWD: /tmp"),
    ]
    text = formatter.render(req(first)).text
    assert "Write hello.txt\n\n<system-reminder>\nCWD: /tmp\n</system-reminder>" in text
    later = [*first, Message("assistant", "Done."), Message("user", "Thanks")]
    assert formatter.render(req(later)).text.startswith(text.removesuffix(_gen_prompt(source)))
