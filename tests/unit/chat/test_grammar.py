"""Grammars for every family and tool_choice are valid llguidance grammars that accept what the
family's parser reads as the intended call, and reject wrong tools, bad arguments and extra calls."""

from __future__ import annotations

import json

import llguidance as llg
import pytest

from lmdock.chat.formats.base import ChatFormat
from lmdock.chat.formats.deepseek import DeepSeekFormat
from lmdock.chat.formats.generic import GenericFormat
from lmdock.chat.formats.granite import GraniteFormat
from lmdock.chat.formats.harmony import HarmonyFormat
from lmdock.chat.formats.hermes import HermesFormat
from lmdock.chat.formats.llama3 import Llama3Format
from lmdock.chat.formats.mistral import MistralFormat
from lmdock.core.errors import InvalidRequest
from lmdock.core.request import ChatRequest, Message, ThinkingConfig, ToolChoice
from lmdock.engine.constraint import special_tokens_of

from .claude_tools import CLAUDE_CODE_TOOLS, WRITE
from .helpers import TOOLS, ToyTokenizer, accepts, feed, summary

DS = (
    "<｜tool▁calls▁begin｜>",
    "<｜tool▁calls▁end｜>",
    "<｜tool▁call▁begin｜>",
    "<｜tool▁call▁end｜>",
    "<｜tool▁sep｜>",
)
HARMONY = ("<|channel|>", "<|message|>", "<|constrain|>", "<|start|>", "<|end|>", "<|call|>", "<|return|>")
TOY = ToyTokenizer(
    [
        "<|eos|>",
        "<tool_call>",
        "</tool_call>",
        "<think>",
        "</think>",
        "<|python_tag|>",
        "[TOOL_CALLS]",
        "[ARGS]",
        "[CALL_ID]",
        "[THINK]",
        "[/THINK]",
        "<|tool_call|>",
        *DS,
        *HARMONY,
    ]
)
TOK = TOY.llg()
SPECIAL = special_tokens_of(TOK)
PARIS = '{"city": "Paris"}'

# family -> (format, a correct one-call output as token pieces, a plain-text answer)
FAMILIES: dict[str, tuple[ChatFormat, list[str], list[str]]] = {
    "hermes": (
        HermesFormat("<tool_call><think>"),
        ["<tool_call>", '\n{"name": "get_weather", "arguments": ' + PARIS + "}\n", "</tool_call>"],
        ["Hi"],
    ),
    "llama3": (Llama3Format(""), ['{"name": "get_weather", "parameters": ' + PARIS + "}"], ["Hi"]),
    "mistral": (
        MistralFormat("[TOOL_CALLS]"),
        ["[TOOL_CALLS]", '[{"name": "get_weather", "arguments": ' + PARIS + ', "id": "abc123def"}]'],
        ["Hi"],
    ),
    "mistral_v11": (
        MistralFormat("[TOOL_CALLS][ARGS][THINK]"),
        ["[TOOL_CALLS]", "get_weather", "[ARGS]", PARIS],
        ["Hi"],
    ),
    "granite": (
        GraniteFormat("<think>"),
        ["<|tool_call|>", '[{"name": "get_weather", "arguments": ' + PARIS + "}]"],
        ["Hi"],
    ),
    "deepseek_r1": (
        DeepSeekFormat("```json <think>"),
        [DS[0], DS[2], "function", DS[4], "get_weather\n```json\n" + PARIS + "\n```", DS[3], DS[1]],
        ["Hi"],
    ),
    "deepseek_v3": (
        DeepSeekFormat("<think>"),
        [DS[0], DS[2], "get_weather", DS[4], PARIS, DS[3], DS[1]],
        ["Hi"],
    ),
    "harmony": (
        HarmonyFormat(""),
        [
            "<|channel|>",
            "commentary to=functions.get_weather ",
            "<|constrain|>",
            "json",
            "<|message|>",
            PARIS,
            "<|call|>",
        ],
        ["<|channel|>", "final", "<|message|>", "Hi"],
    ),
    "generic": (
        GenericFormat(""),
        ['{"tool_calls": [{"name": "get_weather", "arguments": ' + PARIS + "}]}"],
        ['{"response": "Hi"}'],
    ),
}


def request(
    mode: str = "auto", *, parallel: bool = True, name: str | None = None, tools=TOOLS, **kw
) -> ChatRequest:
    return ChatRequest(
        "m",
        [Message("user", "hi")],
        100,
        tools=list(tools),
        tool_choice=ToolChoice(mode, name, parallel),
        **kw,
    )


