"""Tokens in, tokens out: llama.cpp through llama-cpp-python's low-level API, with continuous
batching, prefix reuse across sequences, and RAM/disk prompt caching."""

from lmdock.engine.engine import Engine, EngineConfig, EngineStats, EngineStream
from lmdock.engine.llama_model import ContextParams, LlamaModel
from lmdock.engine.prompt_cache import PromptCache, model_fingerprint
from lmdock.engine.types import Admitted, EngineEvent, EngineRequest, Finished, TextChunk

__all__ = [
    "Admitted",
    "ContextParams",
    "Engine",
    "EngineConfig",
    "EngineEvent",
    "EngineRequest",
    "EngineStats",
    "EngineStream",
    "Finished",
    "LlamaModel",
    "PromptCache",
    "TextChunk",
    "model_fingerprint",
]
