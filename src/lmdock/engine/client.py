"""The one surface the rest of lmdock uses to run a model: `EngineClient`, and the `EventStream` each
submitted request returns.

Two implementations, made by `make_client` (as vLLM's `EngineCoreClient.make_client()`): the worker
client (production: llama.cpp in a supervised worker process per model) and the in-process client
(tests and benchmarks: the same engine on a thread of this process). Both are started with `start()`,
tokenize through `vocab`, and end with `close()`.
"""

from __future__ import annotations

import asyncio
import contextlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from typing import Protocol

from lmdock.core.errors import PromptTooLong
from lmdock.engine.spec import EngineSpec
from lmdock.engine.types import (
    EngineEvent,
    EngineInfo,
    EngineRequest,
    EngineSnapshot,
    EngineState,
    EngineStats,
    Finished,
)


class Tokenizer(Protocol):
    """The model's vocabulary as the chat layer uses it (safe from any thread)."""

    n_vocab: int

    def tokenize(self, text: str, *, add_special: bool = False, parse_special: bool = True) -> list[int]: ...

    def control_texts(self) -> list[str]: ...


class EventStream:
    """The events of one submitted request: `Admitted`, `TextChunk`s, and a last `Finished`.

    One cancel rule: the request ends and its sequence is freed within one engine step when `cancel()`
    (or `aclose()`) is called, whether or not iteration ever started; when the consumer is cancelled
    while it waits for an event; and when the stream is dropped unfinished. Producers hold `inbox`
    (never the stream), so a stream nobody holds is collected and cancels itself."""

    def __init__(self, cancel: Callable[[], None]) -> None:
        self.inbox: asyncio.Queue[EngineEvent] = asyncio.Queue()
        self.finished = False
        self._cancel = cancel
        self._cancelled = False
        self._loop = asyncio.get_running_loop()

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> EngineEvent:
        if self.finished:
            raise StopAsyncIteration
        try:
            event = await self.inbox.get()
        except BaseException:
            self.cancel()
            raise
        if isinstance(event, Finished):
            self.finished = True
        return event

    def cancel(self) -> None:
        """End the request (idempotent; a no-op once it has finished)."""
        if not self.finished and not self._cancelled:
            self._cancelled = True
            self._cancel()

    async def aclose(self) -> None:
        self.cancel()

    def __del__(self) -> None:
        if not self.finished and not self._cancelled:
            with contextlib.suppress(Exception):  # may run on any thread: hop to the event loop
                self._loop.call_soon_threadsafe(self._cancel)


class EngineClient(ABC):
    """A model's engine: submit requests, read its state, close it."""

    key: str
    info: EngineInfo | None = None  # set once started

    def __init__(self, key: str) -> None:
        self.key = key
        self._holds = 0

    # --- lifecycle ---------------------------------------------------------------------------------

    @abstractmethod
    async def start(self) -> EngineInfo:
        """Load the model and warm it up; raises ModelLoadError / ModelFailed when that fails."""

    @abstractmethod
    async def close(self, grace: float = 30.0) -> None:
        """Stop taking requests, let those in flight finish for up to `grace` seconds, end the rest with
        an error, and free the model (vocabulary included)."""

    @abstractmethod
    def check_open(self) -> None:
        """Raise the error a new request gets now (the model failed, or is closing)."""

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        """Keep the model from closing while a request prepares (renders, tokenizes, submits)."""
        self.check_open()
        self._holds += 1
        try:
            yield
        finally:
            self._holds -= 1

    # --- requests ----------------------------------------------------------------------------------

    @property
    @abstractmethod
    def vocab(self) -> Tokenizer:
        """The tokenizer (available once started)."""

    @property
    def n_ctx(self) -> int:
        return self.info.n_ctx if self.info else 0

    def check_prompt(self, n_tokens: int) -> None:
        if self.info is not None and n_tokens >= self.info.n_ctx:
            raise PromptTooLong(n_tokens, self.info.n_ctx)

    @abstractmethod
    async def submit(self, request: EngineRequest) -> EventStream:
        """Queue a request. Errors that come before its first event (PromptTooLong, Overloaded, an
        invalid constraint, EngineFailed, a model that failed or is closing) are raised here."""

    @abstractmethod
    async def embed(self, inputs: list[list[int]]) -> tuple[list, int]:
        """Pooled, normalised embeddings of token lists (tokenized with `vocab`, BOS/EOS added), and the
        number of tokens embedded."""

    # --- state -------------------------------------------------------------------------------------

    @abstractmethod
    async def snapshot(self) -> EngineSnapshot:
        """The queue and the KV slots now (reads llama.cpp's memory: keep it off hot paths)."""

    @property
    @abstractmethod
    def state(self) -> EngineState:
        """Queue depth, active sequences, last activity and counters (cheap: no call into the engine)."""

    @property
    def stats(self) -> EngineStats:
        return self.state.stats

    @property
    def queue_depth(self) -> int:
        return self.state.queue_depth

    @property
    def active_count(self) -> int:
        return self.state.active_count

    @property
    def last_activity(self) -> float:
        return self.state.last_activity

    @property
    @abstractmethod
    def in_flight(self) -> int:
        """Requests submitted and not finished."""

    @property
    @abstractmethod
    def pid(self) -> int | None:
        """The process running llama.cpp for this model (None while there is none)."""

    @property
    @abstractmethod
    def failure(self) -> str | None:
        """Why the engine stopped for good (None while it serves)."""

    @property
    def crashes(self) -> int:
        """Times the process running the engine died."""
        return 0

    @abstractmethod
    def report(self) -> dict:
        """Health for /health, GET /api/v1/models and `lmdock ps` (status, pid, crashes...)."""


def make_client(
    spec: EngineSpec,
    *,
    in_process: bool = False,
    on_failed: Callable[[EngineClient], None] | None = None,
) -> EngineClient:
    """The engine client for `spec`, not started yet: in a worker process (what the server runs), or
    `in_process` (tests, benchmarks). `on_failed` hears when a worker client gives up on its model."""
    if in_process:
        from lmdock.engine.inproc import InProcessClient

        return InProcessClient(spec)
    from lmdock.engine.worker_client import WorkerClient

    return WorkerClient(spec, on_failed=on_failed)
