"""Hostile and careless input without a server: JSON limits, nested validation paths, limits, browser
safety rules, template time limit, malformed GGUF headers, the signing key's mode (issue 10)."""

from __future__ import annotations

import stat
import struct
import time
from pathlib import Path

import pytest

from lmdock.api.anthropic.convert import to_chat_request
from lmdock.api.anthropic.schema import MessageCreateParams, parse
from lmdock.api.limits import check_chat
from lmdock.api.openai.convert import to_chat_request as openai_chat_request
from lmdock.api.openai.schema import ChatCompletionParams
from lmdock.api.validation import validate_body
from lmdock.chat import template as template_module
from lmdock.chat.template import ChatTemplate, TemplateError
from lmdock.core import safejson
from lmdock.core.config import RequestLimits
from lmdock.core.errors import InvalidRequest, ModelLoadError
from lmdock.core.request import ChatRequest, Message, Tool
from lmdock.http.middleware import HostPolicy, _is_json, _same_origin
from lmdock.models.store import read_metadata, record_for

# --- parse time -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        (b"", "empty"),
        (b"  \n", "empty"),
        (b"[" * 10_000 + b"]" * 10_000, "nested too deeply"),
        (b"[" * 200 + b"]" * 200, "nested too deeply"),
        (b"1" * 4300, "more than 64 digits"),
        (b'{"a": 1e999}', "out of range"),
        (b'{"a": NaN}', "NaN"),
        (b'{"a": -Infinity}', "Infinity"),
        (b"\xff\xfe", "UTF-8"),
        (b"{not json", "not valid JSON"),
    ],
)
def test_json_limits_are_client_errors(raw, needle):
    with pytest.raises(InvalidRequest, match=needle) as err:
        safejson.loads(raw)
    assert err.value.status == 400


def test_lone_surrogates_become_replacement_characters():
    value = safejson.loads(b'{"\\ud800k": ["a\\udfffb", "\\ud83d\\ude00"]}')
    assert value == {"\ufffdk": ["a\ufffdb", "\U0001f600"]}  # a valid pair stays one character
    value["\ufffdk"][0].encode("utf-8")  # encodable everywhere downstream


def test_embedded_json_names_its_field():
    with pytest.raises(InvalidRequest) as err:
        safejson.loads("[" * 5000 + "]" * 5000, what="messages.1.tool_calls.0.function.arguments")
    assert err.value.message.startswith("messages.1.tool_calls.0.function.arguments: nested too deeply")
    assert err.value.param == "messages.1.tool_calls.0.function.arguments"


# --- nested validation --------------------------------------------------------------------------------


def _anthropic(*blocks, role="user", **extra):
    body = {
        "model": "m",
        "max_tokens": 5,
        "messages": [{"role": "user", "content": "hi"}, {"role": role, "content": list(blocks)}],
        **extra,
    }
    return to_chat_request(parse(MessageCreateParams, body))


@pytest.mark.parametrize(
    ("block", "role", "path"),
    [
        ({"type": "tool_result", "tool_use_id": "t", "content": 5}, "user", "messages.1.content.0.content"),
        (
            {"type": "tool_result", "tool_use_id": "t", "content": True},
            "user",
            "messages.1.content.0.content",
        ),
        (
            {"type": "tool_result", "tool_use_id": "t", "content": [{"type": "text", "text": 5}]},
            "user",
            "messages.1.content.0.content.0.text",
        ),
        ({"type": "document", "source": "abc"}, "user", "messages.1.content.0.source"),
        ({"type": "document", "source": [1, 2]}, "user", "messages.1.content.0.source"),
        (
            {"type": "document", "source": {"type": "content", "content": 5}},
            "user",
            "messages.1.content.0.source.content",
        ),
        (
            {"type": "search_result", "source": "s", "title": "t", "content": 5},
            "user",
            "messages.1.content.0.content",
        ),
        ({"type": "image"}, "user", "messages.1.content.0.source: Field required"),
        ({"text": "no type"}, "user", "messages.1.content.0.type: Field required"),
        (5, "user", "messages.1.content.0"),
        (
            {"type": "tool_use", "id": "t", "name": "n", "input": "[" * 5000 + "]" * 5000},
            "assistant",
            "messages.1.content.0.input",
        ),
        (
            {"type": "tool_use", "id": "t", "name": "n", "input": "{bad"},
            "assistant",
            "messages.1.content.0.input",
        ),
        (
            {"type": "tool_use", "id": "t", "name": "n", "input": "[1]"},
            "assistant",
            "messages.1.content.0.input",
        ),
        ({"type": "tool_use", "id": "t", "name": "n", "input": 3}, "assistant", "messages.1.content.0.input"),
        ({"type": "thinking", "thinking": 5}, "assistant", "messages.1.content.0.thinking"),
    ],
)
def test_wrong_nested_types_are_400s_naming_the_path(block, role, path):
    with pytest.raises(InvalidRequest) as err:
        _anthropic(block, role=role)
    assert err.value.message.startswith(path), err.value.message
    assert "instance of" not in err.value.message and "Block" not in err.value.message


