"""Hostile input against a real server (issue 10): malformed bodies are 4xx in the route's envelope,
abandoned streams free their sequences, web pages cannot drive the server, bad model files list."""

from __future__ import annotations

import json
import os
import shutil
import socket
import struct
import time
from pathlib import Path

import httpx
import pytest

from lmdock.models.default_model import default_model_path
from tests.conftest import DEFAULT_MODEL, Server, start_server

APP_ORIGIN = "http://app.example"
ADMIN = "adm-secret"
HI = [{"role": "user", "content": "hi"}]
POST_ROUTES = [
    "/v1/messages",
    "/v1/messages/count_tokens",
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
    "/api/v1/models/load",
    "/api/v1/models/unload",
    "/api/v1/models/download",
    "/v1/responses",
    "/v1/responses/input_tokens",
    "/v1/messages/batches",
]


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """The default model (hard-linked) plus a GGUF whose header is malformed."""
    models = tmp_path_factory.mktemp("hostile-store") / "models"
    target = default_model_path(models)
    target.parent.mkdir(parents=True)
    try:
        os.link(DEFAULT_MODEL, target)
    except OSError:
        shutil.copyfile(DEFAULT_MODEL, target)
    bad = models / "evil" / "Bad-GGUF" / "bad-q4_k_m.gguf"
    bad.parent.mkdir(parents=True)
    nested = struct.pack("<IQ", 4, 0)
    for _ in range(3000):  # arrays nested 3000 deep
        nested = struct.pack("<IQ", 9, 1) + nested
    key = b"tokenizer.ggml.tokens"
    bad.write_bytes(
        b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", len(key)) + key + b"\x09\0\0\0" + nested
    )
    return models


TRAP = (
    "import pathlib; pathlib.Path(__file__).with_name('IMPORTED').write_text(__name__); raise SystemExit(3)\n"
)


@pytest.fixture(scope="module")
def trap(tmp_path_factory) -> Path:
    """A directory whose modules shadow the ones the worker imports: the server is started in it."""
    folder = tmp_path_factory.mktemp("trap")
    (folder / "llama_cpp.py").write_text(TRAP)
    (folder / "lmdock").mkdir()
    (folder / "lmdock" / "__init__.py").write_text(TRAP)
    return folder


@pytest.fixture(scope="module")
def srv(tmp_path_factory, store: Path, trap: Path) -> Server:
    server = start_server(
        tmp_path_factory.mktemp("hostile"),
        "--cors-origin",
        APP_ORIGIN,
        "--admin-key",
        ADMIN,
        "--allowed-host",
        "my.box.lan",
        "--max-stop-sequences",
        "4",
        "--max-embedding-inputs",
        "4",
        env={"LMDOCK_MODELS_DIR": str(store)},
        cwd=trap,
    )
    yield server
    server.stop()


def _post(srv: Server, path: str, body, **headers) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"content-type": "application/json", "authorization": f"Bearer {ADMIN}", **headers}
    return httpx.post(srv.base_url + path, content=content, headers=headers, timeout=120)


def _error(r: httpx.Response, status: int) -> str:
    """The error message, after checking the status and the route's envelope."""
    assert r.status_code == status, r.text
    body = r.json()
    assert "Traceback" not in r.text
    if r.request.url.path.startswith(("/v1/chat/", "/v1/completions", "/v1/embeddings", "/v1/responses")):
        assert set(body) == {"error"} and body["error"]["message"]
        return body["error"]["message"]
    assert body["type"] == "error" and body["error"]["message"] and body["request_id"]
    return body["error"]["message"]


def _messages(*blocks, role="user") -> dict:
    return {"model": "default", "max_tokens": 1, "messages": [*HI, {"role": role, "content": list(blocks)}]}


def _chat(*messages) -> dict:
    return {"model": "default", "max_tokens": 1, "messages": [*HI, *messages]}


def _responses(*items, **extra) -> dict:
    return {
        "model": "default",
        "max_output_tokens": 1,
        "input": [{"role": "user", "content": "hi"}, *items],
        **extra,
    }


def _namespace(**fields) -> dict:
    return _responses(tools=[{"type": "namespace", **fields}])


