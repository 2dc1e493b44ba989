"""The server's side of a model's worker process: the engine surface, and the supervision around it.

`WorkerEngine` offers what the in-process Engine offers (`submit` -> an async iterator of TextChunk |
Finished with `cancel()`, stats, queue depth, active count, last activity, `close`) while llama.cpp runs
in `python -m lmdock.engine.worker`. One reader thread per worker turns each engine step's message into
one `call_soon_threadsafe`, which hands every event to its request's queue.

Supervision: when the worker dies (any signal, any exit) every in-flight request ends at once with an
error naming the model and the cause, and a new worker starts with the same settings (the prompt cache on
disk survives). A worker that dies before it is ready (load, warm-up decode) right after a crash or a
failed first attempt is marked failed and not restarted again.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import astuple, dataclass, field, fields

from lmdock.core.errors import (
    LmdockError,
    ModelFailed,
    ModelLoadError,
    ModelUnavailable,
    PromptTooLong,
)
from lmdock.engine.engine import EngineStats
from lmdock.engine.ipc import Channel, EngineState, WorkerInfo, decode_error
from lmdock.engine.types import EngineEvent, EngineRequest, Finished
from lmdock.engine.worker import WorkerConfig

log = logging.getLogger(__name__)

READY_TIMEOUT = 600.0  # a restart that takes longer than this fails the requests waiting for it
CRASH_WINDOW = 60.0
CRASH_LIMIT = 5  # crashes within CRASH_WINDOW after which the model is marked failed


def describe_exit(rc: int) -> str:
    if rc < 0:
        try:
            return f"killed by {signal.Signals(-rc).name}"
        except ValueError:
            return f"killed by signal {-rc}"
    return f"exited with status {rc}"


def rss_bytes(pid: int | None) -> int | None:
    """Resident memory of a process (Linux), for /health and `lmdock ps`."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


class RequestStream:
    """The events of one submitted request. `cancel()` frees its sequence within one engine step, even
    when iteration never started; dropping the stream unfinished cancels it too."""

    def __init__(self, owner: WorkerEngine, rid: int) -> None:
        self._owner = owner
        self.rid = rid
        self.queue: asyncio.Queue[EngineEvent] = asyncio.Queue()
        self.finished = False
        self._cancelled = False

    def __aiter__(self) -> RequestStream:
        return self

    async def __anext__(self) -> EngineEvent:
        if self.finished:
            raise StopAsyncIteration
        event = await self.queue.get()
        if isinstance(event, Finished):
            self.finished = True
        return event

    def cancel(self) -> None:
        if not self.finished and not self._cancelled:
            self._cancelled = True
            self._owner._cancel(self.rid)

    async def aclose(self) -> None:
        self.cancel()

    def __del__(self) -> None:
        if not self.finished and not self._cancelled:
            with contextlib.suppress(Exception):  # may run on any thread: hop to the event loop
                self._owner._loop.call_soon_threadsafe(self._owner._cancel, self.rid)


@dataclass
class _Generation:
    """One worker process and its channel."""

    proc: subprocess.Popen
    channel: Channel
    started: float = field(default_factory=time.monotonic)
    ready: bool = False
    load_error: str | None = None
    expected_exit: bool = False