def test_lenient_where_promised():
    req = _anthropic(
        {"type": "some_future_block", "whatever": [1, {"x": 2}]},
        {"type": "text", "text": "kept", "cache_control": {"type": "ephemeral"}, "new_field": 1},
        {"type": "image", "source": {"type": "new_source_kind", "ref": "x"}},
        {
            "type": "tool_result",
            "tool_use_id": "t",
            "content": [{"type": "future"}, {"type": "text", "text": "r"}],
        },
        context_management={"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
        unknown_top_level={"a": 1},
    )
    assert any("kept" in m.content for m in req.messages)
    assert any(m.role == "tool" and m.content == "r" for m in req.messages)


def test_non_ascii_signature_is_just_unverified():
    block = {"type": "thinking", "thinking": "hmm", "signature": "é☃\U0001f600"}
    assert _anthropic(block, role="assistant").messages[-1].reasoning is None


def test_tool_use_input_as_a_json_object_string_is_accepted():
    block = {"type": "tool_use", "id": "t", "name": "n", "input": '{"a": 1}'}
    assert _anthropic(block, role="assistant").messages[-1].tool_calls[0].arguments == {"a": 1}


def _openai_call(call):
    body = {
        "model": "m",
        "messages": [{"role": "user", "content": "x"}, {"role": "assistant", "tool_calls": [call]}],
    }
    return openai_chat_request(validate_body(ChatCompletionParams, body))


@pytest.mark.parametrize(
    ("call", "path"),
    [
        ({"id": "1", "type": "function", "function": "get_weather"}, "messages.1.tool_calls.0.function"),
        ({"id": "1", "type": "function", "function": 5}, "messages.1.tool_calls.0.function"),
        (
            {"id": "1", "type": "function", "function": {"name": "f", "arguments": 5}},
            "messages.1.tool_calls.0.function.arguments",
        ),
        (
            {"id": "1", "type": "function", "function": {"name": "f", "arguments": "[" * 5000 + "]" * 5000}},
            "messages.1.tool_calls.0.function.arguments: nested too deeply",
        ),
        (
            {"id": "1", "type": "function", "function": {"name": "f", "arguments": "[1]"}},
            "messages.1.tool_calls.0.function.arguments: must be a JSON object",
        ),
    ],
)
def test_openai_tool_calls_are_validated(call, path):
    with pytest.raises(InvalidRequest) as err:
        _openai_call(call)
    assert err.value.message.startswith(path), err.value.message


def test_openai_content_parts_are_validated_and_unknown_parts_ignored():
    body = {"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]}
    with pytest.raises(InvalidRequest, match=r"^messages\.0\.content\.0\.text"):
        validate_body(ChatCompletionParams, body)
    body["messages"][0]["content"] = [{"type": "future_part", "x": 1}, {"type": "text", "text": "ok"}]
    assert openai_chat_request(validate_body(ChatCompletionParams, body)).messages[0].content == "ok"
    call = {"id": "1", "function": {"name": "f", "arguments": "{}"}}  # `type` left out: still a function
    assert _openai_call(call).messages[1].tool_calls[0].name == "f"


# --- limits -------------------------------------------------------------------------------------------


def _deep_schema(levels: int) -> dict:
    schema: dict = {"type": "string"}
    for _ in range(levels):
        schema = {"type": "object", "properties": {"a": schema}}
    return schema


@pytest.mark.parametrize(
    ("req", "needle"),
    [
        (ChatRequest("m", [Message("user", "x")] * 11, 5), "messages: at most 10"),
        (ChatRequest("m", [], 5, tools=[Tool(f"t{i}") for i in range(4)]), "tools: at most 3"),
        (ChatRequest("m", [], 5, stop=["a"] * 5), "stop_sequences: at most 4"),
        (ChatRequest("m", [], 5, stop=["ok", "x" * 21]), "stop_sequences.1: a stop sequence may have"),
        (
            ChatRequest("m", [], 5, tools=[Tool("t", "", _deep_schema(300))]),
            "tools.0.input_schema: schema too",
        ),
        (
            ChatRequest("m", [], 5, tools=[Tool("t", "", {"enum": ["x" * 2000]})]),
            "tools.0.input_schema: schema too complex: ",
        ),
        (
            ChatRequest("m", [], 5, response_schema=_deep_schema(40)),
            "output_config.format.schema: schema too",
        ),
    ],
)
def test_limits_are_400s_naming_their_flag(req, needle):
    limits = RequestLimits(
        max_messages=10,
        max_tools=3,
        max_stop_sequences=4,
        max_stop_length=20,
        max_schema_depth=64,
        max_schema_bytes=1000,
    )
    with pytest.raises(InvalidRequest) as err:
        check_chat(req, limits)
    assert err.value.message.startswith(needle) and "--max-" in err.value.message


# --- browser safety rules -----------------------------------------------------------------------------


def test_host_policy():
    loopback = HostPolicy("127.0.0.1", ["my.box.lan"])
    for host in (
        "127.0.0.1:1234",
        "localhost:1234",
        "[::1]:1234",
        "LOCALHOST.",
        "app.localhost",
        "my.box.lan:80",
    ):
        assert loopback.allows(host), host
    for host in (
        "rebind.attacker.example",
        "rebind.attacker.example:1234",
        "10.0.0.5:1234",
        "localhost.evil.com",
    ):
        assert not loopback.allows(host), host
    assert HostPolicy("0.0.0.0", []).allows("anything.example")  # bound to the network: keys protect it
    assert not HostPolicy("0.0.0.0", ["server.lan"]).allows("anything.example")
    assert HostPolicy("127.0.0.1", ["*"]).allows("anything.example")


def test_origin_and_content_type_rules():
    assert _same_origin("http://127.0.0.1:1234", "127.0.0.1:1234")
    assert not _same_origin("http://127.0.0.1:1234", "127.0.0.1:9999")
    assert not _same_origin("null", "127.0.0.1:1234")
    assert _is_json("application/json; charset=utf-8") and _is_json("application/vnd.api+json")
    for bad in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"):
        assert not _is_json(bad)


# --- templates, model files, key files ----------------------------------------------------------------


def test_template_rendering_has_a_time_limit(monkeypatch):
    monkeypatch.setattr(template_module, "RENDER_SECONDS", 0.5)
    slow = ChatTemplate("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}x")
    started = time.monotonic()
    with pytest.raises(TemplateError, match="longer than"):
        slow.render(messages=[])
    assert time.monotonic() - started < 30
    with pytest.raises(TemplateError, match="repetition too large"):
        ChatTemplate("{{ 'x' * 100000000 }}").render()
    assert ChatTemplate("{{ 'ab' * 2 }}{{ messages | length }}").render(messages=[1]) == "abab1"


def _gguf(path: Path, kvs: list[bytes]) -> Path:
    path.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, len(kvs)) + b"".join(kvs) + b"\0" * 64)
    return path