DEEP = "[" * 5000 + "]" * 5000
DEEP_OBJECT = '{"a": ' * 900 + "1" + "}" * 900
CALL = {"type": "function_call", "call_id": "c1", "name": "f"}
ISSUE_CASES = [
    (
        "/v1/messages",
        _messages({"type": "tool_result", "tool_use_id": "t", "content": 5}),
        "messages.1.content.0.content",
    ),
    (
        "/v1/messages",
        _messages({"type": "tool_result", "tool_use_id": "t", "content": True}),
        "messages.1.content.0.content",
    ),
    ("/v1/messages", _messages({"type": "document", "source": "abc"}), "messages.1.content.0.source"),
    ("/v1/messages", _messages({"type": "document", "source": ["a"]}), "messages.1.content.0.source"),
    (
        "/v1/messages",
        _messages({"type": "document", "source": {"type": "content", "content": 5}}),
        "messages.1.content.0.source.content",
    ),
    (
        "/v1/messages",
        _messages({"type": "search_result", "source": "s", "title": "t", "content": 5}),
        "messages.1.content.0.content",
    ),
    ("/v1/messages", _messages({"type": "image"}), "messages.1.content.0.source"),
    (
        "/v1/messages",
        _messages({"type": "tool_use", "id": "t", "name": "n", "input": DEEP}, role="assistant"),
        "messages.1.content.0.input",
    ),
    (
        "/v1/messages",
        _messages({"type": "tool_use", "id": "t", "name": "n", "input": "{nope"}, role="assistant"),
        "messages.1.content.0.input",
    ),
    (
        "/v1/chat/completions",
        _chat({"role": "assistant", "tool_calls": [{"id": "c", "type": "function", "function": "f"}]}),
        "messages.1.tool_calls.0.function",
    ),
    (
        "/v1/chat/completions",
        _chat({"role": "assistant", "tool_calls": [{"id": "c", "type": "function", "function": 5}]}),
        "messages.1.tool_calls.0.function",
    ),
    (
        "/v1/chat/completions",
        _chat({"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": 5}}]}),
        "messages.1.tool_calls.0.function.arguments",
    ),
    (
        "/v1/chat/completions",
        _chat(
            {"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": DEEP}}]}
        ),
        "messages.1.tool_calls.0.function.arguments",
    ),
    (
        "/v1/messages",
        {**_messages({"type": "text", "text": "x"}), "stop_sequences": ["a", "b", "c", "d", "e"]},
        "stop_sequences: at most 4",
    ),
    ("/v1/embeddings", {"model": "default", "input": ["a"] * 5}, "input: at most 4"),
    # issue 22: the Responses API's input shapes that were 500s (or refused only after generating)
    ("/v1/responses", _responses({"type": "reasoning", "summary": 5}), "input.1.summary"),
    ("/v1/responses", _responses({"type": "reasoning", "summary": [], "content": True}), "input.1.content"),
    ("/v1/responses", _namespace(name="ns", tools=5), "tools.0.tools"),
    ("/v1/responses", _namespace(tools=[]), "tools.0.name"),
    ("/v1/responses", _namespace(name=5, tools=[]), "tools.0.name"),
    ("/v1/responses", _responses({**CALL, "arguments": DEEP_OBJECT}), "input.1.arguments"),
    ("/v1/responses", _responses({**CALL, "arguments": DEEP}), "input.1.arguments"),
    ("/v1/responses", _responses(reasoning={"effort": "ultra"}), "reasoning.effort"),
    ("/v1/responses", _responses(reasoning={"summary": "bogus"}), "reasoning.summary"),
    ("/v1/responses/input_tokens", _responses(reasoning={"effort": "ultra"}), "reasoning.effort"),
    (
        "/v1/responses",
        _responses(
            {"role": "user", "content": "a", "id": "m1"}, {"role": "user", "content": "b", "id": "m1"}
        ),
        "input.2.id",
    ),
    ("/v1/responses", {**_responses(), "stop": ["a", "b", "c", "d", "e"]}, "stop: at most 4"),
    ("/v1/messages/batches", {"requests": [{"custom_id": "a", "params": 5}]}, "requests.0.params"),
]


@pytest.mark.parametrize(("path", "body", "needle"), ISSUE_CASES)
def test_malformed_requests_are_400s_naming_the_field(srv: Server, path, body, needle):
    assert _error(_post(srv, path, body), 400).startswith(needle)


def test_signature_that_is_not_ascii_is_accepted(srv: Server):
    block = {"type": "thinking", "thinking": "hmm", "signature": "é☃"}
    assert _post(srv, "/v1/messages", _messages(block, role="assistant")).status_code == 200


