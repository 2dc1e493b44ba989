"""What an upstream sends, read within bounds: a body, a server-sent-events stream line by line, and
the stream's JSON chunks.

An upstream is another server, so its answers are untrusted input: a body or an SSE line larger than
the cap is refused (a BadStream, 502 "oversized upstream response") instead of being held in memory
whole, and nothing read is ever relayed to a client at full length.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx

from lmdock.upstream.chunks import checked_chunk, completion_as_chunk
from lmdock.upstream.errors import BadStream, error_message, upstream_json

MAX_BODY_BYTES = 16 << 20  # a JSON answer: a non-streamed completion, /tokenize, /apply-template, a probe
MAX_ERROR_BYTES = 1 << 20  # an error answer (its message is relayed cut to errors.MAX_ERROR_TEXT)
MAX_LINE_BYTES = 4 << 20  # one SSE line: a chunk may carry a whole tool call's arguments


def _oversized(what: str, cap: int) -> BadStream:
    return BadStream(f"oversized upstream response: {what} larger than {cap} bytes")


async def read_capped(response: httpx.Response, cap: int, what: str = "a body") -> bytes:
    """The whole body; a BadStream as soon as it is known to pass `cap` bytes."""
    length = response.headers.get("content-length", "")
    if length.isdigit() and int(length) > cap:
        raise _oversized(what, cap)
    body = bytearray()
    async for piece in response.aiter_bytes():
        body += piece
        if len(body) > cap:
            raise _oversized(what, cap)
    return bytes(body)


async def capped_lines(response: httpx.Response, cap: int = MAX_LINE_BYTES) -> AsyncIterator[str]:
    """The body's lines (split at LF, a trailing CR dropped), each at most `cap` bytes."""
    pending = bytearray()
    async for piece in response.aiter_bytes():
        pending += piece
        start = 0
        while (end := pending.find(b"\n", start)) >= 0:
            if end - start > cap:
                raise _oversized("an event line", cap)
            yield pending[start:end].rstrip(b"\r").decode(errors="replace")
            start = end + 1
        del pending[:start]
        if len(pending) > cap:
            raise _oversized("an event line", cap)
    if pending:
        yield pending.rstrip(b"\r").decode(errors="replace")


async def sse_chunks(response: httpx.Response) -> AsyncIterator[dict[str, Any]]:
    """The checked JSON payloads of an OpenAI-style SSE stream (or of one JSON answer, as one chunk)."""
    ctype = response.headers.get("content-type", "")
    if "json" in ctype:
        body = upstream_json(await read_capped(response, MAX_BODY_BYTES, "a JSON answer"), "a JSON answer")
        if not isinstance(body, dict) or not isinstance(body.get("choices"), list):
            raise BadStream(f"upstream answered JSON that is not a completion: {str(body)[:200]}")
        yield completion_as_chunk(body)
        return
    async for line in capped_lines(response):
        line = line.strip()
        if not line or line.startswith((":", "event:", "id:", "retry:")):
            continue
        if line.startswith("data:"):
            data = line[5:].strip()
        elif line.startswith("error:"):  # llama-server's form of an error mid-stream
            data = '{"error": ' + line[6:].strip() + "}"
        else:
            raise BadStream(f"upstream sent something that is not server-sent events: {line[:120]!r}")
        if data == "[DONE]":
            return
        obj = upstream_json(data, "an event")
        if not isinstance(obj, dict):
            raise BadStream(f"upstream sent an unexpected event: {data[:120]!r}")
        if "error" in obj and not obj.get("choices"):
            raise StreamErrorBody(obj)
        yield checked_chunk(obj)


class StreamErrorBody(Exception):
    def __init__(self, body: dict[str, Any]) -> None:
        super().__init__(error_message(body, "error"))
        self.body = body
