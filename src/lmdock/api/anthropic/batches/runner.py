"""The batch runner: an asyncio task that feeds pending batch requests through the same chat session as
`POST /v1/messages`, a bounded number at a time, and commits each result as it completes.

- At most `slots` requests are in flight; a new one starts only while no request waits in an engine
  queue, so interactive traffic always finds the queue empty of batch work, and the engine's scheduler
  ranks what is admitted (batch requests are its low-priority class).
- Work is taken oldest batch first, grouped by prompt prefix (same model, system prompt and tools); the
  first request of a group runs its prefill alone so its siblings reuse the cached prefix.
- Nothing is committed for a request until it has its result, and a result is committed at most once, so
  after a crash the requests that were in flight simply run again and finished ones never do. The same
  holds when only the model's worker crashes (the request is interrupted, not errored) and when the
  model is restarting or unloading as a request starts (it waits and starts again, no attempt spent).
- A request interrupted `MAX_ATTEMPTS` times (say, by a crash it causes) is errored rather than retried
  forever.
- A full disk pauses the runner, not the server: a finished result that cannot be committed is held in
  memory and committed first when space returns (no work is redone, nothing is committed twice), no new
  request starts meanwhile, and the runner retries with backoff, logging once when it stops and once when
  it recovers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field

from lmdock.api.anthropic.batches.schema import error_body, parse_params
from lmdock.api.anthropic.batches.store import BatchStore, PendingRequest
from lmdock.api.anthropic.encode import MessageEncoder
from lmdock.core import safejson
from lmdock.core.backoff import Backoff
from lmdock.core.config import RequestLimits
from lmdock.core.errors import InsufficientStorage, LmdockError, ModelUnavailable, Overloaded
from lmdock.core.request import PRIORITY_BATCH
from lmdock.models.manager import ModelManager

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 3
RETRY_SECONDS = 2.0  # after the engine refused work (queue full, model restarting)


class _Interrupted(Exception):
    """The model's worker crashed while the request ran: it runs again (the attempt counts)."""


@dataclass
class _Work:
    request: PendingRequest
    task: asyncio.Task | None = None
    prefilled: asyncio.Event = field(default_factory=asyncio.Event)
    stop_state: str | None = None  # "canceled" / "expired" when its batch stops it


