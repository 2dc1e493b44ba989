"""Hermes / Qwen output: <tool_call> blocks, <think>, bare JSON calls, malformed and truncated calls."""

from __future__ import annotations

import pytest

from lmdock.chat.formats.hermes import HermesFormat
from lmdock.core.events import ToolCallArgsDelta, ToolCallEnd, ToolCallStart

from .helpers import check_invariants, parse_all_ways

QWEN3 = HermesFormat("{{ '<tool_call>' }}{{ '<think>' }}")
QWEN25 = HermesFormat("{{ '<tool_call>' }}")


def parse(text: str, fmt: HermesFormat = QWEN3, tools=("get_weather", "get_time"), opened: bool = False):
    return parse_all_ways(lambda: fmt.new_parser(tools, opened), text)


CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'


def test_plain_text_streams_untouched():
    assert parse("Hello, world!\n\nSecond line with <b>tags</b> and {braces}.") == [
        ("text", "Hello, world!\n\nSecond line with <b>tags</b> and {braces}.")
    ]


def test_text_then_call():
    assert parse("Let me check.\n" + CALL) == [
        ("text", "Let me check."),
        ("start", "get_weather"),
        ("call", {"city": "Paris"}),
    ]


def test_parallel_calls_and_marker_inside_a_string():
    second = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "a</tool_call>b"}}\n</tool_call>'
    assert parse(CALL + "\n" + second) == [
        ("start", "get_weather"),
        ("call", {"city": "Paris"}),
        ("start", "get_weather"),
        ("call", {"city": "a</tool_call>b"}),
    ]


def test_thinking_then_answer():
    assert parse("<think>\nLet me think.\n</think>\n\nThe answer.") == [
        ("think", "Let me think."),
        ("text", "The answer."),
    ]


def test_prompt_opened_thinking():
    assert parse("pondering</think>\n\n" + CALL, opened=True) == [
        ("think", "pondering"),
        ("start", "get_weather"),
        ("call", {"city": "Paris"}),
    ]


def test_a_partial_marker_is_held_back_then_released():
    assert parse("a <tool_ca is not a call") == [("text", "a <tool_ca is not a call")]
    assert parse("ends with <tool_ca") == [("text", "ends with <tool_ca")]


def test_bare_json_naming_a_declared_tool_is_a_call():
    assert parse('{"name": "get_weather", "arguments": {"city": "Oslo"}}') == [
        ("start", "get_weather"),
        ("call", {"city": "Oslo"}),
    ]
    assert parse('{"name": "get_time", "parameters": {}}') == [("start", "get_time"), ("call", {})]


def test_bare_json_in_a_fence_after_text():
    text = 'Calling:\n```json\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n```\n'
    assert parse(text) == [("text", "Calling:"), ("start", "get_weather"), ("call", {"city": "Oslo"})]


@pytest.mark.parametrize(
    "text",
    [
        '{"name": "unknown_tool", "arguments": {}}',
        'Config:\n{"debug": true, "level": 3}\nDone.',
        "int main() {\n  return 0;\n}\n{\n  x;\n}",
        '```json\n{"a": [1, 2]}\n```',
    ],
)
def test_other_json_and_code_stay_text(text):
    assert parse(text) == [("text", text.strip())]


def test_no_tools_declared_means_no_calls():
    assert parse(CALL, tools=()) == [("text", CALL)]


def test_truncated_call_is_repaired():
    assert parse('<tool_call>\n{"name": "get_weather", "arguments": {"city": "Par') == [
        ("start", "get_weather"),
        ("call", {"city": "Par"}),
    ]


def test_truncated_bare_call_is_repaired():
    assert parse('{"name": "get_weather", "arguments": {"city": "Be') == [
        ("start", "get_weather"),
        ("call", {"city": "Be"}),
    ]


def test_missing_brace_before_close_marker_is_repaired():
    text = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Rome"}\n</tool_call>\nmore'
    assert parse(text) == [("start", "get_weather"), ("call", {"city": "Rome"}), ("text", "more")]


@pytest.mark.parametrize(
    "text",
    [
        "<tool_call>\nnot json at all",
        "<tool_call>\nnot json</tool_call>",
        '<tool_call>{"arguments": {}}</tool_call>',
        "<tool_call>",
    ],
)
def test_unrepairable_call_becomes_text(text):
    assert parse(text) == [("text", text.strip())]


def test_arguments_given_as_a_json_string():
    text = '<tool_call>{"name": "get_weather", "arguments": "{\\"city\\": \\"Nice\\"}"}</tool_call>'
    assert parse(text) == [("start", "get_weather"), ("call", {"city": "Nice"})]


def test_function_tag_variant():
    assert parse('<function=get_weather>{"city": "Oslo"}</function>') == [
        ("start", "get_weather"),
        ("call", {"city": "Oslo"}),
    ]


def test_qwen25_has_no_reasoning_markers():
    assert parse("<think>x</think>", fmt=QWEN25) == [("text", "<think>x</think>")]


def _token_by_token(text: str, tokens: list[str]):
    """Feed `text` cut at the given token boundaries; the events each token produced, then finish's."""
    parser = QWEN3.new_parser(("get_weather", "get_time"), False)
    assert "".join(tokens) == text
    steps = [parser.feed(token) for token in tokens] + [parser.finish()]
    check_invariants([e for events in steps for e in events])
    return steps


def test_a_calls_arguments_stream_as_the_model_writes_them():
    tokens = [
        "<tool_call>",
        '\n{"name": "get_weather", "arguments": ',
        '{"',
        "city",
        '": "',
        "Par",
        "is",
        '"}}',
        "\n</tool_call>",
    ]
    steps = _token_by_token("".join(tokens), tokens)
    assert isinstance(steps[2][0], ToolCallStart) and steps[2][0].name == "get_weather"
    deltas = [[e.json for e in events if isinstance(e, ToolCallArgsDelta)] for events in steps]
    assert deltas[2:8] == [["{"], [], ['"city": "'], ["Par"], ["is"], ['"}']]
    ends = [e for events in steps for e in events if isinstance(e, ToolCallEnd)]
    assert [e.arguments for e in ends] == [{"city": "Paris"}]


def test_a_streamed_call_cut_short_closes_its_arguments():
    tokens = ["<tool_call>", '{"name": "get_weather", "arguments": {"city": "Par', 'is", "unit']
    steps = _token_by_token("".join(tokens), tokens)
    assert [e.json for e in steps[-1] if isinstance(e, ToolCallArgsDelta)] == ["}"]
    assert [e.arguments for e in steps[-1] if isinstance(e, ToolCallEnd)] == [{"city": "Paris"}]


def test_a_bare_call_streams_only_once_it_names_a_declared_tool():
    tokens = ['{"name": "get_weather", "arguments": {"city": "', "Lyon", '"}}']
    steps = _token_by_token("".join(tokens), tokens)
    assert [type(e).__name__ for e in steps[0]] == ["ToolCallStart", "ToolCallArgsDelta"]
    assert [e.json for e in steps[1]] == ["Lyon"]
    other = '{"name": "not_a_tool", "arguments": {"city": "Lyon"}}'
    assert parse(other) == [("text", other)]
