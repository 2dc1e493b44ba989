"""Token log-probabilities, computed once at sampling time from the logits row the sampler saw.

The row is read after the grammar mask (so a constrained request reports the distribution it was really
sampled from) and before temperature, as OpenAI reports them. Cost when asked for: one log-softmax over the
vocabulary (numpy, well under a millisecond for 150k tokens) and a top-k by argpartition.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable

import numpy as np

from lmdock.engine.types import TokenLogprob

MAX_TOP = 20  # OpenAI's limit for top_logprobs


def logits_row(logits_ptr, n_vocab: int) -> np.ndarray:
    """A zero-copy view of one row of llama.cpp's logits buffer."""
    fptr = ctypes.cast(logits_ptr, ctypes.POINTER(ctypes.c_float))
    return np.ctypeslib.as_array(fptr, shape=(n_vocab,))


def token_logprob(row: np.ndarray, token: int, top: int, piece: Callable[[int], bytes]) -> TokenLogprob:
    """The sampled token's log-probability under `row`, and the `top` most likely tokens, best first.

    `token` is left empty here: the sequence fills in the text this token added to the output."""
    row = row.astype(np.float64)
    peak = np.max(row)
    log_z = peak + np.log(np.sum(np.exp(row - peak)))
    chosen = float(row[token] - log_z)
    best: list[tuple[str, float]] = []
    k = min(max(top, 0), MAX_TOP, row.size)
    if k:
        ids = np.argpartition(-row, k - 1)[:k]
        ids = ids[np.argsort(-row[ids], kind="stable")]
        # tokens a grammar forbids have -inf: not alternatives, and not representable in JSON
        best = [
            (piece(int(i)).decode("utf-8", errors="replace"), float(row[i] - log_z))
            for i in ids
            if np.isfinite(row[i])
        ]
    return TokenLogprob(token="", logprob=min(chosen, 0.0), top=[(t, min(lp, 0.0)) for t, lp in best])
