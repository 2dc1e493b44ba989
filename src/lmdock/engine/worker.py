"""The worker process of one loaded model: `python -m lmdock.engine.worker FD`.

It owns everything that runs llama.cpp for the model (a `LocalEngine`: weights, context, the engine
thread, llguidance matchers, the embeddings context), so a native fault kills this process and never
the server. The server's supervisor (engine/supervisor.py) sends `Init`, then requests; this module
routes them (engine/protocol.py) and, from the engine thread, sends one `Events` message per step
carrying the new events of every request.

`--probe PATH KEY THREADS on|off TYPE_K TYPE_V FLASH_ATTN` is the CPU self-check instead (engine/warmup.py).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from lmdock.core.errors import LmdockError
from lmdock.core.kv_cache import KvCacheConfig
from lmdock.engine.local import LocalEngine
from lmdock.engine.observe import snapshot
from lmdock.engine.protocol import (
    Ack,
    Cancel,
    Channel,
    Close,
    Embed,
    Embeddings,
    Events,
    GetSnapshot,
    Init,
    LoadFailed,
    Ready,
    Reply,
    Submit,
    WireError,
    add_event,
)
from lmdock.engine.sequence import Phase, Sequence
from lmdock.engine.types import EngineEvent, Finished
from lmdock.engine.warmup import probe

log = logging.getLogger("lmdock.worker")
STATE_EVERY = 0.5  # seconds between state reports while steps produce no events


class Worker:
    """Receives on the main thread, answers calls on a helper thread, streams events from the engine's."""

    def __init__(self, channel: Channel, init: Init) -> None:
        self.channel = channel
        self._outbox: dict[int, list[EngineEvent]] = {}
        self._state_sent = 0.0  # when the engine's state last went to the server
        self._seqs: dict[int, Sequence] = {}
        self.local = LocalEngine(init.spec, on_step=self.flush, on_failure=self._engine_failed)
        self.engine = self.local.engine
        self._calls = ThreadPoolExecutor(1, thread_name_prefix="worker-call")

    # --- engine thread -----------------------------------------------------------------------------

    def _emitter(self, rid: int) -> Callable[[EngineEvent], None]:
        def emit(event: EngineEvent) -> None:
            add_event(self._outbox.setdefault(rid, []), event)
            if isinstance(event, Finished):
                self._seqs.pop(rid, None)

        return emit

    def _engine_failed(self, why: str) -> None:
        """The engine thread stopped after internal errors: end the process, so the supervisor sees it
        (the model restarts, or is marked failed) instead of a live worker that refuses every request."""
        log.critical("engine stopped (%s); the worker exits", why)
        self.flush()
        os._exit(70)

    def flush(self) -> None:
        """Send every event since the last flush as one message (called once per engine step). A step
        without events (a long prompt being read) still sends the engine's state now and then, so
        /metrics and /health stay current while nothing is generated."""
        now = time.monotonic()
        if not self._outbox and now - self._state_sent < STATE_EVERY:
            return
        events, self._outbox = self._outbox, {}
        self._state_sent = now
        self.channel.send(Events(events, self.engine.state()))

    # --- main thread -------------------------------------------------------------------------------

    def serve(self) -> None:
        self.channel.send(Ready(self.local.info))
        while True:
            try:
                msg = self.channel.recv()
            except (EOFError, OSError):
                os._exit(0)  # the server is gone: nobody to answer
            if isinstance(msg, Submit):
                self._submit(msg)
            elif isinstance(msg, Cancel):
                seq = self._seqs.get(msg.rid)
                if seq is not None:
                    self.engine.cancel(seq)
            elif isinstance(msg, GetSnapshot | Embed):
                self._calls.submit(self._call, msg)
            elif isinstance(msg, Close):
                self.close()
                return

    def _submit(self, msg: Submit) -> None:
        try:
            seq = self.engine.enqueue(msg.request, self._emitter(msg.rid))
        except Exception as exc:  # an error before the first event keeps its status in the server
            self.channel.send(Ack(msg.rid, WireError.of(exc)))
            return
        self._seqs[msg.rid] = seq
        if seq.phase is Phase.DONE:  # finished before we stored it
            self._seqs.pop(msg.rid, None)
        self.channel.send(Ack(msg.rid))

    def _call(self, msg: GetSnapshot | Embed) -> None:
        try:
            if isinstance(msg, GetSnapshot):
                value = snapshot(self.engine)
            else:
                value = Embeddings(*self.local.embed(msg.inputs))
            self.channel.send(Reply(msg.cid, value))
        except Exception as exc:
            if not isinstance(exc, LmdockError):
                log.exception("worker call %s failed", type(msg).__name__)
            self.channel.send(Reply(msg.cid, error=WireError.of(exc)))

    def close(self) -> None:
        self.local.close()
        self.flush()


def _die_with_engine(args) -> None:
    """An exception that escapes a worker thread ends the process: the supervisor restarts it."""
    log.critical("worker thread %s died: %r", getattr(args.thread, "name", "?"), args.exc_value)
    sys.stderr.flush()
    os._exit(70)


def main(argv: list[str]) -> int:
    # The server owns this process's lifetime: it stops it (Close) or, gone, closes the pipe (EOF). A
    # Ctrl-C (SIGINT to the terminal's process group) or a service manager's SIGTERM to every process
    # of the service must not kill it first, or the server would count a crash and restart it while
    # shutting down.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if argv and argv[0] == "--probe":
        logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        return probe(argv[1], argv[2], int(argv[3]), argv[4] == "on", KvCacheConfig(*argv[5:8]))
    channel = Channel(int(argv[0]))
    init = channel.recv()
    if not isinstance(init, Init):
        raise SystemExit(f"expected Init, got {type(init).__name__}")
    spec = init.spec
    logging.basicConfig(
        level=spec.log_level.upper(),
        format=f"%(asctime)s %(levelname)s worker[{spec.key}] %(name)s: %(message)s",
    )
    threading.excepthook = _die_with_engine
    try:
        worker = Worker(channel, init)
    except LmdockError as exc:
        channel.send(LoadFailed(exc.message))
        return 2
    except Exception as exc:
        log.exception("loading %s failed", spec.key)
        channel.send(LoadFailed(f"failed to load {spec.key}: {exc}"))
        return 2
    worker.serve()
    return 0


if __name__ == "__main__":
    code = main(sys.argv[1:])
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
