"""What the API layers use of a model, whoever computes its tokens: `ServedModel`, implemented by a local
model (models/loaded.py, a llama.cpp worker) and by an upstream one (upstream/model.py, other engines).

The protocols are structural: neither implementation imports this module, and the type checker holds
each to it where the manager hands a model out. What only a local model can do (embeddings) is an
optional capability (`embedder` is None upstream), not a type to sniff."""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Protocol

from lmdock.chat.session import PreparedChat
from lmdock.core.request import ChatRequest, SamplingParams


class ChatService(Protocol):
    """Turns core requests into running generations (a model's `session`)."""

    async def prepare(self, req: ChatRequest) -> PreparedChat: ...

    async def prepare_raw(
        self,
        prompt: str | list[int],
        max_tokens: int,
        sampling: SamplingParams,
        stop: list[str],
        logprobs: int | None = None,
    ) -> PreparedChat: ...

    async def count_tokens(self, req: ChatRequest) -> int: ...


class Embedder(Protocol):
    """Pooled embeddings of token lists (the local engine's own context)."""

    @property
    def n_embd(self) -> int | None: ...

    def embedding_tokens(self, text: str) -> list[int]:
        """`text` as the embedder reads it: special tokens added, special-token text kept as text."""
        ...

    def hold(self) -> AbstractContextManager[None]: ...

    async def embed(self, inputs: list[list[int]]) -> tuple[list, int]: ...


class ServedModel(Protocol):
    """A model requests can be sent to: local or upstream."""

    @property
    def key(self) -> str: ...

    @property
    def n_ctx(self) -> int: ...

    @property
    def session(self) -> ChatService: ...

    @property
    def busy(self) -> bool: ...

    @property
    def embedder(self) -> Embedder | None: ...

    @property
    def crashes(self) -> int:
        """Times the model's own engine process died (0 for an upstream model)."""
        ...

    def touch(self) -> None: ...
