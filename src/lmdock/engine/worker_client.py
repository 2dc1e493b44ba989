"""The production engine client: routes requests to a model's worker process and its events back.

Each request gets an id; its Submit is acknowledged (queued, or refused with the error the server
raises), then its events arrive batched per engine step and go to its stream's inbox. The worker's
process (start, crash, restart, give up) is the `Supervisor`'s; when it reports the worker lost, every
request in flight ends at once with an error naming the model and the cause. The vocabulary tokenizes in
this process (engine/vocab.py), so counting and prompt preparation never wait on the worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Callable
from pathlib import Path

from lmdock.core.errors import LmdockError
from lmdock.engine.client import EngineClient, EventStream
from lmdock.engine.process import rss_bytes
from lmdock.engine.protocol import (
    Ack,
    Cancel,
    Embed,
    Embeddings,
    Events,
    FromWorker,
    GetSnapshot,
    Reply,
    Submit,
    ToWorker,
)
from lmdock.engine.spec import EngineSpec
from lmdock.engine.supervisor import Supervisor
from lmdock.engine.types import (
    EngineEvent,
    EngineInfo,
    EngineRequest,
    EngineSnapshot,
    EngineState,
    Finished,
    WorkerStatus,
)
from lmdock.engine.vocab import Vocab


class WorkerClient(EngineClient):
    """A model's engine behind a supervised worker process."""

    def __init__(self, spec: EngineSpec, *, on_failed: Callable[[EngineClient], None] | None = None) -> None:
        super().__init__(spec.key)
        self.spec = spec
        self.supervisor = Supervisor(
            spec,
            on_message=self._on_message,
            on_lost=self._on_lost,
            on_failed=lambda: on_failed(self) if on_failed is not None else None,
        )
        self._vocab: Vocab | None = None
        self._reported = EngineState(last_activity=time.monotonic())  # the worker's, as it last said
        self._state: EngineState | None = None  # that, with the counters of the workers before it
        self._earlier = EngineState().stats  # counters of the workers before this one
        self._pending: dict[int, asyncio.Queue[EngineEvent]] = {}
        self._acks: dict[int, asyncio.Future[Ack]] = {}
        self._calls: dict[int, asyncio.Future[Reply]] = {}
        self._ids = itertools.count(1)

    # --- lifecycle ---------------------------------------------------------------------------------

    async def start(self) -> EngineInfo:
        vocab = asyncio.ensure_future(asyncio.to_thread(Vocab, Path(self.spec.path), self.key))
        try:
            self.info = await self.supervisor.start()
            self._vocab = await vocab
        except BaseException:
            await self.close(0)
            loaded = await asyncio.gather(vocab, return_exceptions=True)
            if isinstance(loaded[0], Vocab):
                await asyncio.to_thread(loaded[0].close)
            raise
        return self.info

    async def close(self, grace: float = 30.0) -> None:
        if not self.supervisor.begin_close():
            return
        deadline = time.monotonic() + grace
        while (self._pending or self._holds) and time.monotonic() < deadline and self.supervisor.running:
            await asyncio.sleep(0.05)
        for rid in list(self._pending):
            self._end(rid, f"model '{self.key}' was unloaded before this request finished")
        await self.supervisor.stop()
        if self._vocab is not None:
            await asyncio.to_thread(self._vocab.close)

    def check_open(self) -> None:
        self.supervisor.check_open()

    # --- requests ----------------------------------------------------------------------------------

    @property
    def vocab(self) -> Vocab:
        if self._vocab is None:
            raise RuntimeError(f"model '{self.key}' is not started")
        return self._vocab

    async def submit(self, request: EngineRequest) -> EventStream:
        self.check_prompt(len(request.prompt))
        await self._ready()
        rid = next(self._ids)
        stream = EventStream(lambda: self._cancel(rid))
        self._pending[rid] = stream.inbox  # the inbox only: a dropped stream is collected and cancels
        try:
            ack = await self._ask(self._acks, rid, Submit(rid, request))
        except BaseException:
            self._pending.pop(rid, None)
            stream.finished = True
            raise
        if ack.error is not None:
            self._pending.pop(rid, None)
            stream.finished = True
            raise ack.error.rebuild()
        return stream

    def _cancel(self, rid: int) -> None:
        if rid in self._pending and self.supervisor.running:
            with contextlib.suppress(LmdockError):
                self.supervisor.send(Cancel(rid))

    async def snapshot(self) -> EngineSnapshot:
        value = await self._call(lambda cid: GetSnapshot(cid))
        assert isinstance(value, EngineSnapshot)
        return value

    async def embed(self, inputs: list[list[int]]) -> tuple[list, int]:
        value = await self._call(lambda cid: Embed(cid, inputs))
        assert isinstance(value, Embeddings)
        return value.vectors, value.n_tokens

    async def _call(self, make: Callable[[int], GetSnapshot | Embed]):
        await self._ready()
        cid = next(self._ids)
        reply = await self._ask(self._calls, cid, make(cid))
        if reply.error is not None:
            raise reply.error.rebuild()
        return reply.value

    async def _ready(self) -> None:
        self.check_open()
        if self.supervisor.status is not WorkerStatus.READY:
            await self.supervisor.wait_ready()
            self.check_open()

    async def _ask(self, waiting: dict, key: int, msg: ToWorker):
        """Send `msg` and wait for the answer filed under `key` in `waiting`."""
        answer = asyncio.get_running_loop().create_future()
        waiting[key] = answer
        try:
            self.supervisor.send(msg)
            return await answer
        finally:
            waiting.pop(key, None)

    # --- state -------------------------------------------------------------------------------------

    @property
    def state(self) -> EngineState:
        """The worker's state with every worker's counters, summed when read: the worker reports every
        step, and the counters are read far less often (metrics, health, the model list)."""
        if self._state is None:
            now = self._reported
            self._state = EngineState(
                now.queue_depth, now.active_count, now.last_activity, self._earlier + now.stats
            )
        return self._state

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    @property
    def pid(self) -> int | None:
        return self.supervisor.pid

    @property
    def failure(self) -> str | None:
        return self.supervisor.failure

    @property
    def crashes(self) -> int:
        return self.supervisor.crashes

    def report(self) -> dict:
        return {
            **self.supervisor.report(),
            "in_flight": self.in_flight,
            "active": self.active_count,
            "queued": self.queue_depth,
            "rss_bytes": rss_bytes(self.pid),
        }

    # --- what the worker says (event loop) ---------------------------------------------------------

    def _on_message(self, msg: FromWorker) -> None:
        if isinstance(msg, Events):
            self._reported, self._state = msg.state, None
            pending = self._pending
            for rid, events in msg.events.items():
                inbox = pending.get(rid)
                if inbox is None:
                    continue
                for event in events:
                    inbox.put_nowait(event)
                if isinstance(events[-1], Finished):
                    del pending[rid]
        elif isinstance(msg, Ack):
            _answer(self._acks, msg.rid, msg)
        elif isinstance(msg, Reply):
            _answer(self._calls, msg.cid, msg)

    def _on_lost(self, message: str, retry: LmdockError | None) -> int:
        """The worker is gone: end every request in flight; fail those still waiting for an answer."""
        self._earlier = self.state.stats
        self._reported, self._state = EngineState(last_activity=time.monotonic()), None
        ended = len(self._pending)
        for rid in list(self._pending):
            self._end(rid, message)
        if retry is not None:
            for waiting in (self._acks, self._calls):
                for answer in waiting.values():
                    if not answer.done():
                        answer.set_exception(retry)
                waiting.clear()
        return ended

    def _end(self, rid: int, message: str) -> None:
        """End a request from the server side (its worker is gone or the model closes)."""
        inbox = self._pending.pop(rid, None)
        if inbox is not None:
            inbox.put_nowait(
                Finished(reason="error", prompt_tokens=0, cached_tokens=0, generated_tokens=0, error=message)
            )


def _answer(waiting: dict, key: int, msg: FromWorker) -> None:
    answer = waiting.get(key)
    if answer is not None and not answer.done():
        answer.set_result(msg)