def grammar(family: str, req: ChatRequest, special=SPECIAL, opened: bool = False) -> str | None:
    return FAMILIES[family][0].grammar(req, special, opened)


def ok(g: str, parts: list[str]) -> bool:
    return accepts(TOK, g, TOY.ids(*parts))


def swap(parts: list[str], old: str, new: str) -> list[str]:
    return [p.replace(old, new) for p in parts]


def _grammar_cases():
    for family, (fmt, _, _) in FAMILIES.items():
        for special in ("ids", "names"):
            if special == "names" and family.startswith("mistral"):
                continue  # [TOOL_CALLS] cannot be referenced as <...>: ids are needed
            for opened in (False, True) if fmt.think else (False,):
                for mode in ("auto", "any", "tool", "none"):
                    for parallel in (True, False):
                        yield family, mode, parallel, opened, special


@pytest.mark.parametrize(("family", "mode", "parallel", "opened", "special"), list(_grammar_cases()))
def test_every_grammar_is_valid(family, mode, parallel, opened, special):
    fmt = FAMILIES[family][0]
    req = request(
        mode,
        parallel=parallel,
        name="get_weather" if mode == "tool" else None,
        thinking=ThinkingConfig(budget_tokens=64),
    )
    g = grammar(family, req, SPECIAL if special == "ids" else None, opened)
    if mode == "none" and fmt.think is None:
        assert g is None
        return
    assert g is not None
    assert llg.LLMatcher.validate_grammar(g, TOK) == ""


@pytest.mark.parametrize("family", FAMILIES)
def test_a_correct_call_is_accepted_and_parsed_back(family):
    fmt, call, _ = FAMILIES[family]
    for mode in ("any", "auto"):
        assert ok(grammar(family, request(mode)), call), mode
    assert summary(feed(lambda: fmt.new_parser(["get_weather", "get_time"], False), "".join(call))) == [
        ("start", "get_weather"),
        ("call", {"city": "Paris"}),
    ]


@pytest.mark.parametrize("family", FAMILIES)
def test_wrong_calls_are_rejected(family):
    _, call, text = FAMILIES[family]
    g = grammar(family, request("any"))
    assert not ok(g, swap(call, '"Paris"', "42")), "arguments must follow the tool's schema"
    assert not ok(g, swap(call, '"Paris"', '"Paris", "extra": 1')), "additionalProperties: false"
    assert not ok(g, swap(call, "get_weather", "get_wx")), "only declared tools"
    assert not ok(g, text), "`any` requires a call"
    assert ok(grammar(family, request("auto")), text), "`auto` allows an answer"


@pytest.mark.parametrize("family", FAMILIES)
def test_tool_choice_tool_narrows_to_that_tool(family):
    _, call, _ = FAMILIES[family]
    assert ok(grammar(family, request("tool", name="get_weather")), call)
    assert not ok(grammar(family, request("tool", name="get_time")), call)
    with pytest.raises(InvalidRequest):
        grammar(family, request("tool", name="nope"))


def _array_twice(call: list[str]) -> list[str]:
    return [call[0], call[1][:-1] + ", " + call[1][1:]]


# How each family writes two calls, from its one-call sample.
TWICE = {
    "hermes": lambda call: call + ["\n"] + call,
    "llama3": lambda call: call + ["\n"] + call,
    "mistral": _array_twice,
    "mistral_v11": lambda call: call + call,
    "granite": _array_twice,
    "deepseek_r1": lambda call: call[:-1] + call[1:],
    "deepseek_v3": lambda call: call[:-1] + call[1:],
    "generic": lambda call: [call[0][:-2] + ", " + call[0][len('{"tool_calls": [') : -2] + "]}"],
}


@pytest.mark.parametrize("family", TWICE)
def test_parallel_calls_and_disable_parallel(family):
    fmt, call, _ = FAMILIES[family]
    twice = TWICE[family](call)
    assert ok(grammar(family, request("any")), twice)
    assert not ok(grammar(family, request("any", parallel=False)), twice)
    assert ok(grammar(family, request("any", parallel=False)), call)
    assert [e[0] for e in summary(feed(lambda: fmt.new_parser(["get_weather"], False), "".join(twice)))] == [
        "start",
        "call",
        "start",
        "call",
    ]


