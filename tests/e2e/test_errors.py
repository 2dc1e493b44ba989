"""Error envelopes, auth and limits against real server processes."""

from __future__ import annotations

import asyncio

import anthropic
import httpx
import pytest

from tests.conftest import Server, start_server

HI = [{"role": "user", "content": "hi"}]


def _assert_envelope(r: httpx.Response, status: int, kind: str) -> dict:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["type"] == "error" and body["error"]["type"] == kind and body["error"]["message"]
    assert r.headers["request-id"].startswith("req_") and body["request_id"] == r.headers["request-id"]
    return body


def test_unknown_route_is_404_envelope(server: Server):
    _assert_envelope(httpx.get(f"{server.base_url}/v1/nothing-here"), 404, "not_found_error")


def test_wrong_method_is_405_envelope(server: Server):
    _assert_envelope(httpx.get(f"{server.base_url}/v1/messages"), 405, "invalid_request_error")


def test_invalid_json_is_400(server: Server):
    r = httpx.post(
        f"{server.base_url}/v1/messages", content=b"{not json", headers={"content-type": "application/json"}
    )
    _assert_envelope(r, 400, "invalid_request_error")


def test_body_over_the_limit_is_413(tmp_path):
    srv = start_server(tmp_path, env={"LMDOCK_MAX_BODY_BYTES": "2048"})
    try:
        big = {"model": "default", "max_tokens": 5, "messages": [{"role": "user", "content": "x" * 5000}]}
        _assert_envelope(httpx.post(f"{srv.base_url}/v1/messages", json=big), 413, "request_too_large")

        # chunked upload without content-length is cut off too
        def chunks():
            for _ in range(10):
                yield b"x" * 1024

        r = httpx.post(f"{srv.base_url}/v1/messages", content=chunks())
        _assert_envelope(r, 413, "request_too_large")
        ok = httpx.post(
            f"{srv.base_url}/v1/messages",
            json={"model": "default", "max_tokens": 2, "messages": HI},
            timeout=120,  # the first generation loads the model
        )
        assert ok.status_code == 200
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory) -> Server:
    srv = start_server(tmp_path_factory.mktemp("auth"), "--api-key", "sk-one", "--api-key", "sk-two")
    yield srv
    srv.stop()


def test_auth_accepts_x_api_key_and_bearer(auth_server: Server):
    for kwargs in ({"api_key": "sk-one"}, {"auth_token": "sk-two"}):
        c = anthropic.Anthropic(
            base_url=auth_server.base_url, max_retries=0, _strict_response_validation=True, **kwargs
        )
        assert c.messages.create(model="default", max_tokens=2, messages=HI).usage.output_tokens > 0
        assert c.messages.count_tokens(model="default", messages=HI).input_tokens > 0


@pytest.mark.parametrize("headers", [{}, {"x-api-key": "wrong"}, {"authorization": "Bearer nope"}])
def test_auth_rejects_missing_or_wrong_keys(auth_server: Server, headers):
    r = httpx.post(
        f"{auth_server.base_url}/v1/messages",
        json={"model": "default", "max_tokens": 2, "messages": HI},
        headers=headers,
    )
    _assert_envelope(r, 401, "authentication_error")
    _assert_envelope(
        httpx.get(f"{auth_server.base_url}/v1/models", headers=headers), 401, "authentication_error"
    )


def test_auth_sdk_raises_authentication_error(auth_server: Server):
    c = auth_server.anthropic(api_key="bad", strict=False, timeout=600)
    with pytest.raises(anthropic.AuthenticationError):
        c.messages.create(model="default", max_tokens=2, messages=HI)


def test_health_is_open_with_auth_on(auth_server: Server):
    assert httpx.get(f"{auth_server.base_url}/health").status_code == 200


def test_non_loopback_bind_without_key_is_refused(tmp_path):
    with pytest.raises(RuntimeError, match="Refusing to serve"):
        start_server(tmp_path, "--host", "0.0.0.0")


def test_full_queue_is_529_with_retry_after_and_the_server_recovers(tmp_path):
    srv = start_server(tmp_path, "--parallel", "1", "--max-queue", "1")
    try:

        async def fire() -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=srv.base_url, timeout=300) as http:
                body = {
                    "model": "default",
                    "max_tokens": 64,
                    "messages": [{"role": "user", "content": "Write a long story about a dragon."}],
                }
                return await asyncio.gather(*[http.post("/v1/messages", json=body) for _ in range(6)])

        responses = asyncio.run(fire())
        statuses = sorted(r.status_code for r in responses)
        assert 200 in statuses and 529 in statuses, statuses
        rejected = next(r for r in responses if r.status_code == 529)
        _assert_envelope(rejected, 529, "overloaded_error")
        assert int(rejected.headers["retry-after"]) > 0
        assert rejected.headers["x-should-retry"] == "true"
        after = httpx.post(
            f"{srv.base_url}/v1/messages",
            json={"model": "default", "max_tokens": 2, "messages": HI},
            timeout=120,
        )
        assert after.status_code == 200
    finally:
        srv.stop()
