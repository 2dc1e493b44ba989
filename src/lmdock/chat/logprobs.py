"""Line token logprobs up with the text a client actually receives.

The engine reports one entry per sampled token, carrying the text that token decoded to. The output parser
then hides markers (`<tool_call>`, `<think>`), moves reasoning and tool calls out of the answer and trims
blanks around them. This aligner finds each piece of answer text in the raw decoded stream and hands out
entries for the tokens it came from, with `token` cut to the visible part of the token: the entries'
tokens concatenate exactly to the answer text, and hidden markers never appear.
"""

from __future__ import annotations

import bisect

from lmdock.core.events import TokenLogprob


class LogprobAligner:
    def __init__(self) -> None:
        self._raw: list[str] = []  # decoded text of every token so far
        self._raw_text = ""
        self._starts: list[int] = []  # raw offset where each token's text starts
        self._entries: list[TokenLogprob] = []
        self._visible: dict[int, list[str]] = {}  # token index -> the parts of its text the client saw
        self._cursor = 0  # raw offset up to which text has been accounted for
        self._next = 0  # first token whose entry is not handed out yet
        self._last = -1  # the token the last visible character came from

    def add(self, entries: list[TokenLogprob]) -> None:
        for entry in entries:
            self._starts.append(len(self._raw_text))
            self._entries.append(entry)
            self._raw_text += entry.token

    def skip(self, text: str) -> None:
        """Text that left the answer (reasoning, tool-call JSON): move past it in the raw stream."""
        at = self._raw_text.find(text, self._cursor) if text else -1
        if at >= 0:
            self._cursor = at + len(text)

    def take(self, text: str) -> list[TokenLogprob]:
        """`text` was sent as answer text: the entries of the tokens it completes."""
        for char, pos in zip(text, self._positions(text), strict=True):
            if pos is None:  # not in the raw text (never expected): keep it with the previous token
                index = max(self._last, self._next)
            else:
                index = bisect.bisect_right(self._starts, pos) - 1
                self._cursor = pos + 1
            if 0 <= index < len(self._entries):
                self._visible.setdefault(index, []).append(char)
                self._last = index
        return self._complete(self._cursor)

    def flush(self) -> list[TokenLogprob]:
        """The entries still waiting once generation ended."""
        return self._complete(None)

    def _positions(self, text: str) -> list[int | None]:
        raw, cur = self._raw_text, self._cursor
        at = raw.find(text, cur)
        if at >= 0:
            return list(range(at, at + len(text)))
        out: list[int | None] = []
        for char in text:  # not contiguous in the raw text: match it as a subsequence
            at = raw.find(char, cur)
            out.append(at if at >= 0 else None)
            cur = at + 1 if at >= 0 else cur
        return out

    def _complete(self, upto: int | None) -> list[TokenLogprob]:
        """Hand out entries of tokens that end at or before `upto` (all of them when None)."""
        out = []
        while self._next < len(self._entries):
            index = self._next
            end = self._starts[index + 1] if index + 1 < len(self._starts) else len(self._raw_text)
            if upto is not None and end > upto:
                break
            self._next += 1
            seen = self._visible.pop(index, None)
            if seen:
                entry = self._entries[index]
                out.append(TokenLogprob(token="".join(seen), logprob=entry.logprob, top=list(entry.top)))
        return out
