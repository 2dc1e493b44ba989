"""Tokens in, tokens out: llama.cpp through llama-cpp-python's low-level API, with continuous
batching, prefix reuse across sequences, and RAM/disk prompt caching.

The rest of lmdock runs a model through `make_client(EngineSpec(...))`: an `EngineClient` whose
`submit()` returns an `EventStream` of `Admitted`, `TextChunk`s and a last `Finished`. In production the
engine runs in a supervised worker process per model; tests and benchmarks may run it in process.
"""

from lmdock.engine.client import EngineClient, EventStream, Tokenizer, make_client
from lmdock.engine.spec import ContextParams, EngineConfig, EngineSpec, SpecConfig
from lmdock.engine.types import (
    Admitted,
    EngineEvent,
    EngineInfo,
    EngineRequest,
    EngineSnapshot,
    EngineState,
    EngineStats,
    Finished,
    FinishReason,
    SlotState,
    TextChunk,
    TokenLogprob,
    WorkerStatus,
)

__all__ = [
    "Admitted",
    "ContextParams",
    "EngineClient",
    "EngineConfig",
    "EngineEvent",
    "EngineInfo",
    "EngineRequest",
    "EngineSnapshot",
    "EngineSpec",
    "EngineState",
    "EngineStats",
    "EventStream",
    "Finished",
    "FinishReason",
    "SlotState",
    "SpecConfig",
    "TextChunk",
    "TokenLogprob",
    "Tokenizer",
    "WorkerStatus",
    "make_client",
]
