"""The wire between the server and a model's worker process: pickled tuples over a socketpair.

Server -> worker: ("submit", rid, EngineRequest), ("cancel", rid), ("call", cid, name, args), ("close",).
Worker -> server: ("ready", WorkerInfo), ("failed", message), ("ack", rid, error | None),
("events", [(rid, TextChunk | Finished), ...], EngineState) once per engine step, ("reply", cid, ok, value).

Errors cross as (class name, message, param, extra) and are rebuilt from `lmdock.core.errors`, so an
Overloaded or a PromptTooLong raised in the worker keeps its status and envelope in the server.
"""

from __future__ import annotations

import pickle
import threading
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from lmdock.core import errors

PROTOCOL = pickle.HIGHEST_PROTOCOL


class Channel:
    """One end of the socketpair: whole messages, sends serialised across threads."""

    def __init__(self, fd: int) -> None:
        self.conn = Connection(fd)
        self._send_lock = threading.Lock()

    def send(self, msg: tuple) -> None:
        data = pickle.dumps(msg, protocol=PROTOCOL)
        with self._send_lock:
            self.conn.send_bytes(data)

    def recv(self) -> tuple:
        """The next message; raises EOFError/OSError when the other side is gone."""
        return pickle.loads(self.conn.recv_bytes())

    def close(self) -> None:
        self.conn.close()


@dataclass
class EngineState:
    """What the server shows of a worker's engine, refreshed with every step's events."""

    queue_depth: int = 0
    active_count: int = 0
    last_activity: float = 0.0  # time.monotonic() (system-wide on Linux, so comparable across processes)
    stats: tuple = ()


@dataclass
class WorkerInfo:
    """What a worker reports once its model is loaded and has decoded its warm-up tokens."""

    pid: int
    n_ctx: int
    n_vocab: int
    n_embd: int
    chat_template: str | None
    bos_text: str
    eos_text: str
    special_tokens: dict[str, int] = field(default_factory=dict)
    buffer_types: dict[str, float] = field(default_factory=dict)
    load_seconds: float = 0.0
    flash_attn: bool | None = None  # in effect (llama.cpp resolves `auto`); None: it did not say
    context_buffers: dict[str, float] = field(default_factory=dict)  # MiB: "KV", "compute", "output"


def encode_error(exc: BaseException) -> tuple[str, str, str | None, Any]:
    if isinstance(exc, errors.PromptTooLong):
        return ("PromptTooLong", exc.message, None, (exc.n_tokens, exc.n_ctx))
    if isinstance(exc, errors.Overloaded):
        return ("Overloaded", exc.message, None, exc.retry_after)
    if isinstance(exc, errors.LmdockError):
        return (type(exc).__name__, exc.message, exc.param, None)
    return ("LmdockError", f"{type(exc).__name__}: {exc}", None, None)


def decode_error(data: tuple[str, str, str | None, Any]) -> errors.LmdockError:
    name, message, param, extra = data
    if name == "PromptTooLong":
        return errors.PromptTooLong(*extra)
    if name == "Overloaded":
        return errors.Overloaded(message, retry_after=extra)
    cls = getattr(errors, name, None)
    if not (isinstance(cls, type) and issubclass(cls, errors.LmdockError)):
        cls = errors.LmdockError
    return cls(message, param=param)
