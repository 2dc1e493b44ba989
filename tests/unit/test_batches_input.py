"""Message Batches take the same input rules as /v1/messages (issue 22): the body through the one safe
JSON reader, each request's params through the same validation and the same per-request limits."""

from __future__ import annotations

import json

import pytest

from lmdock.api.anthropic.batches.schema import parse_params, read_body, validate_create
from lmdock.core import safejson
from lmdock.core.config import RequestLimits
from lmdock.core.errors import InvalidRequest

LIMITS = RequestLimits()


def _params(**extra) -> dict:
    return {"model": "default", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}], **extra}


def _deep_schema(levels: int) -> dict:
    """A schema nested 2 * `levels` JSON levels deep."""
    schema: dict = {"type": "string"}
    for _ in range(levels):
        schema = {"type": "object", "properties": {"a": schema}}
    return schema


def _errors(*params: dict) -> list[dict | None]:
    requests = [{"custom_id": f"r{i}", "params": p} for i, p in enumerate(params)]
    return [r.error for r in validate_create({"requests": requests}, lambda name: name, LIMITS)]


@pytest.mark.parametrize(
    ("params", "needle"),
    [
        (_params(stop_sequences=[f"s{i}" for i in range(17)]), "stop_sequences: at most 16 stop sequences"),
        (_params(stop_sequences=["x" * 300]), "stop_sequences.0: a stop sequence may have at most 256"),
        (
            _params(tools=[{"name": "t", "input_schema": _deep_schema(35)}]),
            "tools.0.input_schema: schema too complex",
        ),
        (
            _params(output_config={"format": {"type": "json_schema", "schema": _deep_schema(35)}}),
            "output_config.format.schema: schema too complex",
        ),
    ],
)
def test_an_over_limit_request_is_errored_naming_the_limit(params, needle):
    good, bad = _errors(_params(), params)
    assert good is None
    assert bad["error"]["type"] == "invalid_request_error"
    assert bad["error"]["message"].startswith(needle)


def test_the_runner_checks_the_limits_again():
    """A request stored before the server restarted with stricter flags never reaches the engine."""
    params = _params(stop_sequences=["a", "b", "c"])
    parse_params(params, LIMITS)
    with pytest.raises(InvalidRequest, match="--max-stop-sequences"):
        parse_params(params, RequestLimits(max_stop_sequences=2))


@pytest.mark.parametrize(
    "raw",
    [
        b'{"requests": ' + b"[" * 10_000 + b"]" * 10_000 + b"}",
        b"",
        b'{"requests": [{"custom_id": "a", "params": {"max_tokens": NaN}}]}',
        b'{"requests": [{"custom_id": "a", "params": {"max_tokens": ' + b"1" * 4300 + b"}}]}",
        b"\xff\xfe",
    ],
)
def test_a_malformed_body_is_a_client_error(raw):
    with pytest.raises(InvalidRequest):
        read_body(raw)


def test_params_may_nest_as_deep_as_a_messages_body_and_no_deeper():
    def body(depth: int) -> bytes:
        value: object = "x"
        for _ in range(depth - 1):  # the params object itself is the last level
            value = {"a": value}
        return json.dumps({"requests": [{"custom_id": "a", "params": {"metadata": value}}]}).encode()

    read_body(body(safejson.MAX_DEPTH))  # as deep as /v1/messages takes a body
    with pytest.raises(InvalidRequest, match="nested too deeply"):
        read_body(body(safejson.MAX_DEPTH + 1))


def test_lone_surrogates_are_replaced_as_in_messages():
    raw = json.dumps({"requests": [{"custom_id": "a", "params": _params(system="sys \udc00")}]}).encode()
    assert b"\\udc00" in raw
    body = read_body(raw)
    assert body["requests"][0]["params"]["system"] == "sys \ufffd"
    (request,) = validate_create(body, lambda name: name, LIMITS)
    request.params.encode()  # storable: what SQLite refused with a UnicodeEncodeError
