"""POST /v1/embeddings: pooled, L2-normalised embeddings from the requested model, float or base64."""

from __future__ import annotations

import asyncio
import base64

import numpy as np
from fastapi import APIRouter, Request
from openai.types import CreateEmbeddingResponse, Embedding
from openai.types.create_embedding_response import Usage

from lmdock.api.limits import limits_of
from lmdock.api.openai.schema import EmbeddingParams
from lmdock.api.openai.shared import model_for, read_json
from lmdock.api.request_log import note_usage
from lmdock.api.validation import validate_body
from lmdock.config import RequestLimits
from lmdock.core import events as ev
from lmdock.core.errors import InvalidRequest, LmdockError
from lmdock.engine.embeddings import Embedder
from lmdock.models.embedders import Embedders

router = APIRouter()

Input = str | list[int]


def _inputs(raw: str | list[str] | list[int] | list[list[int]]) -> list[Input]:
    if isinstance(raw, str):
        return [raw]
    if not raw:
        raise InvalidRequest("input: must not be empty", param="input")
    if all(isinstance(x, int) for x in raw):
        return [list(raw)]  # type: ignore[arg-type]
    return list(raw)  # type: ignore[arg-type]


def _embedders(request: Request) -> Embedders:
    app = request.app
    if getattr(app.state, "embedders", None) is None:
        app.state.embedders = Embedders(n_threads=app.state.settings.threads)
    return app.state.embedders


def _tokenize_all(embedder: Embedder, inputs: list[Input], limits: RequestLimits) -> list[list[int]]:
    """Every input's tokens, refusing ids outside the vocabulary and more tokens than the limit."""
    out, total = [], 0
    for item in inputs:
        tokens = embedder.tokenize(item) if isinstance(item, str) else list(item)
        total += len(tokens)
        if total > limits.max_embedding_tokens:
            raise InvalidRequest(
                f"input: more than {limits.max_embedding_tokens} tokens in one request "
                "(see --max-embedding-tokens)",
                param="input",
            )
        out.append(tokens)
    return out


async def _embed_all(request: Request, embedder: Embedder, token_lists: list[list[int]]) -> list[np.ndarray]:
    """One input at a time off the event loop, stopping when the client has gone."""
    vectors = []
    for tokens in token_lists:
        if await request.is_disconnected():
            raise LmdockError("client disconnected")
        vectors.append(await asyncio.to_thread(embedder.embed, tokens))
    return vectors


def _encode(vector: np.ndarray, encoding: str) -> list[float] | str:
    if encoding == "base64":  # little-endian float32, as the openai SDK decodes it
        return base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
    return vector.tolist()


@router.post("/v1/embeddings")
async def create_embeddings(request: Request):
    params = validate_body(EmbeddingParams, await read_json(request))
    inputs = _inputs(params.input)
    limits = limits_of(request)
    if len(inputs) > limits.max_embedding_inputs:
        raise InvalidRequest(
            f"input: at most {limits.max_embedding_inputs} inputs per request (got {len(inputs)}; "
            "see --max-embedding-inputs)",
            param="input",
        )
    model = await model_for(request, params.model, params.ttl)
    embedder = await _embedders(request).get(model, request.app.state.manager.loaded)
    if params.dimensions is not None and params.dimensions != embedder.n_embd:
        raise InvalidRequest(
            f"dimensions: {model.key} embeds in {embedder.n_embd} dimensions", param="dimensions"
        )
    token_lists = await asyncio.to_thread(_tokenize_all, embedder, inputs, limits)
    vectors = await _embed_all(request, embedder, token_lists)
    n_tokens = sum(len(t) for t in token_lists)
    note_usage(request, model.key, ev.Usage(input_tokens=n_tokens))
    data = [
        # model_construct: a base64 embedding is a string, which the float-list type does not allow
        Embedding.model_construct(object="embedding", index=i, embedding=_encode(v, params.encoding_format))
        for i, v in enumerate(vectors)
    ]
    response = CreateEmbeddingResponse.model_construct(
        object="list",
        data=data,
        model=params.model,
        usage=Usage(prompt_tokens=n_tokens, total_tokens=n_tokens),
    )
    return response.model_dump(mode="json")
