"""Each family's parser on outputs in its own format, fed whole and character by character."""

from __future__ import annotations

import pytest

from lmdock.chat.formats import select_format
from lmdock.chat.formats.deepseek import DeepSeekFormat
from lmdock.chat.formats.generic import GenericFormat
from lmdock.chat.formats.granite import GraniteFormat
from lmdock.chat.formats.harmony import HarmonyFormat
from lmdock.chat.formats.hermes import HermesFormat
from lmdock.chat.formats.llama3 import Llama3Format
from lmdock.chat.formats.mistral import MistralFormat
from lmdock.core.events import ToolCallArgsDelta

from .helpers import check_invariants, parse_all_ways

NAMES = ("get_weather", "get_time")
PARIS = [("start", "get_weather"), ("call", {"city": "Paris"})]


def parse(fmt, text: str, opened: bool = False):
    return parse_all_ways(lambda: fmt.new_parser(NAMES, opened), text)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("{{ '<｜tool▁calls▁begin｜>' }} ```json", "deepseek_r1"),
        ("{{ '<｜tool▁calls▁begin｜>' }}", "deepseek_v3"),
        ("<|channel|>", "harmony"),
        ("<tool_call> <|start_header_id|>ipython<|end_header_id|>", "hermes"),
        ("<|tool_call|>", "granite"),
        ("[TOOL_CALLS]", "mistral"),
        ("<|start_header_id|>ipython<|end_header_id|>", "llama3"),
        ("{{ messages }}", "generic"),
    ],
)
def test_detection(source, expected):
    assert select_format(source, native_tools=False).name == expected


class TestLlama3:
    fmt = Llama3Format("<|start_header_id|>ipython<|end_header_id|>")

    def test_bare_json_call(self):
        assert parse(self.fmt, '{"name": "get_weather", "parameters": {"city": "Paris"}}') == PARIS

    def test_with_type_key_and_python_tag(self):
        text = '<|python_tag|>{"type": "function", "name": "get_weather", "parameters": {"city": "Paris"}}'
        assert parse(self.fmt, text) == PARIS

    def test_text_answer(self):
        assert parse(self.fmt, "It is sunny in {city}.") == [("text", "It is sunny in {city}.")]

    def test_truncated(self):
        assert parse(self.fmt, '{"name": "get_weather", "parameters": {"city": "Paris') == PARIS

    def test_builtin_python_call_stays_text(self):
        text = '<|python_tag|>brave_search.call(query="x")'
        assert parse(self.fmt, text) == [("text", text)]


class TestMistral:
    nemo = MistralFormat("[TOOL_CALLS] [AVAILABLE_TOOLS]")
    v11 = MistralFormat("[TOOL_CALLS] [ARGS] [THINK]")

    def test_array(self):
        text = 'Sure.[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Paris"}, "id": "abc123def"}]'
        assert parse(self.nemo, text) == [("text", "Sure."), *PARIS]

    def test_two_calls_in_array(self):
        text = (
            '[TOOL_CALLS] [{"name": "get_time", "arguments": {}}, '
            '{"name": "get_weather", "arguments": {"city": "Paris"}}]'
        )
        assert parse(self.nemo, text) == [("start", "get_time"), ("call", {}), *PARIS]

    def test_named_calls(self):
        text = (
            '[THINK]hmm[/THINK][TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}'
            "[TOOL_CALLS]get_time[CALL_ID]a1b2c3d4e[ARGS]{}"
        )
        assert parse(self.v11, text) == [("think", "hmm"), *PARIS, ("start", "get_time"), ("call", {})]

    def test_truncated_array(self):
        assert parse(self.nemo, '[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Paris"') == PARIS

    def test_garbage_after_marker(self):
        assert parse(self.nemo, "[TOOL_CALLS] oops") == [("text", "[TOOL_CALLS] oops")]

    def test_history_ids_are_nine_alphanumerics(self):
        mapped = self.nemo.history_call_id("toolu_01ABCDEFGHIJKLMNOPQRSTUV")
        assert len(mapped) == 9 and mapped.isalnum()
        assert mapped == self.nemo.history_call_id("toolu_01ABCDEFGHIJKLMNOPQRSTUV")


class TestGranite:
    fmt = GraniteFormat("<|tool_call|> <think>")

    def test_call_array(self):
        text = '<|tool_call|>[{"name": "get_weather", "arguments": {"city": "Paris"}}]'
        assert parse(self.fmt, text) == PARIS

    def test_thinking_and_response_tags(self):
        text = "<think>plan</think><response>Hello!</response>"
        assert parse(self.fmt, text) == [("think", "plan"), ("text", "Hello!")]