class BatchRunner:
    def __init__(
        self,
        store: BatchStore,
        manager: ModelManager,
        *,
        slots: int,
        retention_seconds: float | None,
        limits: RequestLimits,
        poll_seconds: float = 1.0,
    ) -> None:
        self.store = store
        self.manager = manager
        self.limits = limits  # checked again at run time: the server may restart with other flags
        self.slots = max(1, slots)
        self.retention_seconds = retention_seconds
        self.poll_seconds = poll_seconds
        self._work: dict[tuple[int, int], _Work] = {}
        self._wake = asyncio.Event()
        self._group: tuple[int, str] | None = None  # (batch, prompt prefix) being worked on
        self._retry_at = 0.0
        self._held: dict[tuple[int, int], tuple[str, dict]] = {}  # finished, not committed yet (disk full)
        self._storage = Backoff("batch runner: saving results", log, cap=60.0)

    def wake(self) -> None:
        self._wake.set()

    @property
    def in_flight(self) -> int:
        return len(self._work)

    async def run(self) -> None:
        """Run until cancelled (server shutdown); unfinished requests stay pending for the next start."""
        try:
            while True:
                self._wake.clear()
                if self._storage.ready():
                    try:
                        self._commit_held()
                        self._sweep()
                        self._fill()
                    except InsufficientStorage as exc:
                        self._storage.failed(exc.message)
                    except Exception:  # a bad row or a database hiccup must not stop batch processing
                        log.exception("batch runner iteration failed")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        self._wake.wait(), timeout=max(self.poll_seconds, self._storage.wait_seconds())
                    )
        finally:
            tasks = [w.task for w in self._work.values() if w.task is not None]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    # --- choosing work -----------------------------------------------------------------------------

    def _commit_held(self) -> None:
        """Commit the results a full disk kept back, first (raises while the disk is still full)."""
        for key, (state, result) in list(self._held.items()):
            self.store.commit(*key, state, result)
            del self._held[key]
            self._storage.succeeded()

    def _sweep(self) -> None:
        stopping = self.store.sweep(set(self._work) | set(self._held), self.retention_seconds)
        for work in self._work.values():
            state = stopping.get(work.request.batch_n)
            if state and work.stop_state is None and work.task is not None:
                work.stop_state = state
                work.task.cancel()

    def _engines_waiting(self) -> bool:
        """Whether any loaded model has requests waiting for a slot (then batch work holds back)."""
        return any(m.engine.queue_depth > 0 for m in list(self.manager.loaded.values()))

    def _fill(self) -> None:
        loop = asyncio.get_running_loop()
        while len(self._work) < self.slots and loop.time() >= self._retry_at:
            if self._engines_waiting():
                return
            candidates = self.store.pending(self.slots + len(self._work) + len(self._held) + 1, self._group)
            nxt = next((c for c in candidates if c.key not in self._work and c.key not in self._held), None)
            if nxt is None:
                return
            warming = any(
                w.request.prefix_key == nxt.prefix_key and not w.prefilled.is_set()
                for w in self._work.values()
            )
            if warming:
                return  # the group's first request is computing the shared prefix: reuse it next
            self._group = (nxt.batch_n, nxt.prefix_key)
            attempts = self.store.start_attempt(nxt.batch_n, nxt.idx)
            self._storage.succeeded()  # a write went through: saving works (again)
            if attempts > MAX_ATTEMPTS:
                self.store.commit(nxt.batch_n, nxt.idx, "errored", _interrupted(attempts - 1))
                continue
            work = _Work(nxt)
            self._work[nxt.key] = work
            work.task = asyncio.create_task(self._process(work), name=f"batch-{nxt.batch_id}-{nxt.idx}")

    # --- running one request -----------------------------------------------------------------------

    async def _process(self, work: _Work) -> None:
        req = work.request
        try:
            try:
                state, result = await self._generate(work)
            except asyncio.CancelledError:
                if work.stop_state is None:
                    raise  # shutdown: the request stays pending and runs again after a restart
                state, result = work.stop_state, {"type": work.stop_state}
            except (Overloaded, ModelUnavailable, _Interrupted) as exc:
                # the queue filled up with interactive work, or the model is restarting: try again shortly
                self._retry_at = asyncio.get_running_loop().time() + RETRY_SECONDS
                if not isinstance(exc, _Interrupted):
                    self.store.release_attempt(req.batch_n, req.idx)  # it never ran
                return
            try:
                self.store.commit(req.batch_n, req.idx, state, result)
            except InsufficientStorage as exc:
                self._held[req.key] = (state, result)  # committed as soon as the disk has room
                self._storage.failed(exc.message)
                return
            self._storage.succeeded()
        except asyncio.CancelledError:
            raise
        except InsufficientStorage as exc:
            self._storage.failed(exc.message)
        except Exception:
            log.exception("batch request %s/%s failed to commit", req.batch_id, req.custom_id)
        finally:
            work.prefilled.set()
            self._work.pop(req.key, None)
            self.wake()

    async def _generate(self, work: _Work) -> tuple[str, dict]:
        req = work.request
        try:
            params, chat = parse_params(safejson.loads(req.params, what="params"), self.limits)
            chat.priority = PRIORITY_BATCH
            model = await self.manager.get(params.model)
            crashes = model.crashes
            try:
                prepared = await model.session.prepare(chat)
                encoder = MessageEncoder(params.model)
                async for event in prepared.events():
                    if not work.prefilled.is_set():
                        work.prefilled.set()
                        self.wake()
                    for _ in encoder.feed(event):
                        pass
            except LmdockError as exc:
                if model.crashes != crashes:
                    raise _Interrupted from exc
                raise
        except (Overloaded, ModelUnavailable, _Interrupted):
            raise
        except LmdockError as exc:
            return "errored", {"type": "errored", "error": error_body(exc)}
        except Exception:  # a bug must end this request, not retry it in a loop
            log.exception("batch request %s/%s failed", req.batch_id, req.custom_id)
            return "errored", {"type": "errored", "error": error_body(LmdockError("Internal server error"))}
        return "succeeded", {"type": "succeeded", "message": encoder.message().model_dump(mode="json")}


def _interrupted(times: int) -> dict:
    message = f"the request was interrupted {times} times (server restarts or model crashes) and is not retried again"
    return {"type": "errored", "error": {"type": "error", "error": {"type": "api_error", "message": message}}}