@pytest.mark.parametrize("path", POST_ROUTES)
@pytest.mark.parametrize("raw", [b"", b"[" * 10_000 + b"]" * 10_000, b"1" * 4300, b'{"model": NaN}'])
def test_unparsable_bodies_are_400_on_every_route(srv: Server, path, raw):
    _error(_post(srv, path, raw), 400)


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/messages", _messages({"type": "text", "text": "a\ud800b"})),
        ("/v1/messages", {**_messages({"type": "text", "text": "x"}), "system": "sys \udc00"}),
        ("/v1/messages", _messages({"type": "tool_result", "tool_use_id": "t", "content": "r\ud800"})),
        (
            "/v1/messages/count_tokens",
            {
                "model": "default",
                "messages": [{"role": "user", "content": "\ud800"}],
                "tools": [{"name": "t", "input_schema": {"type": "object", "properties": {"\ud800": {}}}}],
            },
        ),
        ("/v1/chat/completions", _chat({"role": "user", "content": [{"type": "text", "text": "\ud800"}]})),
        ("/v1/completions", {"model": "default", "max_tokens": 1, "prompt": "x\ud800"}),
        ("/v1/embeddings", {"model": "default", "input": "x\ud800"}),
        ("/v1/responses", _responses({"role": "user", "content": "\udc00"})),
        (
            "/v1/messages/batches",
            {"requests": [{"custom_id": "s", "params": {**_messages({"type": "text", "text": "a\ud800"})}}]},
        ),
    ],
)
def test_lone_surrogates_are_replaced_not_fatal(srv: Server, path, body):
    raw = json.dumps(body).encode()  # json.dumps escapes them as \\udXXX, as JavaScript clients do
    assert b"\\ud" in raw
    r = _post(srv, path, raw)
    assert r.status_code == 200, r.text


def test_head_answers_like_get(srv: Server):
    for path in ("/health", "/v1/models", "/metrics"):
        get, head = httpx.get(srv.base_url + path), httpx.head(srv.base_url + path)
        assert head.status_code == get.status_code == 200 and head.content == b""
        assert head.headers["content-type"] == get.headers["content-type"]


def test_foreign_host_is_refused(srv: Server):
    for host in ("rebind.attacker.example", "rebind.attacker.example:80"):
        r = httpx.get(srv.base_url + "/v1/models", headers={"host": host})
        assert "not allowed" in _error(r, 403)
    assert httpx.get(srv.base_url + "/v1/models", headers={"host": "my.box.lan"}).status_code == 200
    assert httpx.get(srv.base_url + "/v1/models", headers={"host": "localhost:1"}).status_code == 200


def test_cross_origin_simple_posts_are_refused(srv: Server):
    count = {"model": "default", "messages": HI}
    for path, body in (
        ("/v1/messages/count_tokens", count),
        ("/api/v1/models/download", {"model": "evil/Repo-GGUF"}),
    ):
        r = _post(srv, path, body, origin="http://evil.example", **{"content-type": "text/plain"})
        assert r.status_code == 403 and "origin" in _error(r, 403)
        # even without a foreign Origin, a form-style content type is refused
        assert _error(_post(srv, path, body, **{"content-type": "text/plain"}), 415)
    r = _post(srv, "/v1/messages/count_tokens", count, origin="http://evil.example")
    assert r.status_code == 403 and "access-control-allow-origin" not in r.headers


def test_same_origin_and_allowed_origin_work(srv: Server):
    count = {"model": "default", "messages": HI}
    assert _post(srv, "/v1/messages/count_tokens", count, origin=srv.base_url).status_code == 200
    r = _post(srv, "/v1/messages/count_tokens", count, origin=APP_ORIGIN)
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == APP_ORIGIN


def test_preflight_for_an_allowed_origin_is_accepted(srv: Server):
    headers = {
        "origin": APP_ORIGIN,
        "access-control-request-method": "POST",
        "access-control-request-headers": "content-type,x-api-key,anthropic-version",
    }
    r = httpx.options(srv.base_url + "/v1/messages", headers=headers)
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == APP_ORIGIN
    foreign = httpx.options(
        srv.base_url + "/v1/messages", headers={**headers, "origin": "http://evil.example"}
    )
    assert foreign.status_code >= 400 and "access-control-allow-origin" not in foreign.headers


def test_management_routes_need_the_admin_key_and_inference_does_not(srv: Server):
    body = {"model": "qwen2.5-coder-0.5b-instruct", "estimate_only": True}
    for headers in ({}, {"authorization": "Bearer wrong"}, {"x-api-key": "nope"}):
        r = httpx.post(srv.base_url + "/api/v1/models/load", json=body, headers=headers)
        assert "admin key" in _error(r, 401)
    assert _post(srv, "/api/v1/models/load", body).status_code == 200
    r = httpx.post(srv.base_url + "/api/v1/models/load", json=body, headers={"x-api-key": ADMIN})
    assert r.status_code == 200
    sdk = srv.anthropic(api_key="anything", strict=False, timeout=600)
    assert sdk.messages.count_tokens(model="default", messages=HI).input_tokens > 0


