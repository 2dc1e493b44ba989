"""The in-process engine client (tests, benchmarks): the engine the worker process runs, on a thread of
this process, behind the same `EngineClient` surface. A native fault here takes the caller down with it,
which is why the server never uses it.

`engine` (the step loop) and `local` are open for white-box tests: evicting a slot, damaging a cache
entry, injecting a failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time

from lmdock.core.errors import EngineFailed, ModelUnavailable
from lmdock.engine.client import EngineClient, EventStream
from lmdock.engine.engine import Engine
from lmdock.engine.llama_model import LlamaModel
from lmdock.engine.local import LocalEngine
from lmdock.engine.observe import snapshot
from lmdock.engine.spec import EngineSpec
from lmdock.engine.types import (
    EngineEvent,
    EngineInfo,
    EngineRequest,
    EngineSnapshot,
    EngineState,
    WorkerStatus,
)


class InProcessClient(EngineClient):
    def __init__(self, spec: EngineSpec) -> None:
        super().__init__(spec.key)
        self.spec = spec
        self.local: LocalEngine | None = None
        self._closed = False

    @property
    def engine(self) -> Engine:
        if self.local is None:
            raise ModelUnavailable(f"model '{self.key}' is not started")
        return self.local.engine

    # --- lifecycle ---------------------------------------------------------------------------------

    async def start(self) -> EngineInfo:
        self.local = await asyncio.to_thread(LocalEngine, self.spec)
        self.info = self.local.info
        return self.info

    async def close(self, grace: float = 30.0) -> None:
        if self._closed:
            return
        self._closed = True
        deadline = time.monotonic() + grace
        while self.local is not None and (self.in_flight or self._holds) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if self.local is not None:
            await asyncio.to_thread(self.local.close)

    def check_open(self) -> None:
        if self._closed:
            raise ModelUnavailable(f"model '{self.key}' is being unloaded; retry in a moment")
        if self.local is not None and self.local.engine.failure is not None:
            raise EngineFailed(self.local.engine.failure)

    # --- requests ----------------------------------------------------------------------------------

    @property
    def vocab(self) -> LlamaModel:
        return self.engine.model

    async def submit(self, request: EngineRequest) -> EventStream:
        self.check_prompt(len(request.prompt))
        self.check_open()
        engine = self.engine
        loop = asyncio.get_running_loop()
        stream = EventStream(lambda: engine.cancel(seq))
        inbox = stream.inbox

        def emit(event: EngineEvent) -> None:
            with contextlib.suppress(RuntimeError):  # the consumer's event loop is gone: nobody listens
                loop.call_soon_threadsafe(inbox.put_nowait, event)

        try:
            if request.grammar:  # compiling a grammar takes milliseconds: keep it off the event loop
                seq = await asyncio.to_thread(engine.enqueue, request, emit)
            else:
                seq = engine.enqueue(request, emit)
        except BaseException:
            stream.finished = True  # refused: nothing to cancel
            raise
        return stream

    async def embed(self, inputs: list[list[int]]) -> tuple[list, int]:
        self.check_open()
        local = self.local
        if local is None:
            raise ModelUnavailable(f"model '{self.key}' is not started")
        return await asyncio.to_thread(local.embed, inputs)

    # --- state -------------------------------------------------------------------------------------

    async def snapshot(self) -> EngineSnapshot:
        return snapshot(self.engine)

    @property
    def state(self) -> EngineState:
        if self.local is None:
            return EngineState()
        return self.engine.state()

    @property
    def in_flight(self) -> int:
        state = self.state
        return state.queue_depth + state.active_count

    @property
    def pid(self) -> int | None:
        return os.getpid() if self.local is not None else None

    @property
    def failure(self) -> str | None:
        return self.local.engine.failure if self.local is not None else None

    def report(self) -> dict:
        state = self.state
        failure = self.failure
        if failure is not None:
            status = WorkerStatus.FAILED
        elif self._closed:
            status = WorkerStatus.CLOSED
        else:
            status = WorkerStatus.READY if self.local is not None else WorkerStatus.STARTING
        return {
            "status": status.value,
            "pid": self.pid,
            "in_flight": self.in_flight,
            "active": state.active_count,
            "queued": state.queue_depth,
            "crashes": 0,
            "failure": failure,
        }
