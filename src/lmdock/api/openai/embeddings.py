"""POST /v1/embeddings: pooled, L2-normalised embeddings from the requested model, float or base64."""

from __future__ import annotations

import asyncio
import base64

import numpy as np
from fastapi import APIRouter, Request
from openai.types import CreateEmbeddingResponse, Embedding
from openai.types.create_embedding_response import Usage

from lmdock.api.limits import limits_of
from lmdock.api.openai.convert import TextOrTokens, text_or_token_items
from lmdock.api.openai.schema import EmbeddingParams
from lmdock.api.openai.shared import model_for, read_json
from lmdock.api.request_log import note_usage
from lmdock.api.validation import validate_body
from lmdock.core import events as ev
from lmdock.core.config import RequestLimits
from lmdock.core.errors import InvalidRequest
from lmdock.models.served import Embedder

router = APIRouter()


def _tokenize_all(embedder: Embedder, inputs: list[TextOrTokens], limits: RequestLimits) -> list[list[int]]:
    """Every input's tokens (as the embedder reads them), refusing more tokens in all than the limit
    before the worker is asked to embed anything."""
    out, total = [], 0
    for item in inputs:
        tokens = embedder.embedding_tokens(item) if isinstance(item, str) else item
        total += len(tokens)
        if total > limits.max_embedding_tokens:
            raise InvalidRequest(
                f"input: more than {limits.max_embedding_tokens} tokens in one request "
                "(see --max-embedding-tokens)",
                param="input",
            )
        out.append(list(tokens))
    return out


def _encode(vector: np.ndarray, encoding: str) -> list[float] | str:
    if encoding == "base64":  # little-endian float32, as the openai SDK decodes it
        return base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
    return vector.tolist()


@router.post("/v1/embeddings")
async def create_embeddings(request: Request):
    params = validate_body(EmbeddingParams, await read_json(request))
    inputs = text_or_token_items(params.input, "input")
    limits = limits_of(request)
    if len(inputs) > limits.max_embedding_inputs:
        raise InvalidRequest(
            f"input: at most {limits.max_embedding_inputs} inputs per request (got {len(inputs)}; "
            "see --max-embedding-inputs)",
            param="input",
        )
    model = await model_for(request, params.model, params.ttl)
    embedder = model.embedder
    if embedder is None:
        raise InvalidRequest(f"model: {model.key} is served by upstream engines, which embed nothing here")
    tokens = await asyncio.to_thread(_tokenize_all, embedder, inputs, limits)
    if params.dimensions is not None and params.dimensions != embedder.n_embd:
        raise InvalidRequest(
            f"dimensions: {model.key} embeds in {embedder.n_embd} dimensions", param="dimensions"
        )
    with embedder.hold():
        vectors, n_tokens = await embedder.embed(tokens)
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
