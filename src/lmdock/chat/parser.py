"""Incremental parser turning generated text into text, thinking and tool-call events.

Families describe their output with a ParserSpec (reasoning markers, tool-call sections, markers to
drop); the shared machinery here streams text and thinking, holds back anything that may still become a
marker, streams a tool call's arguments as they are written once its name is known (other call shapes
are read whole), and recognises a bare JSON object that names a declared tool as a call (small models
often answer that way).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from lmdock.chat.calls import CallHead, RawCall, StreamedCall, call_events, call_head, calls_from_value
from lmdock.chat.jsonutil import JsonScanner, loads_prefix, repair_json
from lmdock.chat.sections import SectionReader
from lmdock.core.events import GenerationEvent, TextDelta, ThinkingDelta
from lmdock.core.text import partial_suffix

# A JSON object at the start of a line, optionally inside a ```json fence.
_BARE_START = re.compile(r"(?m)^[ \t]*(?:```(?:json)?[ \t]*\n[ \t]*)?\{")
# The tail of the buffer that may still grow into such an opener.
_BARE_PARTIAL = re.compile(r"(?:^|\n)[ \t]*(?:`{1,3}(?:j(?:s(?:on?)?)?)?[ \t]*(?:\n[ \t]*)?)?\Z")
_FENCE_CLOSE = "```"
_SPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class ParserSpec:
    """What one family's output looks like.

    `sections` maps a marker that opens tool calls to a factory of readers for what follows it;
    `bare_openers` are the compact prefixes of a bare JSON object that may be a call.
    """

    think: tuple[str, str] | None = None
    sections: Mapping[str, Callable[[], SectionReader]] = field(default_factory=dict)
    drop: tuple[str, ...] = ()
    arg_keys: tuple[str, ...] = ("arguments", "parameters")
    bare_openers: tuple[str, ...] = ('{"name"', '{"type"', '{"function"')


class OutputParser:
    """One request's parser: feed() decoded text as it arrives, then finish() once at the end."""

    def __init__(
        self, spec: ParserSpec, tool_names: Collection[str] = (), thinking_open: bool = False
    ) -> None:
        self.spec = spec
        self.tool_names = frozenset(tool_names)
        self.tool_calls = 0
        self._buf = ""
        self._mode = "think" if thinking_open and spec.think else "text"
        self._strip = thinking_open  # drop blanks that open a run after a marker
        self._line_start = True
        self._reader: SectionReader | None = None
        self._opener = ""
        self._bare: JsonScanner | None = None
        self._bare_at = 0
        self._call: StreamedCall | None = None  # the call whose arguments are being streamed
        self._skip = ""  # a closer to swallow if it comes next (a ```json fence's end, say)
        triggers = list(spec.drop)
        if spec.think:
            triggers += list(spec.think)
        if self.tool_names:
            triggers += list(spec.sections)
        self._triggers = tuple(sorted(set(triggers), key=len, reverse=True))
        self._trigger_re = re.compile("|".join(map(re.escape, self._triggers))) if self._triggers else None

    def feed(self, text: str) -> list[GenerationEvent]:
        self._buf += text
        return self._drain(final=False)

    def finish(self) -> list[GenerationEvent]:
        return self._drain(final=True)

    # -- the loop ---------------------------------------------------------------------------------

    def _drain(self, final: bool) -> list[GenerationEvent]:
        out: list[GenerationEvent] = []
        while self._step(final, out):
            pass
        return out

    def _step(self, final: bool, out: list[GenerationEvent]) -> bool:
        """Advance one mode change or emission; False when waiting for more text (or all is done)."""
        if self._mode == "think":
            return self._step_think(final, out)
        if self._mode == "section":
            return self._step_section(final, out)
        if self._mode == "bare":
            return self._step_bare(final, out)
        return self._step_text(final, out)

    # -- text -------------------------------------------------------------------------------------

    def _step_text(self, final: bool, out: list[GenerationEvent]) -> bool:
        if self._skip and not self._eat_closer(final):
            return False
        found = self._next_trigger()
        if found is None:
            self._emit_run(out, TextDelta, 0 if final else self._holdback(), final)
            return False
        at, marker = found
        head = self._buf[:at].rstrip()
        self._emit(out, TextDelta, head)
        if marker == "{":  # blanks before the object stay with it, in case it is only text
            self._buf = self._buf[len(head) :]
            self._mode, self._bare_at = "bare", self._buf.index("{", at - len(head))
            self._bare = JsonScanner(self._bare_at)
            return True
        self._buf = self._buf[at + len(marker) :]
        self._open(marker)
        return True

    def _open(self, marker: str) -> None:
        """Switch mode for a marker found in text."""
        think = self.spec.think
        if think and marker == think[0]:
            self._mode, self._strip = "think", True
        elif marker in self.spec.sections:
            self._mode, self._opener = "section", marker
            self._reader = self.spec.sections[marker]()
        else:
            self._strip = self._strip or bool(think and marker == think[1])

    def _next_trigger(self) -> tuple[int, str] | None:
        """The earliest marker or bare-JSON opener in the buffer, with the marker ("{" for JSON)."""
        best: tuple[int, str] | None = None
        if self._trigger_re is not None:
            m = self._trigger_re.search(self._buf)
            if m:
                best = (m.start(), m.group())
        if self.tool_names:
            m = _BARE_START.search(self._buf)
            if m and m.start() == 0 and not self._line_start:
                m = _BARE_START.search(self._buf, 1)
            if m and (best is None or m.start() < best[0]):
                best = (m.start(), "{")
        return best

    def _holdback(self) -> int:
        """Length of the buffer's tail that may still become a marker or a bare-JSON opener."""
        buf = self._buf
        hold = partial_suffix(buf, self._triggers)
        if self.tool_names:
            m = _BARE_PARTIAL.search(buf)
            if m and (m.start() > 0 or buf.startswith("\n") or self._line_start):
                hold = max(hold, len(buf) - m.start())
        return hold

    def _eat_closer(self, final: bool) -> bool:
        """Swallow `_skip` if the text resumes with it (after blanks); False to wait for more text."""
        rest = self._buf.lstrip()
        if rest.startswith(self._skip):
            self._buf = rest[len(self._skip) :]
        elif self._skip.startswith(rest) and not final:
            return False
        self._skip = ""
        return True

    # -- thinking ---------------------------------------------------------------------------------

    def _step_think(self, final: bool, out: list[GenerationEvent]) -> bool:
        assert self.spec.think is not None
        close = self.spec.think[1]
        at = self._buf.find(close)
        if at < 0:
            self._emit_run(out, ThinkingDelta, 0 if final else partial_suffix(self._buf, (close,)), final)
            return False
        self._emit(out, ThinkingDelta, self._buf[:at].rstrip())
        self._buf = self._buf[at + len(close) :]
        self._resume()
        return True

    # -- tool calls -------------------------------------------------------------------------------

    def _step_section(self, final: bool, out: list[GenerationEvent]) -> bool:
        assert self._reader is not None
        self._stream_call(self._reader.head, out)
        result = self._reader.read(self._buf, final)
        if result is None:
            return False
        used, calls = result
        if self._call is not None:
            self._end_call(out)
        elif calls is None:
            self._emit(out, TextDelta, self._opener + self._buf[:used])
        else:
            self._emit_calls(out, calls)
        self._buf = self._buf[used:]
        self._reader = None
        self._resume()
        return True

    def _step_bare(self, final: bool, out: list[GenerationEvent]) -> bool:
        assert self._bare is not None
        at = self._bare_at
        if not self._may_be_call(self._buf[at : at + 64]):
            self._emit(out, TextDelta, self._buf[: at + 1])
            self._buf = self._buf[at + 1 :]
            self._mode, self._line_start = "text", False
            return True
        self._stream_call(self._bare_head, out)
        end = self._bare.scan(self._buf)
        if end is None and not final:
            return False
        used = len(self._buf) if end is None else end
        streamed = self._call is not None
        calls = [] if streamed else self._bare_value_calls(self._buf[at:used], complete=end is not None)
        if calls is None:
            self._emit(out, TextDelta, self._buf[:used])
        else:
            if streamed:
                self._end_call(out)
            self._emit_calls(out, calls)
            self._skip = _FENCE_CLOSE if "`" in self._buf[:at] else ""
        self._buf = self._buf[used:]
        self._bare = None
        self._resume()
        return True

    def _stream_call(self, head: Callable[[str], CallHead | None], out: list[GenerationEvent]) -> None:
        """Start streaming the call once `head` finds its name and arguments; send what has arrived."""
        if self._call is None:
            found = head(self._buf)
            if found is None:
                return
            self._call = StreamedCall(self.tool_calls, found)
            out.extend(self._call.start())
        out.extend(self._call.feed(self._buf))

    def _end_call(self, out: list[GenerationEvent]) -> None:
        assert self._call is not None
        out.extend(self._call.end())
        self._call = None
        self.tool_calls += 1

    def _bare_head(self, buf: str) -> CallHead | None:
        """A bare object streams as a call only once it names a declared tool."""
        found = call_head(buf, self._bare_at)
        return found if found is not None and found.name in self.tool_names else None

    def _resume(self) -> None:
        """Back to text after a reasoning section or a call; blanks opening the next run are dropped."""
        self._mode, self._strip, self._line_start = "text", True, True

    def _may_be_call(self, head: str) -> bool:
        compact = _SPACE.sub("", head)
        return any(op.startswith(compact) or compact.startswith(op) for op in self.spec.bare_openers)

    def _bare_value_calls(self, text: str, complete: bool) -> list[RawCall] | None:
        try:
            value = loads_prefix(text) if complete else repair_json(text)
        except ValueError:
            return None
        return self._bare_calls(value)

    def _bare_calls(self, value: Any) -> list[RawCall] | None:
        """Calls in a bare JSON value, only if every one names a declared tool."""
        calls = calls_from_value(value, self.spec.arg_keys)
        if calls and all(c.name in self.tool_names for c in calls):
            return calls
        return None

    def _emit_calls(self, out: list[GenerationEvent], calls: list[RawCall]) -> None:
        for call in calls:
            out.extend(call_events(self.tool_calls, call))
            self.tool_calls += 1

    # -- emission ---------------------------------------------------------------------------------

    def _emit_run(
        self, out: list[GenerationEvent], kind: type[TextDelta] | type[ThinkingDelta], hold: int, final: bool
    ) -> None:
        """Emit the buffer but its last `hold` characters; trailing blanks wait for more text unless final."""
        head = self._buf[: len(self._buf) - hold].rstrip()
        self._emit(out, kind, head)
        self._buf = "" if final else self._buf[len(head) :]

    def _emit(
        self, out: list[GenerationEvent], kind: type[TextDelta] | type[ThinkingDelta], text: str
    ) -> None:
        """Emit a piece of a run; blanks that open a run right after a marker or a call are dropped."""
        if self._strip:
            text = text.lstrip()
        if text:
            out.append(kind(text))
            self._strip = self._line_start = False