class TestDeepSeek:
    r1 = DeepSeekFormat("<｜tool▁calls▁begin｜> ```json <think>")
    v3 = DeepSeekFormat("<｜tool▁calls▁begin｜> <think>")

    def test_r1_call(self):
        text = (
            "ok</think>\n\n<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n"
            '```json\n{"city": "Paris"}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>'
        )
        assert parse(self.r1, text, opened=True) == [("think", "ok"), *PARIS]

    def test_v31_two_calls(self):
        text = (
            "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>get_weather"
            '<｜tool▁sep｜>{"city": "Paris"}<｜tool▁call▁end｜>'
            "<｜tool▁call▁begin｜>get_time<｜tool▁sep｜>{}<｜tool▁call▁end｜><｜tool▁calls▁end｜>"
        )
        assert parse(self.v3, text) == [*PARIS, ("start", "get_time"), ("call", {})]

    def test_spelling_variant_and_truncation(self):
        text = '<｜tool_calls_begin｜><｜tool▁call▁begin｜>get_weather<｜tool▁sep｜>{"city": "Paris'
        assert parse(self.v3, text) == PARIS

    def test_malformed(self):
        text = "<｜tool▁calls▁begin｜>nonsense<｜tool▁calls▁end｜>"
        assert parse(self.v3, text) == [("text", text)]


class TestHarmony:
    fmt = HarmonyFormat("<|channel|>")

    def test_analysis_then_final(self):
        text = (
            "<|channel|>analysis<|message|>Think.<|end|>"
            "<|start|>assistant<|channel|>final<|message|>Hi there."
        )
        assert parse(self.fmt, text) == [("think", "Think."), ("text", "Hi there.")]

    def test_tool_call(self):
        text = (
            "<|channel|>analysis<|message|>Need weather.<|end|><|start|>assistant<|channel|>commentary "
            'to=functions.get_weather <|constrain|>json<|message|>{"city": "Paris"}<|call|>'
        )
        assert parse(self.fmt, text) == [("think", "Need weather."), *PARIS]

    def test_recipient_in_header_and_truncated_args(self):
        text = '<|start|>assistant to=functions.get_weather<|channel|>commentary json<|message|>{"city": "Par'
        assert parse(self.fmt, text) == [("start", "get_weather"), ("call", {"city": "Par"})]

    def test_plain_text_without_headers(self):
        assert parse(self.fmt, "just text") == [("text", "just text")]


STREAMED_CALLS = [
    (
        HarmonyFormat("<|channel|>"),
        "<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>",
    ),
    (MistralFormat("[TOOL_CALLS] [ARGS]"), "[TOOL_CALLS]get_weather[ARGS]"),
    (
        Llama3Format("<|start_header_id|>ipython<|end_header_id|>"),
        '<|python_tag|>{"name": "get_weather", "parameters": ',
    ),
    (HermesFormat("<tool_call>"), '<tool_call>{"name": "get_weather", "arguments": '),
]


@pytest.mark.parametrize(("fmt", "head"), STREAMED_CALLS, ids=lambda v: getattr(v, "name", ""))
def test_a_call_streams_its_arguments_in_every_family_that_names_the_tool_first(fmt, head):
    parser = fmt.new_parser(NAMES, False)
    args = '{"city": "Paris, the capital of France"}'
    steps = [parser.feed(ch) for ch in head + args] + [parser.finish()]
    sent = [
        e.json
        for events in steps[: len(head) + len(args)]
        for e in events
        if isinstance(e, ToolCallArgsDelta)
    ]
    assert len(sent) > 20 and "".join(sent) == args  # character by character, before the call ends
    check_invariants([e for events in steps for e in events])


class TestGeneric:
    fmt = GenericFormat("{{ messages }}")

    def test_response_is_streamed_as_text(self):
        text = '{"response": "Line one\\nIt\'s \\"quoted\\" \\u00e9 \\ud83d\\ude00"}'
        assert parse(self.fmt, text) == [("text", 'Line one\nIt\'s "quoted" é 😀')]

    def test_tool_calls_envelope(self):
        text = '{"tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}]}'
        assert parse(self.fmt, text) == PARIS

    def test_single_tool_call_envelope(self):
        text = '{"tool_call": {"name": "get_weather", "arguments": {"city": "Paris"}}}'
        assert parse(self.fmt, text) == PARIS

    def test_truncated_response(self):
        assert parse(self.fmt, '{"response": "Half an ans') == [("text", "Half an ans")]

    def test_model_ignoring_the_json_instructions(self):
        assert parse(self.fmt, "Plain answer.") == [("text", "Plain answer.")]


def test_no_family_emits_calls_for_undeclared_json_names():
    for fmt in (HermesFormat("<tool_call>"), Llama3Format(""), GenericFormat("")):
        text = '{"name": "rm_rf", "arguments": {}}'
        assert parse(fmt, text) == [("text", text)]
