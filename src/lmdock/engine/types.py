"""What goes into and comes out of the engine: token ids in, text pieces out. No protocol here."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from enum import Enum
from typing import Literal

from lmdock.core.events import TokenLogprob
from lmdock.core.request import SamplingParams

__all__ = [
    "Admitted",
    "CacheLookup",
    "CachedState",
    "CacheTier",
    "EngineEvent",
    "EngineInfo",
    "EngineRequest",
    "EngineSnapshot",
    "EngineState",
    "EngineStats",
    "Finished",
    "FinishReason",
    "QueuedState",
    "SlotState",
    "TextChunk",
    "TokenLogprob",
    "WorkerStatus",
]

FinishReason = Literal["eog", "length", "stop", "context", "grammar", "cancelled", "error"]
CacheTier = Literal["slot", "ram", "disk"]  # where a reused prompt prefix came from


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
class CacheLookup:
    """How a prompt's cache lookup went (engine/lookup.py): `cached_tokens` reused as a prefix from
    `tier` (None: a miss), `chunk_reused_tokens` more moved in from cached runs further on; where the
    prompt left the nearest cached entry (`diverged_at`, a token index), with up to 40 characters of
    the text both share before it and of each side after it."""

    tier: CacheTier | None
    cached_tokens: int
    chunk_reused_tokens: int = 0
    diverged_at: int | None = None
    before: str | None = None
    prompt_after: str | None = None
    cached_after: str | None = None


@dataclass
class Admitted:
    """The first event of a request once it holds a KV slot: how much of its prompt the cache already
    held (so a protocol can report usage before any text; `Finished` repeats the same counts), how the
    cache lookup went, and how long the request waited in the queue and why (`blocked_by`: the first
    reason the scheduler gave while it waited; None if it was admitted at once)."""

    prompt_tokens: int
    cached_tokens: int
    lookup: CacheLookup | None = None
    queue_seconds: float = 0.0
    blocked_by: str | None = None


@dataclass
class TextChunk:
    """Newly decoded text (may be empty while a UTF-8 sequence or a possible stop string is held back).

    With logprobs requested, `logprobs` has one entry per sampled token since the previous chunk; their
    `token` texts concatenate to the decoded output (which may run past `text` while a possible stop
    string is held back)."""

    text: str
    logprobs: list[TokenLogprob] | None = None


@dataclass
class Finished:
    """The last event of every submitted request."""

    reason: FinishReason
    prompt_tokens: int
    cached_tokens: int
    generated_tokens: int
    spec_proposed: int = 0  # draft tokens verified (speculative decoding)
    spec_accepted: int = 0  # of those, the ones emitted
    stop_sequence: str | None = None
    error: str | None = None


EngineEvent = Admitted | TextChunk | Finished


@dataclass
class EngineStats:
    """Counters for /metrics and tests; read without locking (ints are atomic enough for reporting)."""

    prompt_tokens: int = 0
    prompt_tokens_processed: int = 0
    generated_tokens: int = 0
    cache_hit_tokens: int = 0
    evictions: int = 0
    moved_tokens: int = 0  # cached tokens moved to new positions (chunk reuse)
    preemptions: int = 0
    requests: int = 0
    decode_seconds: float = 0.0
    decode_steps: int = 0  # llama_decode calls that evaluated a batch
    kv_cells: int = 0  # summed over those steps: the KV cells each step's attention spans (n_kv)
    decode_step_seconds: float = 0.0  # llama_decode time of those steps (prefill-only steps left out)
    demotions: int = 0  # idle cached prefixes moved out of the KV cache for a running sequence (to RAM)
    hits_slot: int = 0  # admitted prompts whose reused prefix was resident in a KV slot
    hits_ram: int = 0  # ... restored from the host-RAM tier
    hits_disk: int = 0  # ... restored from the disk tier
    misses: int = 0  # admitted prompts that reused no prefix
    spec_proposed_tokens: int = 0  # draft tokens verified
    spec_accepted_tokens: int = 0  # draft tokens emitted

    def decoded_step(self, kv_cells: int, seconds: float) -> None:
        """Count a step that decoded generating sequences, attending over `kv_cells` KV cells, whose
        `llama_decode` took `seconds`."""
        self.decode_steps += 1
        self.kv_cells += kv_cells
        self.decode_step_seconds += seconds

    def counted(self, prompt_tokens: int, lookup: CacheLookup) -> CacheLookup:
        """Count an admitted prompt, its cached prefix, and its lookup as a hit of its tier or a miss
        (returns the lookup)."""
        self.prompt_tokens += prompt_tokens
        self.cache_hit_tokens += lookup.cached_tokens
        if lookup.tier is None:
            self.misses += 1
        else:
            name = f"hits_{lookup.tier}"
            setattr(self, name, getattr(self, name) + 1)
        return lookup

    def __add__(self, other: EngineStats) -> EngineStats:
        """Field by field (a restarted worker counts from zero; the server adds what came before)."""
        return EngineStats(**{name: getattr(self, name) + getattr(other, name) for name in _STATS_FIELDS})


_STATS_FIELDS = tuple(f.name for f in fields(EngineStats))


@dataclass
class EngineState:
    """What the server shows of an engine between requests, refreshed with every step's events."""

    queue_depth: int = 0
    active_count: int = 0
    last_activity: float = 0.0  # time.monotonic() (system-wide on Linux, so comparable across processes)
    stats: EngineStats = field(default_factory=EngineStats)


@dataclass
class SlotState:
    """One KV slot as the engine sees it, and what llama.cpp's memory holds under its sequence id."""

    seq_id: int
    busy: bool
    tokens: int
    kv_pos_max: int


@dataclass
class QueuedState:
    """A request waiting for a slot: its prompt, how long it has waited and why (the first reason)."""

    prompt_tokens: int
    priority: int
    waited_seconds: float
    blocked_by: str | None


@dataclass
class CachedState:
    """A prompt-cache entry behind the slots: its tier, its tokens, its bytes, seconds since last use."""

    tier: CacheTier
    tokens: int
    nbytes: int
    idle_seconds: float


@dataclass
class EngineSnapshot:
    """The engine's queue, slots and cache entries at one moment (why the head of the queue waits:
    `blocked_by`)."""

    waiting: int
    active: int
    blocked_by: str | None
    failure: str | None
    slots: list[SlotState] = field(default_factory=list)
    queue: list[QueuedState] = field(default_factory=list)
    cache: list[CachedState] = field(default_factory=list)


@dataclass
class EngineInfo:
    """What an engine reports once its model is loaded and has decoded its warm-up tokens."""

    pid: int
    n_ctx: int
    n_vocab: int
    n_embd: int
    chat_template: str | None
    bos_text: str
    eos_text: str
    special_tokens: dict[str, int] = field(default_factory=dict)
    buffer_types: dict[str, float] = field(default_factory=dict)
    load_seconds: float = 0.0
    flash_attn: bool | None = None  # in effect (llama.cpp resolves `auto`); None: it did not say
    context_buffers: dict[str, float] = field(default_factory=dict)  # MiB: "KV", "compute", "output"


class WorkerStatus(Enum):
    """Where the process running a model's engine is in its life (`EngineClient.report()["status"]`)."""

    STARTING = "starting"
    READY = "ready"
    RESTARTING = "restarting"
    FAILED = "failed"
    CLOSING = "closing"
    CLOSED = "closed"
