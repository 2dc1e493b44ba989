"""The wire between the server and a model's worker process: one dataclass per message, one codec.

Server -> worker: Init (first), Submit, Cancel, GetSnapshot, Embed, Close.
Worker -> server: Ready or LoadFailed (once), Ack (one per Submit), Events (once per engine step, every
request's new events and the engine's state), Reply (one per GetSnapshot / Embed).

A frame is the message's `Kind` (one byte) and the pickled dataclass; decoding checks that the two agree,
so a reader dispatches on classes and never reads a field by position. Pickle is fine here: both ends are
lmdock processes of the same install, joined by a socketpair nobody else holds. Errors cross as a
`WireError`, which rebuilds any `LmdockError` subclass with its message and attributes (param,
retry_after, n_tokens...), so a 529 or a `prompt is too long` raised in the worker keeps its status and
envelope in the server.
"""

from __future__ import annotations

import importlib
import pickle
import threading
from dataclasses import dataclass, field
from enum import IntEnum
from multiprocessing.connection import Connection
from typing import Any, ClassVar

from lmdock.core.errors import LmdockError
from lmdock.engine.spec import EngineSpec
from lmdock.engine.types import EngineEvent, EngineInfo, EngineRequest, EngineSnapshot, EngineState, TextChunk

PICKLE_PROTOCOL = pickle.HIGHEST_PROTOCOL


class Kind(IntEnum):
    INIT = 1
    SUBMIT = 2
    CANCEL = 3
    GET_SNAPSHOT = 4
    EMBED = 5
    CLOSE = 6
    READY = 20
    LOAD_FAILED = 21
    ACK = 22
    EVENTS = 23
    REPLY = 24


class ProtocolError(Exception):
    """A frame that is not a message of this protocol (a bug, or a worker of another version)."""


@dataclass(frozen=True)
class WireError:
    """An exception raised on one side, rebuilt on the other as the same `LmdockError` subclass."""

    cls: str  # "module:QualName" of an LmdockError subclass
    message: str
    attrs: dict[str, Any] = field(default_factory=dict)  # the instance's own attributes

    @classmethod
    def of(cls, exc: BaseException) -> WireError:
        if isinstance(exc, LmdockError):
            kind = type(exc)
            attrs = {k: v for k, v in vars(exc).items() if _picklable(v)}
            return cls(f"{kind.__module__}:{kind.__qualname__}", exc.message, attrs)
        return cls(f"{LmdockError.__module__}:LmdockError", f"{type(exc).__name__}: {exc}")

    def rebuild(self) -> LmdockError:
        """The error as raised, without calling its constructor (subclasses take different arguments)."""
        kind = _error_class(self.cls)
        exc = kind.__new__(kind)
        Exception.__init__(exc, self.message)
        exc.__dict__.update(self.attrs)
        exc.message = self.message
        return exc


def _picklable(value: Any) -> bool:
    try:
        pickle.dumps(value, protocol=PICKLE_PROTOCOL)
    except Exception:
        return False
    return True


def _error_class(name: str) -> type[LmdockError]:
    module, _, qualname = name.partition(":")
    found: Any = None
    if module == "lmdock" or module.startswith("lmdock."):
        try:
            found = importlib.import_module(module)
            for part in qualname.split("."):
                found = getattr(found, part)
        except (ImportError, AttributeError):
            found = None
    return found if isinstance(found, type) and issubclass(found, LmdockError) else LmdockError


# --- server -> worker -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Init:
    kind: ClassVar[Kind] = Kind.INIT
    spec: EngineSpec


@dataclass(frozen=True)
class Submit:
    kind: ClassVar[Kind] = Kind.SUBMIT
    rid: int
    request: EngineRequest


@dataclass(frozen=True)
class Cancel:
    kind: ClassVar[Kind] = Kind.CANCEL
    rid: int


@dataclass(frozen=True)
class GetSnapshot:
    kind: ClassVar[Kind] = Kind.GET_SNAPSHOT
    cid: int