def _key(name: str) -> bytes:
    return struct.pack("<Q", len(name)) + name.encode()


def _string(text: str) -> bytes:
    return struct.pack("<I", 8) + struct.pack("<Q", len(text)) + text.encode()


def _nested_arrays(depth: int) -> bytes:
    inner = struct.pack("<IQ", 4, 1) + struct.pack("<I", 7)
    for _ in range(depth):
        inner = struct.pack("<IQ", 9, 1) + inner
    return struct.pack("<I", 9) + inner


@pytest.mark.parametrize(
    "kvs",
    [
        [_key("general.alignment") + _string("not a number")],
        [_key("tokenizer.ggml.tokens") + _nested_arrays(5000)],
        [_key("tokenizer.ggml.tokens") + struct.pack("<IIQ", 9, 8, 1 << 60)],
        [_key("x") + struct.pack("<IQ", 8, 1 << 62)],
        [_key("general.architecture") + struct.pack("<IQ", 9, 1) + struct.pack("<IQ", 4, 0)],
    ],
)
def test_malformed_gguf_headers_make_an_unusable_entry(tmp_path: Path, kvs):
    path = _gguf(tmp_path / "bad.gguf", kvs)
    record = record_for(path)
    assert record.metadata.error  # never an exception out of a listing
    with pytest.raises(ModelLoadError):
        read_metadata(path)


def test_gguf_with_wrong_value_types_still_lists(tmp_path: Path):
    number = struct.pack("<II", 4, 7)
    path = _gguf(
        tmp_path / "odd.gguf", [_key("general.name") + number, _key("general.architecture") + number]
    )
    meta = record_for(path).metadata
    assert meta.error is None and meta.name is None and meta.architecture == "unknown"


def test_signing_key_is_created_private(tmp_path: Path, monkeypatch):
    from lmdock.api.anthropic import signature

    monkeypatch.setenv("LMDOCK_HOME", str(tmp_path))
    monkeypatch.delenv("LMDOCK_SIGNING_KEY", raising=False)
    signature._server_key.cache_clear()
    try:
        key = signature._server_key()
        path = tmp_path / "signing.key"
        assert path.read_bytes() == key and len(key) == 32
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert [p.name for p in tmp_path.iterdir()] == ["signing.key"]  # no temporary file left
        signature._server_key.cache_clear()
        assert signature._server_key() == key
    finally:
        signature._server_key.cache_clear()