def test_malformed_gguf_is_listed_as_unusable(srv: Server):
    native = httpx.get(srv.base_url + "/api/v1/models", timeout=60)
    assert native.status_code == 200
    bad = [m for m in native.json()["models"] if m["key"] == "bad"]
    assert bad and "nested" in bad[0]["error"]
    listed = srv.openai(api_key="x", strict=False, timeout=600).models.list()
    assert any(m.id == "bad" for m in listed.data)
    r = _post(srv, "/v1/messages", {**_messages({"type": "text", "text": "x"}), "model": "bad"})
    assert "nested" in _error(r, 400)


def _active(srv: Server) -> tuple[float, float]:
    lines = httpx.get(srv.base_url + "/metrics").text.splitlines()

    def value(name: str) -> float:
        return sum(float(line.rsplit(" ", 1)[1]) for line in lines if line.startswith(name + "{"))

    return value("lmdock_active_sequences"), value("lmdock_queue_depth")


@pytest.mark.parametrize("path", ["/v1/messages", "/v1/chat/completions", "/v1/completions"])
def test_streams_abandoned_before_the_response_free_their_sequences(srv: Server, path):
    body = {"model": "default", "max_tokens": 100000, "stream": True}
    if path == "/v1/completions":
        body["prompt"] = "Once upon a time, a very long story began:"
    else:
        body["messages"] = [{"role": "user", "content": "Write a very long story about dragons."}]
    raw = json.dumps(body).encode()
    head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    port = int(srv.base_url.rsplit(":", 1)[1])
    for _ in range(20):
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(f"{head}Content-Length: {len(raw)}\r\n\r\n".encode() + raw)
    deadline = time.monotonic() + 120  # a bound for a broken build, not a timing assertion
    time.sleep(0.5)
    while _active(srv) != (0, 0):
        assert time.monotonic() < deadline, f"sequences still running: {_active(srv)}"
        time.sleep(0.5)
    r = _post(srv, "/v1/messages", {"model": "default", "max_tokens": 2, "messages": HI})
    assert r.status_code == 200 and r.json()["usage"]["output_tokens"] > 0


def _deep_schema(levels: int) -> dict:
    """A schema nested 2 * `levels` JSON levels deep."""
    schema: dict = {"type": "string"}
    for _ in range(levels):
        schema = {"type": "object", "properties": {"a": schema}}
    return schema


def test_batch_requests_over_the_limits_are_errored_and_never_run(srv: Server):
    """The same limits as /v1/messages (this server allows 4 stop sequences): each over-limit request
    is an `errored` result naming its limit; the good one beside them runs."""
    good = {"model": "default", "max_tokens": 1, "messages": HI}
    bad = {
        "stops": {**good, "stop_sequences": ["a", "b", "c", "d", "e"]},
        "long-stop": {**good, "stop_sequences": ["x" * 300]},
        "deep-schema": {**good, "tools": [{"name": "t", "input_schema": _deep_schema(35)}]},
    }
    requests = [{"custom_id": "good", "params": good}] + [
        {"custom_id": k, "params": v} for k, v in bad.items()
    ]
    sdk = srv.anthropic()
    batch = sdk.messages.batches.create(requests=requests)
    deadline = time.monotonic() + 300  # a bound for a broken build, not a timing assertion
    while sdk.messages.batches.retrieve(batch.id).processing_status != "ended":
        assert time.monotonic() < deadline
        time.sleep(0.5)
    results = {r.custom_id: r.result for r in sdk.messages.batches.results(batch.id)}
    assert results["good"].type == "succeeded"
    needles = {
        "stops": "stop_sequences: at most 4",
        "long-stop": "stop_sequences.0: a stop sequence may have at most 256",
        "deep-schema": "tools.0.input_schema: schema too complex",
    }
    for custom_id, needle in needles.items():
        result = results[custom_id]
        assert result.type == "errored", (custom_id, result)
        assert result.error.error.message.startswith(needle), result.error.error.message


@pytest.mark.parametrize("name", ["a" * 256, "b" * 300 + ".js", "c" * 5000], ids=len)
def test_static_routes_answer_long_names_with_404(srv: Server, name: str):
    for method in ("GET", "HEAD"):
        r = httpx.request(method, f"{srv.base_url}/_app/{name}")
        assert r.status_code == 404, r.text


def test_the_worker_imports_nothing_from_the_servers_directory(srv: Server, trap: Path):
    """The model's worker and the CPU self-check's probe ran (the model answers) without importing the
    `llama_cpp.py` and `lmdock/` lying in the directory the server was started in."""
    r = _post(srv, "/v1/messages", {"model": "default", "max_tokens": 2, "messages": HI})
    assert r.status_code == 200, r.text
    assert not (trap / "IMPORTED").exists() and not (trap / "lmdock" / "IMPORTED").exists()
