"""Incremental detokenization and stop-string matching on decoded text."""

from __future__ import annotations

import codecs

from lmdock.core.text import partial_suffix


class IncrementalDecoder:
    """Turns token pieces (bytes) into text without ever splitting a UTF-8 sequence."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, piece: bytes) -> str:
        return self._decoder.decode(piece)

    def flush(self) -> str:
        return self._decoder.decode(b"", final=True)


class StopMatcher:
    """Finds stop strings in streamed text, holding back any tail that could still become one (the
    engine's stops, and the client's stop sequences on an upstream model's stream).

    Text handed out is never part of a stop string, and the stop string itself is never emitted. Once
    one matched, `hit` names it and the caller stops feeding.
    """

    def __init__(self, stops: list[str]) -> None:
        self._stops = [s for s in stops if s]
        self._held = ""
        self.hit: str | None = None

    def feed(self, text: str) -> str:
        """The text safe to emit; on a match, the text before it (and `hit` is set)."""
        if not self._stops:
            return text
        buf = self._held + text
        first: tuple[int, str] | None = None
        for stop in self._stops:
            at = buf.find(stop)
            if at >= 0 and (first is None or at < first[0]):
                first = (at, stop)
        if first is not None:
            self._held = ""
            self.hit = first[1]
            return buf[: first[0]]
        keep = partial_suffix(buf, self._stops)
        self._held = buf[len(buf) - keep :] if keep else ""
        return buf[: len(buf) - keep]

    def flush(self) -> str:
        held, self._held = self._held, ""
        return held