@dataclass(frozen=True)
class Embed:
    kind: ClassVar[Kind] = Kind.EMBED
    cid: int
    inputs: list[list[int]]  # token lists


@dataclass(frozen=True)
class Close:
    kind: ClassVar[Kind] = Kind.CLOSE


# --- worker -> server -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Ready:
    kind: ClassVar[Kind] = Kind.READY
    info: EngineInfo


@dataclass(frozen=True)
class LoadFailed:
    """The model could not be loaded (bad file, too large): a clean failure, not a crash to retry."""

    kind: ClassVar[Kind] = Kind.LOAD_FAILED
    message: str


@dataclass(frozen=True)
class Ack:
    """A Submit was queued (error None) or refused before its first event."""

    kind: ClassVar[Kind] = Kind.ACK
    rid: int
    error: WireError | None = None


@dataclass(frozen=True)
class Events:
    """One engine step's new events per request id, in order, and the engine's state after it."""

    kind: ClassVar[Kind] = Kind.EVENTS
    events: dict[int, list[EngineEvent]]
    state: EngineState


def add_event(step: list[EngineEvent], event: EngineEvent) -> None:
    """Append `event` to one request's events of the current step, joining text to the text just before.

    A step that accepts a speculative draft emits a chunk per token; joined, they cross the pipe and
    reach the client as one delta (one SSE frame instead of ten), so the server's Python per token does
    not grow with the draft. Text of different steps is never joined, so nothing waits longer."""
    last = step[-1] if step else None
    if isinstance(event, TextChunk) and isinstance(last, TextChunk):
        logprobs = None if last.logprobs is None else last.logprobs + (event.logprobs or [])
        step[-1] = TextChunk(text=last.text + event.text, logprobs=logprobs)
    else:
        step.append(event)


@dataclass(frozen=True)
class Embeddings:
    """Pooled, normalised vectors (numpy float32 arrays), one per input, and the tokens embedded."""

    vectors: list[Any]
    n_tokens: int


@dataclass(frozen=True)
class Reply:
    """The answer to a GetSnapshot (an EngineSnapshot) or an Embed (Embeddings), or why it failed."""

    kind: ClassVar[Kind] = Kind.REPLY
    cid: int
    value: EngineSnapshot | Embeddings | None = None
    error: WireError | None = None


ToWorker = Init | Submit | Cancel | GetSnapshot | Embed | Close
FromWorker = Ready | LoadFailed | Ack | Events | Reply
Message = ToWorker | FromWorker

_CLASSES: dict[Kind, type] = {
    cls.kind: cls
    for cls in (Init, Submit, Cancel, GetSnapshot, Embed, Close, Ready, LoadFailed, Ack, Events, Reply)
}


def encode(msg: Message) -> bytes:
    return bytes((msg.kind,)) + pickle.dumps(msg, protocol=PICKLE_PROTOCOL)


def decode(frame: bytes) -> Message:
    """The message in `frame`; ProtocolError if the frame is not one."""
    try:
        kind = Kind(frame[0])
        msg = pickle.loads(memoryview(frame)[1:])
    except Exception as exc:
        raise ProtocolError(f"unreadable frame: {exc!r}") from exc
    if type(msg) is not _CLASSES[kind]:
        raise ProtocolError(f"a {kind.name} frame carried {type(msg).__name__}")
    return msg


class Channel:
    """One end of the socketpair: whole messages; sends are serialised across threads."""

    def __init__(self, fd: int) -> None:
        self.conn = Connection(fd)
        self._send_lock = threading.Lock()

    def send(self, msg: Message) -> None:
        frame = encode(msg)
        with self._send_lock:
            self.conn.send_bytes(frame)

    def recv(self) -> Message:
        """The next message; raises EOFError/OSError when the other side is gone."""
        return decode(self.conn.recv_bytes())

    def close(self) -> None:
        self.conn.close()