class WorkerEngine:
    """A model's engine behind a supervised worker process."""

    def __init__(
        self, key: str, config: WorkerConfig, *, on_failed: Callable[[WorkerEngine], None] | None = None
    ) -> None:
        self.key = key
        self.config = config
        self.on_failed = on_failed
        self.info: WorkerInfo | None = None
        self.status = "starting"  # starting | ready | restarting | failed | closing | closed
        self.crashes = 0
        self.restarts = 0
        self.last_crash: str | None = None
        self.last_crash_at: float | None = None
        self.failure: str | None = None
        self.last_restart_seconds: float | None = None
        self._state = EngineState(last_activity=time.monotonic())
        self._base_stats = EngineStats()
        self._stats_now = EngineStats()
        self._pending: dict[int, asyncio.Queue[EngineEvent]] = {}
        self._acks: dict[int, asyncio.Future] = {}
        self._calls: dict[int, asyncio.Future] = {}
        self._ids = itertools.count(1)
        self._gen: _Generation | None = None
        self._ready: asyncio.Future | None = None
        self._strikes = 0
        self._crash_times: list[float] = []
        self._holds = 0
        self._crashed_at: float | None = None
        self._loop = asyncio.get_running_loop()

    # --- lifecycle ---------------------------------------------------------------------------------

    async def start(self) -> WorkerInfo:
        """Start the worker and wait until its model is loaded and warmed up."""
        self._spawn()
        return await self._wait_ready()

    def _spawn(self) -> None:
        parent, child = socket.socketpair()
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "lmdock.engine.worker", str(child.fileno())],
                pass_fds=(child.fileno(),),
                stdin=subprocess.DEVNULL,
            )
        finally:
            child.close()
        gen = _Generation(proc=proc, channel=Channel(parent.detach()))
        if self._ready is None or self._ready.done():
            self._ready = self._loop.create_future()
        self._gen = gen
        gen.channel.send(("init", self.config))
        threading.Thread(
            target=self._read, args=(gen,), name=f"worker-reader-{self.key}", daemon=True
        ).start()
        log.info("model %s: worker pid %d starting", self.key, proc.pid)

    async def _wait_ready(self) -> WorkerInfo:
        if self.status == "ready" and self.info is not None:
            return self.info
        if self.status == "failed":
            raise ModelFailed(self.failure or f"model '{self.key}' failed")
        if self.status in ("closing", "closed") or self._ready is None:
            raise ModelUnavailable(f"model '{self.key}' is being unloaded; retry in a moment")
        try:
            return await asyncio.wait_for(asyncio.shield(self._ready), READY_TIMEOUT)
        except TimeoutError:
            raise ModelUnavailable(f"model '{self.key}' is still restarting; retry in a moment") from None

    async def close(self, grace: float = 30.0) -> None:
        """Stop taking requests, let in-flight ones finish for up to `grace` seconds, then end the
        rest with a clear error and stop the worker."""
        if self.status in ("closing", "closed"):
            return
        was_failed = self.status == "failed"
        self.status = "closing"
        deadline = time.monotonic() + grace
        while (self._pending or self._holds) and time.monotonic() < deadline and self._gen is not None:
            await asyncio.sleep(0.05)
        for rid in list(self._pending):
            self._end(rid, f"model '{self.key}' was unloaded before this request finished")
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(ModelUnavailable(f"model '{self.key}' was unloaded"))
            self._ready.exception()  # retrieved: nobody may be waiting
        gen, self._gen = self._gen, None
        if gen is not None:
            gen.expected_exit = True
            with contextlib.suppress(OSError):
                gen.channel.send(("close",))
            try:
                await asyncio.to_thread(gen.proc.wait, 30)
            except subprocess.TimeoutExpired:
                log.warning("model %s: worker pid %d did not stop; killing it", self.key, gen.proc.pid)
                gen.proc.kill()
                await asyncio.to_thread(gen.proc.wait)
        self.status = "failed" if was_failed else "closed"

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        """Keep the model from being unloaded while a request prepares (renders, tokenizes, submits)."""
        self._check_open()
        self._holds += 1
        try:
            yield
        finally:
            self._holds -= 1

    def _check_open(self) -> None:
        if self.status == "failed":
            raise ModelFailed(self.failure or f"model '{self.key}' failed")
        if self.status in ("closing", "closed"):
            raise ModelUnavailable(f"model '{self.key}' is being unloaded; retry in a moment")

    # --- requests ----------------------------------------------------------------------------------

    def check_prompt(self, n_tokens: int) -> None:
        if self.info is not None and n_tokens >= self.info.n_ctx:
            raise PromptTooLong(n_tokens, self.info.n_ctx)

    async def submit(self, request: EngineRequest) -> RequestStream:
        """Queue a request in the worker; errors that come before the first event (PromptTooLong,
        Overloaded, an invalid constraint, a model that is unloading or failed) are raised here."""
        self.check_prompt(len(request.prompt))
        self._check_open()
        if self.status != "ready":
            await self._wait_ready()
            self._check_open()
        gen = self._gen
        rid = next(self._ids)
        stream = RequestStream(self, rid)
        ack = self._loop.create_future()
        self._pending[rid] = stream.queue  # the queue only: a dropped stream is collected and cancels
        self._acks[rid] = ack
        try:
            gen.channel.send(("submit", rid, request))
        except (OSError, AttributeError):
            self._pending.pop(rid, None)
            self._acks.pop(rid, None)
            raise ModelUnavailable(f"model '{self.key}' is restarting; retry in a moment") from None
        error = await ack
        if error is not None:
            self._pending.pop(rid, None)
            stream.finished = True
            raise decode_error(error)
        return stream

    def _cancel(self, rid: int) -> None:
        gen = self._gen
        if rid in self._pending and gen is not None:
            with contextlib.suppress(OSError):
                gen.channel.send(("cancel", rid))

    async def call(self, name: str, *args):
        """Run `Worker.call_<name>(*args)` in the worker (snapshot, embed)."""
        self._check_open()
        if self.status != "ready":
            await self._wait_ready()
        cid = next(self._ids)
        fut = self._loop.create_future()
        self._calls[cid] = fut
        try:
            self._gen.channel.send(("call", cid, name, args))
        except (OSError, AttributeError):
            self._calls.pop(cid, None)
            raise ModelUnavailable(f"model '{self.key}' is restarting; retry in a moment") from None
        return await fut

    async def snapshot(self) -> dict:
        return await self.call("snapshot")

    async def embed(self, inputs: list) -> tuple[list, int]:
        return await self.call("embed", inputs)

    # --- what /metrics, ps and the TTL reaper read -------------------------------------------------

    @property
    def n_ctx(self) -> int:
        return self.info.n_ctx if self.info else 0

    @property
    def queue_depth(self) -> int:
        return self._state.queue_depth

    @property
    def active_count(self) -> int:
        return self._state.active_count

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    @property
    def last_activity(self) -> float:
        return self._state.last_activity

    @property
    def stats(self) -> EngineStats:
        return self._stats_now

    @property
    def pid(self) -> int | None:
        return self._gen.proc.pid if self._gen is not None else None

    def report(self) -> dict:
        """Worker health for /health, GET /api/v1/models and `lmdock ps`."""
        return {
            "status": self.status,
            "pid": self.pid,
            "in_flight": self.in_flight,
            "active": self.active_count,
            "queued": self.queue_depth,
            "crashes": self.crashes,
            "restarts": self.restarts,
            "last_crash": self.last_crash,
            "last_crash_at": self.last_crash_at,
            "last_restart_seconds": self.last_restart_seconds,
            "failure": self.failure,
            "rss_bytes": rss_bytes(self.pid),
        }

    # --- reader thread -----------------------------------------------------------------------------

    def _read(self, gen: _Generation) -> None:
        post = self._loop.call_soon_threadsafe
        try:
            while True:
                msg = gen.channel.recv()
                post(self._on_message, gen, msg)
        except (EOFError, OSError):
            pass
        except Exception:
            log.exception("model %s: unreadable message from the worker", self.key)
            with contextlib.suppress(OSError):
                gen.proc.kill()
        rc = gen.proc.wait()
        gen.channel.close()
        with contextlib.suppress(RuntimeError):  # the server's loop is gone (shutting down)
            post(self._on_exit, gen, rc)

    def _on_message(self, gen: _Generation, msg: tuple) -> None:
        if gen is not self._gen:
            return
        kind = msg[0]
        if kind == "events":
            self._state = msg[2]
            self._update_stats(msg[2].stats)
            pending = self._pending
            for rid, event in msg[1]:
                queue = pending.get(rid)
                if queue is None:
                    continue
                queue.put_nowait(event)
                if isinstance(event, Finished):
                    del pending[rid]
        elif kind == "ack":
            fut = self._acks.pop(msg[1], None)
            if fut is not None and not fut.done():
                fut.set_result(msg[2])
        elif kind == "reply":
            fut = self._calls.pop(msg[1], None)
            if fut is not None and not fut.done():
                if msg[2]:
                    fut.set_result(msg[3])
                else:
                    fut.set_exception(decode_error(msg[3]))
        elif kind == "ready":
            self._on_ready(gen, msg[1])
        elif kind == "failed":
            gen.load_error = msg[1]

    def _on_ready(self, gen: _Generation, info: WorkerInfo) -> None:
        gen.ready = True
        self.info = info
        self._strikes = 0
        if self.status in ("starting", "restarting"):
            self.status = "ready"
        if self._crashed_at is not None:
            self.last_restart_seconds = time.monotonic() - self._crashed_at
            self._crashed_at = None
            log.info(
                "model %s: worker pid %d ready again %.1fs after the crash",
                self.key,
                info.pid,
                self.last_restart_seconds,
            )
        if self._ready is not None and not self._ready.done():
            self._ready.set_result(info)

    def _update_stats(self, values: tuple) -> None:
        if values:
            current = EngineStats(*values)
            base = self._base_stats
            for f in fields(EngineStats):
                setattr(self._stats_now, f.name, getattr(base, f.name) + getattr(current, f.name))

    def _on_exit(self, gen: _Generation, rc: int) -> None:
        if gen is not self._gen:
            return
        self._gen = None
        self._base_stats = EngineStats(*astuple(self._stats_now))
        self._state = EngineState(last_activity=time.monotonic())
        if gen.load_error is not None:  # a clean load failure (bad file, too large): no crash, no retry
            self._give_up(gen.load_error, ModelLoadError(gen.load_error))
            return
        reason = describe_exit(rc)
        self.crashes += 1
        self.last_crash = f"worker {reason}" + ("" if gen.ready else " while loading")
        self.last_crash_at = time.time()
        self._crashed_at = time.monotonic()
        now = time.monotonic()
        self._crash_times = [t for t in self._crash_times if now - t < CRASH_WINDOW] + [now]
        message = f"model '{self.key}' crashed: its worker process was {reason}"
        n = len(self._pending) + len(self._acks)
        log.error(
            "model %s: worker pid %d %s; %d in-flight request(s) ended", self.key, gen.proc.pid, reason, n
        )
        for rid in list(self._pending):
            self._end(rid, message + "; lmdock is restarting it")
        for fut in self._acks.values():
            if not fut.done():
                fut.set_exception(ModelUnavailable(message + "; retry in a moment"))
        self._acks.clear()
        for fut in self._calls.values():
            if not fut.done():
                fut.set_exception(ModelUnavailable(message + "; retry in a moment"))
        self._calls.clear()
        self._strikes = 1 if gen.ready else self._strikes + 1
        if self.status in ("closing", "closed", "failed"):
            return
        if self._strikes >= 2 or len(self._crash_times) >= CRASH_LIMIT:
            when = "again while loading or on its first decode" if self._strikes >= 2 else "too often"
            failure = f"model '{self.key}' failed: its worker process was {reason} {when}; not restarting it"
            self._give_up(failure, ModelFailed(failure))
            return
        self.status = "restarting" if self.info is not None else "starting"
        self.restarts += 1
        log.warning("model %s: restarting its worker (crash %d: %s)", self.key, self.crashes, reason)
        try:
            self._spawn()
        except OSError as exc:
            self._give_up(f"model '{self.key}' failed: cannot restart its worker: {exc}", None)

    def _give_up(self, failure: str, exc: LmdockError | None) -> None:
        if self.status in ("closing", "closed"):
            return
        self.status = "failed"
        self.failure = failure
        log.error("%s", failure)
        for rid in list(self._pending):
            self._end(rid, failure)
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(exc or ModelFailed(failure))
            self._ready.exception()
        if self.on_failed is not None:
            self.on_failed(self)

    def _end(self, rid: int, message: str) -> None:
        """End a request from the server side (its worker is gone or the model unloads)."""
        queue = self._pending.pop(rid, None)
        if queue is not None:
            queue.put_nowait(
                Finished(reason="error", prompt_tokens=0, cached_tokens=0, generated_tokens=0, error=message)
            )
