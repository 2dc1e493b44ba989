"""`max_tokens` enforced on what an upstream streams, whatever it does with the limit it was sent.

Without the upstream's tokenizer, output is counted per chunk: a chunk carrying output is at least one
token, and a long one at least one per `MAX_TOKEN_CHARS` characters (no tokenizer's pieces average that
many), so an upstream that ignores the limit, or sends megabytes in one chunk, is cut off: its text is
cut to the budget, a `finish_reason: "length"` chunk ends the stream (`stop_reason: max_tokens`) and
the caller closes the connection. A well-behaved upstream never notices: its last chunks, the finish
reason and the usage, pass as long as they carry no more output.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

MAX_TOKEN_CHARS = 32
_TAIL_CHUNKS = 4  # chunks without output read after the budget is spent (finish reason, usage)


def _pieces(choice: dict[str, Any]) -> list[tuple[dict[str, Any], str]]:
    """The output strings of one (checked: upstream/chunks.py) choice, as (the dict holding it, its
    key), in stream order."""
    delta: dict[str, Any] = choice.get("delta") or {}
    out: list[tuple[dict[str, Any], str]] = [(choice, "text")]
    out += [(delta, k) for k in ("reasoning_content", "reasoning", "content")]
    for call in delta.get("tool_calls") or []:
        fn: dict[str, Any] = call.get("function") or {}
        out += [(fn, "name"), (fn, "arguments")]
    return [(holder, key) for holder, key in out if holder.get(key)]


def _cost(chars: int) -> int:
    return -(-chars // MAX_TOKEN_CHARS) if chars else 0


class OutputBudget:
    """Counts the output of the first choice against `max_tokens` (None: no limit)."""

    def __init__(self, max_tokens: int | None) -> None:
        self.max_tokens = max_tokens
        self.used = 0

    async def limit(self, chunks: AsyncIterator[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
        """`chunks` until the budget is spent; then at most a few more without output."""
        tail = 0
        async for chunk in chunks:
            if self.max_tokens is None:
                yield chunk
                continue
            choice = next((c for c in chunk.get("choices") or [] if c.get("index", 0) == 0), None)
            pieces = _pieces(choice) if choice is not None else []
            chars = sum(len(holder[key]) for holder, key in pieces)
            if self.used >= self.max_tokens:
                tail += 1
                if chars or tail > _TAIL_CHUNKS:
                    break
                yield chunk
                continue
            cost = max(1, _cost(chars)) if chars else 0
            if self.used + cost <= self.max_tokens:
                self.used += cost
                yield chunk
                continue
            _truncate(pieces, (self.max_tokens - self.used) * MAX_TOKEN_CHARS)
            self.used = self.max_tokens
            yield chunk
            break
        else:
            return
        yield {"choices": [{"index": 0, "delta": {}, "text": "", "finish_reason": "length"}]}


def _truncate(pieces: list[tuple[dict[str, Any], str]], room: int) -> None:
    """Cut the pieces' strings, in order, to `room` characters in all."""
    for holder, key in pieces:
        holder[key] = holder[key][:room]
        room -= len(holder[key])
