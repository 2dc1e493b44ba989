"""Upstream failures in lmdock's error classes, and upstream error bodies mapped to the client's envelope.

Context overflow is recognised in the wording of llama-server, vLLM, SGLang and lmdock and becomes
Claude Code's exact `prompt is too long: N tokens > M maximum`. When only `max_tokens` is too large for
what is left of the context, the caller retries with `max_tokens` clamped (as lmdock does locally).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from lmdock.core import safejson
from lmdock.core.errors import InvalidRequest, LmdockError, PromptTooLong


class UpstreamError(LmdockError):
    """The upstream answered something lmdock cannot use (an error of its own, or garbage)."""

    status = 502
    kind = "api_error"


class UpstreamTimeout(LmdockError):
    """The upstream did not answer (or stopped streaming) within the configured timeout."""

    status = 504
    kind = "timeout_error"


class BadStream(UpstreamError):
    """The upstream's response is not the SSE / JSON it should be."""


@dataclass
class Overflow:
    prompt_tokens: int | None
    n_ctx: int | None


_CTX_PATTERNS = [
    # lmdock
    re.compile(r"prompt is too long: (?P<prompt>\d+) tokens > (?P<ctx>\d+) maximum"),
    # vLLM, older: "maximum context length is M tokens. However, you requested N tokens (X in the messages"
    re.compile(r"maximum context length is (?P<ctx>\d+) tokens.*?\((?P<prompt>\d+) in the messages", re.S),
    # vLLM, newer: "maximum context length is M tokens and your request has X input tokens"
    re.compile(
        r"maximum context length is (?P<ctx>\d+) tokens and your request has (?P<prompt>\d+) input", re.S
    ),
    # vLLM: "... your prompt contains at least X input tokens" / "(X tokens) ... context length (M tokens)"
    re.compile(
        r"maximum context length is (?P<ctx>\d+) tokens.*?prompt contains at least (?P<prompt>\d+)", re.S
    ),
    # SGLang
    re.compile(r"input \((?P<prompt>\d+) tokens\) is longer than the model's context length \((?P<ctx>\d+)"),
    re.compile(
        r"maximum context length of (?P<ctx>\d+) tokens.*?(?P<prompt>\d+) tokens from the input", re.S
    ),
]


MAX_ERROR_TEXT = 1024  # characters of an upstream's error message relayed to the client


def _clip(text: str) -> str:
    return text if len(text) <= MAX_ERROR_TEXT else text[:MAX_ERROR_TEXT] + "… (cut)"


def error_message(body: Any, fallback: str) -> str:
    """The message in an upstream's error body, cut to MAX_ERROR_TEXT characters."""
    return _clip(_message(body, fallback))


def _message(body: Any, fallback: str) -> str:
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict):
            msg = err.get("message") or err.get("msg") or err.get("detail")
            if isinstance(msg, str) and msg:
                return msg
        elif isinstance(err, str) and err:
            return err
        if isinstance(body.get("detail"), str):
            return body["detail"]
        if isinstance(body.get("message"), str):
            return body["message"]
    return fallback


def overflow_of(body: Any, message: str) -> Overflow | None:
    """Whether an error says the request does not fit the context, with the numbers if it gives them."""
    err = body.get("error") if isinstance(body, dict) else None
    if isinstance(err, dict) and (
        err.get("type") == "exceed_context_size_error" or "exceeds the available context size" in message
    ):
        return Overflow(_int(err.get("n_prompt_tokens")), _int(err.get("n_ctx")))
    for pattern in _CTX_PATTERNS:
        m = pattern.search(message)
        if m:
            return Overflow(int(m["prompt"]), int(m["ctx"]))
    lowered = message.lower()
    if "context length" in lowered or "context size" in lowered or "context window" in lowered:
        return Overflow(None, None)
    return None


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def upstream_json(data: bytes | str, what: str) -> Any:
    """JSON from an upstream, read as safely as a client's (core.safejson: bounded nesting and
    numbers, lone surrogates replaced); anything else is a BadStream."""
    try:
        return safejson.loads(data, what=what)
    except InvalidRequest as exc:
        raise BadStream(f"upstream sent {exc.message}") from None


def parse_body(raw: bytes) -> Any:
    """An error body as JSON, or as (the start of) its text when it is not."""
    try:
        return upstream_json(raw, "an error body")
    except BadStream:
        return raw.decode(errors="replace")[:MAX_ERROR_TEXT]


def client_error(name: str, status: int, body: Any, overflow: Overflow | None) -> LmdockError:
    """The error a client gets for an upstream's 4xx/5xx answer that failing over cannot fix."""
    message = error_message(body, body if isinstance(body, str) and body else f"HTTP {status}")
    if overflow is not None:
        if overflow.prompt_tokens is not None and overflow.n_ctx is not None:
            return PromptTooLong(overflow.prompt_tokens, overflow.n_ctx)
        return InvalidRequest(f"upstream '{name}': {message}")
    if status in (401, 403):
        return UpstreamError(f"upstream '{name}' refused lmdock's credentials (HTTP {status}): {message}")
    if status == 404:  # lmdock lists the model, so the upstream's configuration is what is wrong
        return UpstreamError(f"upstream '{name}' does not serve it (HTTP 404): {message}")
    if 400 <= status < 500:
        return InvalidRequest(f"upstream '{name}': {message}")
    return UpstreamError(f"upstream '{name}' failed (HTTP {status}): {message}")
