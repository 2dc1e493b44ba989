"""Against the default model's real template and tokenizer (skipped when the GGUF is not installed)."""

from __future__ import annotations

import warnings

import pytest

from lmdock.chat import ChatFormatter
from lmdock.core.request import ChatRequest, Message, ToolCall, ToolChoice
from lmdock.engine.constraint import special_tokens_of

from .helpers import TOOLS, accepts, feed, summary

CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'


@pytest.fixture(scope="module")
def template(real_vocab) -> str:
    return real_vocab.template


@pytest.fixture(scope="module")
def vocab(real_vocab):
    """(tokenize, llguidance tokenizer) of the real vocabulary."""
    from llguidance.llamacpp import lltokenizer_from_vocab

    with warnings.catch_warnings():  # llguidance calls a binding deprecated in 0.3.36, once per token
        warnings.simplefilter("ignore", DeprecationWarning)
        tok = lltokenizer_from_vocab(real_vocab.vocab)
    return real_vocab.tokenize, tok


def req(mode: str = "auto", **kw) -> ChatRequest:
    return ChatRequest(
        "m", [Message("user", "Weather in Paris?")], 100, tools=TOOLS, tool_choice=ToolChoice(mode), **kw
    )


def test_template_is_detected_as_hermes(template):
    formatter = ChatFormatter(template)
    assert formatter.format_name == "hermes"
    assert formatter.supports_tools and not formatter.supports_thinking
    assert formatter.caps.system and formatter.caps.mid_system and formatter.caps.consecutive_users


def test_tool_history_renders_like_the_model_was_trained(template):
    messages = [
        Message("system", "You are a coding agent."),
        Message("user", "Weather in Paris?"),
        Message("assistant", "Checking.", tool_calls=[ToolCall("toolu_1", "get_weather", {"city": "Paris"})]),
        Message("tool", "18C", tool_call_id="toolu_1"),
        Message("tool", "timeout", tool_call_id="toolu_1", is_error=True),
        Message("system", "Be brief."),
        Message("user", "Thanks"),
    ]
    text = ChatFormatter(template).render(ChatRequest("m", messages, 100, tools=TOOLS)).text
    assert text.startswith("<|im_start|>system\nYou are a coding agent.\n\n# Tools\n")
    assert '{"type": "function", "function": {"name": "get_weather", "description": "Current weather' in text
    assert "<|im_start|>assistant\nChecking.\n" + CALL + "<|im_end|>\n" in text
    assert (
        "<|im_start|>user\n<tool_response>\n18C\n</tool_response>\n<tool_response>\nError: timeout\n" in text
    )
    assert "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nThanks<|im_end|>\n" in text
    assert text.endswith("<|im_start|>assistant\n")
    appended = messages + [Message("assistant", "Bye."), Message("user", "More?")]
    assert ChatFormatter(template).render(ChatRequest("m", appended, 100, tools=TOOLS)).text.startswith(text)


def test_markers_are_special_tokens_in_llguidance(vocab):
    tokenize, tok = vocab
    special = special_tokens_of(tok)
    assert special["<tool_call>"] == tokenize("<tool_call>")[0] == 151657
    assert special["</tool_call>"] == 151658
    assert tok.is_special_token(151657)


@pytest.mark.parametrize("by_id", [False, True])
def test_grammar_accepts_what_qwen_emits(template, vocab, by_id):
    tokenize, tok = vocab
    formatter = ChatFormatter(template, special_tokens=special_tokens_of(tok) if by_id else None)
    for mode in ("auto", "any"):
        grammar = formatter.render(req(mode)).grammar
        assert accepts(tok, grammar, tokenize(CALL)), mode
        assert not accepts(tok, grammar, tokenize(CALL.replace('"Paris"', "7"))), mode
        assert not accepts(tok, grammar, tokenize(CALL.replace("get_weather", "get_wx"))), mode
    assert accepts(tok, formatter.render(req("auto")).grammar, tokenize("It is sunny."))
    assert not accepts(tok, formatter.render(req("any")).grammar, tokenize("It is sunny."))


def test_a_literal_marker_would_reject_the_real_token(template, vocab):
    tokenize, tok = vocab
    grammar = ChatFormatter(template, special_tokens={}).render(req("any")).grammar
    assert not accepts(tok, grammar, tokenize(CALL))


def test_prompt_tokenizes_without_bos_and_parser_reads_the_call(template, vocab):
    tokenize, _ = vocab
    rendered = ChatFormatter(template).render(req())
    assert tokenize(rendered.text)[0] == 151644  # <|im_start|>: the template emits no BOS
    assert summary(feed(rendered.new_parser, CALL)) == [("start", "get_weather"), ("call", {"city": "Paris"})]
