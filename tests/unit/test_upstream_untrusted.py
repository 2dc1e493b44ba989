"""Upstreams are untrusted (issue 22): credentials stay inside, reads are bounded, error text is cut,
and max_tokens holds whatever the upstream streams. No network: responses are built in memory."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import httpx
import pytest

from lmdock.upstream.budget import MAX_TOKEN_CHARS, OutputBudget
from lmdock.upstream.config import UpstreamConfigError, load_specs, parse_flag, public_url, spec_from_dict
from lmdock.upstream.errors import MAX_ERROR_TEXT, BadStream, client_error, parse_body
from lmdock.upstream.model import UpstreamModel
from lmdock.upstream.reading import capped_lines, read_capped, sse_chunks


def _run(coro):
    return asyncio.run(coro)


async def _pieces(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


def _response(*parts: bytes, headers: dict | None = None) -> httpx.Response:
    return httpx.Response(200, headers=headers or {}, content=_pieces(*parts))


async def _collect(iterator: AsyncIterator) -> list:
    return [item async for item in iterator]


# --- credentials ---------------------------------------------------------------------------------


def test_credentials_in_a_url_are_kept_apart_from_it():
    spec = spec_from_dict({"name": "x", "urls": ["http://alice:s%40cret@gpu1:8000/v1/", "http://gpu2:8000"]})
    assert spec.urls == ["http://gpu1:8000", "http://gpu2:8000"]
    assert spec.credentials == {"http://gpu1:8000": ("alice", "s@cret")}
    assert "cret" not in repr(spec)
    model = UpstreamModel(spec)
    assert model.upstream.nodes[0].auth == ("alice", "s@cret") and model.upstream.nodes[1].auth is None
    assert "cret" not in repr(model.upstream.nodes) and "cret" not in json.dumps(model.status())


def test_a_flag_replacing_a_files_urls_brings_its_credentials(tmp_path):
    path = tmp_path / "upstreams.toml"
    path.write_text('[[upstream]]\nname = "big"\nurls = ["http://u:old@x:1"]\n')
    (spec,) = load_specs(path, ["big=http://u:new@y:2"])
    assert spec.urls == ["http://y:2"] and spec.credentials == {"http://y:2": ("u", "new")}
    assert parse_flag("t=https://token@h").credentials == {"https://h": ("token", "")}


@pytest.mark.parametrize(
    "url",
    ["ftp://u:hunter2@x", "http://u:hunter2@x:99999", "http://u:hunter2@[::1", "http://u:hunter2@x/?a=b"],
)
def test_config_errors_never_show_a_password(url):
    with pytest.raises(UpstreamConfigError) as err:
        spec_from_dict({"name": "x", "urls": [url]})
    assert "hunter2" not in str(err.value)


def test_public_url_strips_user_info_only():
    assert public_url("http://u:p@h:1/a@b") == "http://h:1/a@b"
    assert public_url("https://h/x") == "https://h/x"


def test_health_without_urls():
    model = UpstreamModel(spec_from_dict({"name": "x", "urls": ["http://gpu1:8000"]}))
    assert "gpu1" in json.dumps(model.status())
    assert "gpu1" not in json.dumps(model.status(urls=False))
    assert model.status(urls=False)["nodes"][0]["state"] == "up"


# --- bounded reads -----------------------------------------------------------------------------


def test_a_body_over_the_cap_is_refused_while_it_streams():
    assert _run(read_capped(_response(b"a" * 10, b"b" * 10), 20)) == b"a" * 10 + b"b" * 10
    with pytest.raises(BadStream, match="oversized upstream response"):
        _run(read_capped(_response(*[b"x" * 10] * 100), 50))
    with pytest.raises(BadStream, match="oversized"):  # announced too large: not read at all
        _run(read_capped(_response(b"x", headers={"content-length": "1000"}), 50))


def test_lines_are_split_across_pieces_and_bounded():
    lines = _run(_collect(capped_lines(_response(b"data: 1\r\n\nda", b"ta: 2\n", b"tail"), cap=16)))
    assert lines == ["data: 1", "", "data: 2", "tail"]
    with pytest.raises(BadStream, match="oversized"):
        _run(_collect(capped_lines(_response(b"data: " + b"x" * 100), cap=16)))
    with pytest.raises(BadStream, match="oversized"):  # a long line inside one piece
        _run(_collect(capped_lines(_response(b"ok\n" + b"y" * 100 + b"\nok\n"), cap=16)))


def test_a_stream_event_nested_too_deeply_is_a_bad_stream_not_a_crash():
    event = b"data: " + b"[" * 5000 + b"]" * 5000 + b"\n\n"
    with pytest.raises(BadStream):  # a 502
        _run(_collect(sse_chunks(_response(event, headers={"content-type": "text/event-stream"}))))


def test_error_text_is_cut_to_about_a_kilobyte():
    body = {"error": {"message": "m" * 100_000}}
    err = client_error("up", 400, body, None)
    assert len(err.message) < MAX_ERROR_TEXT + 100
    assert len(parse_body(b"<html>" + b"z" * 100_000)) <= MAX_ERROR_TEXT
    assert parse_body(b"[" * 5000 + b"]" * 5000).startswith("[[")  # text, not a RecursionError


# --- max_tokens --------------------------------------------------------------------------------


def _chunk(content: str | None = None, finish: str | None = None, usage: dict | None = None) -> dict:
    delta = {} if content is None else {"content": content}
    out: dict = {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    if usage is not None:
        out = {"choices": [], "usage": usage}
    return out


async def _stream(chunks: list[dict], endless: str | None = None) -> AsyncIterator[dict]:
    for c in chunks:
        yield c
    while endless is not None:
        yield _chunk(endless)


def _limited(max_tokens: int | None, chunks: list[dict], endless: str | None = None) -> list[dict]:
    return _run(_collect(OutputBudget(max_tokens).limit(_stream(chunks, endless))))


def _text(chunks: list[dict]) -> str:
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c.get("choices"))


def test_an_upstream_that_ignores_max_tokens_is_cut_off():
    out = _limited(4, [_chunk("", None)], endless="tok")
    assert _text(out) == "tok" * 4 and out[-1]["choices"][0]["finish_reason"] == "length"


def test_megabytes_in_one_chunk_are_cut_to_the_budget():
    out = _limited(4, [_chunk("x" * 8_000_000)])
    assert len(_text(out)) == 4 * MAX_TOKEN_CHARS and out[-1]["choices"][0]["finish_reason"] == "length"


def test_a_well_behaved_upstream_keeps_its_finish_reason_and_usage():
    usage = {"prompt_tokens": 5, "completion_tokens": 3}
    chunks = [_chunk(""), _chunk("a"), _chunk("b"), _chunk("c"), _chunk(None, "length"), _chunk(usage=usage)]
    assert _limited(3, chunks) == chunks
    assert _limited(None, chunks) == chunks
    cut = _limited(2, chunks)  # one token too many: the usage after it is not waited for
    assert _text(cut) == "ab" and cut[-1]["choices"][0]["finish_reason"] == "length"


def test_chunks_without_output_after_the_budget_are_few():
    out = _limited(1, [_chunk("a")], endless="")
    assert _text(out) == "a" and len(out) <= 7 and out[-1]["choices"][0]["finish_reason"] == "length"


# --- chunk shapes ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "event",
    [
        {"choices": 5},
        {"choices": [5]},
        {"choices": [{"delta": {"content": ["x"]}}]},
        {"choices": [{"delta": {"tool_calls": [{"index": {}, "function": {"name": "f"}}]}}]},
        {"choices": [{"delta": {"tool_calls": [{"function": {"arguments": True}}]}}]},
        {"choices": [], "usage": {"prompt_tokens": "many"}},
        {"choices": [], "timings": {"cache_n": [1]}},
    ],
)
def test_a_chunk_of_the_wrong_shape_is_a_bad_stream(event):
    raw = b"data: " + json.dumps(event).encode() + b"\n\n"
    with pytest.raises(BadStream, match="cannot read"):
        _run(_collect(sse_chunks(_response(raw, headers={"content-type": "text/event-stream"}))))


def test_chunks_are_normalised_and_keep_what_lmdock_does_not_read():
    event = {"id": "x", "choices": [{"delta": {"content": "a\ud800"}}], "usage": {"prompt_tokens": "3"}}
    raw = b"data: " + json.dumps(event).encode() + b"\n\n"
    (chunk,) = _run(_collect(sse_chunks(_response(raw, headers={"content-type": "text/event-stream"}))))
    assert chunk == {"id": "x", "choices": [{"delta": {"content": "a\ufffd"}}], "usage": {"prompt_tokens": 3}}