def test_thinking_budget_forces_the_close_marker():
    g = grammar("hermes", request("auto", thinking=ThinkingConfig(budget_tokens=5)), opened=True)
    matcher = llg.LLMatcher(TOK, g, log_level=0)
    assert matcher.consume_tokens(TOY.ids("abcde"))
    assert matcher.compute_ff_tokens()[:1] == TOY.ids("</think>")
    assert ok(g, ["abc", "</think>", "Hi"]) and ok(g, ["abc", "</think>", *FAMILIES["hermes"][1]])


def test_optional_thinking_before_calls():
    g = grammar("hermes", request("any"))
    assert ok(g, ["<think>", "plan", "</think>", "\n", *FAMILIES["hermes"][1]])
    assert grammar("hermes", request("any", thinking=ThinkingConfig(enabled=False))).find("think") < 0


def test_no_constraint_needed():
    assert grammar("hermes", request("none")) is None
    assert grammar("hermes", request("auto", tools=[])) is None


def test_response_schema():
    schema = {"type": "object", "properties": {"answer": {"type": "integer"}}, "required": ["answer"]}
    g = grammar("hermes", request("none", response_schema=schema))
    assert ok(g, ['{"answer": 42}']) and not ok(g, ['{"answer": "x"}']) and not ok(g, ["Hi"])
    harmony = grammar("harmony", request("none", response_schema=schema))
    assert ok(harmony, ["<|channel|>", "final", "<|message|>", '{"answer": 1}'])


def test_markers_without_special_tokens_are_plain_strings():
    g = grammar("hermes", request("auto"), special={})
    call = '<tool_call>\n{"name": "get_weather", "arguments": ' + PARIS + "}\n</tool_call>"
    assert ok(g, ["Hi <tool there"]) and ok(g, ["Let me check. " + call])
    assert not ok(g, ["Let me check. " + call.replace('"Paris"', "42")])
    assert not ok(g, FAMILIES["hermes"][1]), "a literal never matches the special token"
    assert ok(grammar("hermes", request("any"), special={}), [call])


def test_claude_code_tools_compile_and_constrain():
    g = grammar("hermes", request("any", tools=CLAUDE_CODE_TOOLS))
    assert llg.LLMatcher.validate_grammar(g, TOK) == ""
    args = {"file_path": "/tmp/a.py", "content": 'print("hi")\n'}
    call = ["<tool_call>", json.dumps({"name": "Write", "arguments": args}), "</tool_call>"]
    assert ok(g, call)
    assert not ok(g, swap(call, '"file_path"', '"path"'))
    odd = [
        "<tool_call>",
        '{"name": "mcp__odd__tool", "arguments": {"id": "tmpx", "ref": "a b", "n": 3}}',
        "</tool_call>",
    ]
    assert ok(g, odd), "unsupported pattern/format keywords are dropped, not fatal"
    assert not ok(g, swap(odd, "3", '"3"'))
    assert ok(grammar("hermes", request("tool", name="Write", tools=[WRITE])), call)


def test_hermes_call_may_end_without_its_close_marker():
    """Qwen2.5-Coder-0.5B ends its turn right after the JSON about as often as it writes </tool_call>."""
    fmt, call, _ = FAMILIES["hermes"]
    unclosed = call[:2]
    assert ok(grammar("hermes", request("any")), unclosed)
    assert ok(grammar("hermes", request("auto")), unclosed + ["\n"] + call)
    assert summary(feed(lambda: fmt.new_parser(["get_weather"], False), "".join(unclosed))) == [
        ("start", "get_weather"),
        ("call", {"city": "Paris"}),
    ]


@pytest.mark.parametrize("family", ["hermes", "mistral", "granite", "deepseek_v3"])
def test_auto_holds_bare_json_calls_to_the_schema(family):
    g = grammar(family, request("auto"))
    bare = '{"name": "get_weather", "arguments": ' + PARIS + "}"
    assert ok(g, [bare]) and ok(g, ["```json\n" + bare + "\n```"]) and ok(g, ["\n```\n" + bare])
    assert not ok(g, [bare.replace('"Paris"', "1")]) and not ok(
        g, ["```json\n" + bare.replace("get_", "set_")]
    )
    assert ok(g, ["```python\nx = {}\n```"]) and ok(g, ["Use {braces} freely.\n{ok}"])
    assert not ok(g, ['{"not": "a call"}']), "with tools declared, an answer cannot open with a JSON object"
