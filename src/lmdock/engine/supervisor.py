"""One model's worker process, kept alive: start it, wait until it is ready, notice when it ends, start it
again or give up (engine/crash_policy.py decides which). It knows nothing about requests: messages go to
the request client (engine/worker_client.py) through `on_message`, and when the worker is gone the
client hears `on_lost` and ends what was in flight.

One reader thread per worker turns each incoming message into one `call_soon_threadsafe`; everything
else runs on the server's event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from lmdock.core.errors import LmdockError, ModelFailed, ModelLoadError, ModelUnavailable
from lmdock.engine.crash_policy import CrashPolicy
from lmdock.engine.process import WORKER_CWD, describe_exit, worker_argv
from lmdock.engine.protocol import (
    Ack,
    Channel,
    Close,
    Events,
    FromWorker,
    Init,
    LoadFailed,
    Message,
    Ready,
    Reply,
    ToWorker,
)
from lmdock.engine.spec import EngineSpec
from lmdock.engine.types import EngineInfo, WorkerStatus

log = logging.getLogger("lmdock.engine.proxy")  # the logger name the server log has always used

READY_TIMEOUT = 600.0  # a restart that takes longer than this fails the requests waiting for it
STOP_TIMEOUT = 30.0  # a worker told to close that has not exited by then is killed


@dataclass
class _Generation:
    """One worker process and its channel."""

    proc: subprocess.Popen
    channel: Channel
    started: float = field(default_factory=time.monotonic)
    ready: bool = False
    load_error: str | None = None
    expected_exit: bool = False


class Supervisor:
    """Starts and restarts the worker process of one model."""

    def __init__(
        self,
        spec: EngineSpec,
        *,
        on_message: Callable[[FromWorker], None],
        on_lost: Callable[[str, LmdockError | None], int],
        on_failed: Callable[[], None],
    ) -> None:
        """`on_message` gets every message but Ready/LoadFailed; `on_lost(message, retry)` ends requests
        in flight when the worker is gone (with `retry` for those not started yet, None when the model
        failed) and returns how many it ended; `on_failed` is called once when the supervisor gives up."""
        self.key = spec.key
        self.spec = spec
        self._on_message = on_message
        self._on_lost = on_lost
        self._on_failed = on_failed
        self.status = WorkerStatus.STARTING
        self.info: EngineInfo | None = None
        self.policy = CrashPolicy()
        self.crashes = 0
        self.restarts = 0
        self.last_crash: str | None = None
        self.last_crash_at: float | None = None
        self.last_restart_seconds: float | None = None
        self.failure: str | None = None
        self._gen: _Generation | None = None
        self._ready: asyncio.Future[EngineInfo] | None = None
        self._crashed_at: float | None = None
        self._was_failed = False
        self._loop = asyncio.get_running_loop()

    # --- what callers ask --------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        return self._gen.proc.pid if self._gen is not None else None

    @property
    def running(self) -> bool:
        return self._gen is not None

    def check_open(self) -> None:
        """Raise the error a new request gets while the model failed or is unloading."""
        if self.status is WorkerStatus.FAILED:
            raise ModelFailed(self.failure or f"model '{self.key}' failed")
        if self.status in (WorkerStatus.CLOSING, WorkerStatus.CLOSED):
            raise ModelUnavailable(f"model '{self.key}' is being unloaded; retry in a moment")

    def send(self, msg: ToWorker) -> None:
        """Send to the current worker; ModelUnavailable if there is none (it is restarting)."""
        gen = self._gen
        try:
            if gen is None:
                raise OSError("no worker")
            gen.channel.send(msg)
        except OSError:
            raise ModelUnavailable(f"model '{self.key}' is restarting; retry in a moment") from None

    def report(self) -> dict:
        return {
            "status": self.status.value,
            "pid": self.pid,
            "crashes": self.crashes,
            "restarts": self.restarts,
            "last_crash": self.last_crash,
            "last_crash_at": self.last_crash_at,
            "last_restart_seconds": self.last_restart_seconds,
            "failure": self.failure,
        }

    # --- start, wait, stop -------------------------------------------------------------------------

    async def start(self) -> EngineInfo:
        """Start the worker and wait until its model is loaded and warmed up."""
        self._spawn()
        return await self.wait_ready()

    async def wait_ready(self) -> EngineInfo:
        if self.status is WorkerStatus.READY and self.info is not None:
            return self.info
        self.check_open()
        if self._ready is None:
            raise ModelUnavailable(f"model '{self.key}' is being unloaded; retry in a moment")
        try:
            return await asyncio.wait_for(asyncio.shield(self._ready), READY_TIMEOUT)
        except TimeoutError:
            raise ModelUnavailable(f"model '{self.key}' is still restarting; retry in a moment") from None

    def begin_close(self) -> bool:
        """Refuse new requests from now on; False if a close is already under way or done."""
        if self.status in (WorkerStatus.CLOSING, WorkerStatus.CLOSED):
            return False
        self._was_failed = self.status is WorkerStatus.FAILED
        self.status = WorkerStatus.CLOSING
        return True

    async def stop(self) -> None:
        """After `begin_close`: stop the worker (asked first, killed if it does not exit)."""
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(ModelUnavailable(f"model '{self.key}' was unloaded"))
            self._ready.exception()  # retrieved: nobody may be waiting
        gen, self._gen = self._gen, None
        if gen is not None:
            gen.expected_exit = True
            with contextlib.suppress(OSError):
                gen.channel.send(Close())
            try:
                await asyncio.to_thread(gen.proc.wait, STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                log.warning("model %s: worker pid %d did not stop; killing it", self.key, gen.proc.pid)
                gen.proc.kill()
                await asyncio.to_thread(gen.proc.wait)
        self.status = WorkerStatus.FAILED if self._was_failed else WorkerStatus.CLOSED

    def _spawn(self) -> None:
        parent, child = socket.socketpair()
        try:
            proc = subprocess.Popen(
                worker_argv(str(child.fileno())),
                pass_fds=(child.fileno(),),
                stdin=subprocess.DEVNULL,
                cwd=WORKER_CWD,
            )
        finally:
            child.close()
        gen = _Generation(proc=proc, channel=Channel(parent.detach()))
        if self._ready is None or self._ready.done():
            self._ready = self._loop.create_future()
        self._gen = gen
        gen.channel.send(Init(self.spec))
        threading.Thread(
            target=self._read, args=(gen,), name=f"worker-reader-{self.key}", daemon=True
        ).start()
        log.info("model %s: worker pid %d starting", self.key, proc.pid)

    # --- reader thread -----------------------------------------------------------------------------

    def _read(self, gen: _Generation) -> None:
        post = self._loop.call_soon_threadsafe
        try:
            while True:
                msg = gen.channel.recv()
                post(self._deliver, gen, msg)
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

    # --- event loop: what the worker said, and its end ---------------------------------------------

    def _deliver(self, gen: _Generation, msg: Message) -> None:
        if gen is not self._gen:
            return
        if isinstance(msg, Ready):
            self._on_ready(gen, msg.info)
        elif isinstance(msg, LoadFailed):
            gen.load_error = msg.message
        elif isinstance(msg, Ack | Events | Reply):
            self._on_message(msg)
        else:
            log.error(
                "model %s: the worker sent %s, which only the server sends", self.key, type(msg).__name__
            )

    def _on_ready(self, gen: _Generation, info: EngineInfo) -> None:
        gen.ready = True
        self.info = info
        self.policy.ready()
        if self.status in (WorkerStatus.STARTING, WorkerStatus.RESTARTING):
            self.status = WorkerStatus.READY
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

    def _on_exit(self, gen: _Generation, rc: int) -> None:
        if gen is not self._gen:
            return
        self._gen = None
        if gen.load_error is not None:  # a clean load failure (bad file, too large): no crash, no retry
            self._give_up(gen.load_error, ModelLoadError(gen.load_error))
            return
        reason = describe_exit(rc)
        now = time.monotonic()
        self.crashes += 1
        self.last_crash = f"worker {reason}" + ("" if gen.ready else " while loading")
        self.last_crash_at = time.time()
        self._crashed_at = now
        message = f"model '{self.key}' crashed: its worker process was {reason}"
        n = self._on_lost(
            message + "; lmdock is restarting it", ModelUnavailable(message + "; retry in a moment")
        )
        log.error(
            "model %s: worker pid %d %s; %d in-flight request(s) ended", self.key, gen.proc.pid, reason, n
        )
        give_up = self.policy.crashed(now, was_ready=gen.ready)
        if self.status in (WorkerStatus.CLOSING, WorkerStatus.CLOSED, WorkerStatus.FAILED):
            return
        if give_up is not None:
            failure = (
                f"model '{self.key}' failed: its worker process was {reason} {give_up}; not restarting it"
            )
            self._give_up(failure, ModelFailed(failure))
            return
        self.status = WorkerStatus.RESTARTING if self.info is not None else WorkerStatus.STARTING
        self.restarts += 1
        log.warning("model %s: restarting its worker (crash %d: %s)", self.key, self.crashes, reason)
        try:
            self._spawn()
        except OSError as exc:
            self._give_up(f"model '{self.key}' failed: cannot restart its worker: {exc}", None)

    def _give_up(self, failure: str, exc: LmdockError | None) -> None:
        if self.status in (WorkerStatus.CLOSING, WorkerStatus.CLOSED):
            return
        self.status = WorkerStatus.FAILED
        self.failure = failure
        log.error("%s", failure)
        self._on_lost(failure, None)
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(exc or ModelFailed(failure))
            self._ready.exception()
        self._on_failed()
