"""What goes into and comes out of the engine: token ids in, text pieces out. No protocol here."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from lmdock.core.events import TokenLogprob
from lmdock.core.request import SamplingParams

__all__ = [
    "Admitted",
    "EngineEvent",
    "EngineRequest",
    "Finished",
    "FinishReason",
    "TextChunk",
    "TokenLogprob",
]

FinishReason = Literal["eog", "length", "stop", "context", "grammar", "cancelled", "error"]


@dataclass
class EngineRequest:
    """A tokenized prompt to continue.

    `grammar` is an llguidance grammar (Lark syntax, may embed `%json{...}`) that every sampled token must
    satisfy; generation ends when the grammar is complete. `stop` strings end generation on decoded text
    and are never emitted.
    """

    prompt: list[int]
    max_tokens: int
    sampling: SamplingParams = field(default_factory=SamplingParams)
    stop: list[str] = field(default_factory=list)
    grammar: str | None = None
    logprobs: int | None = None  # None: off; k: each token's logprob and its k most likely alternatives
    priority: int = 0  # scheduling class (core.request.PRIORITY_*): lower is admitted first


@dataclass
@dataclass
class Admitted:
    """The first event of a request once it holds a KV slot: how much of its prompt the cache already
    held (so a protocol can report usage before any text; `Finished` repeats the same counts)."""

    prompt_tokens: int
    cached_tokens: int


@dataclass
class TextChunk:
    """Newly decoded text (may be empty while a UTF-8 sequence or a possible stop string is held back).

    With logprobs requested, `logprobs` has one entry per sampled token since the previous chunk; their
    `token` texts concatenate to the decoded output (which may run past `text` while a possible stop
    string is held back)."""

    text: str
    n_tokens: int = 1
    logprobs: list[TokenLogprob] | None = None


@dataclass
class Finished:
    """The last event of every submitted request."""

    reason: FinishReason
    prompt_tokens: int
    cached_tokens: int
    generated_tokens: int
    stop_sequence: str | None = None
    error: str | None = None


EngineEvent = Admitted | TextChunk | Finished
