"""Grammar constraints through llguidance: a token bitmask applied to the logits before sampling."""

from __future__ import annotations

import ctypes
import warnings

import numpy as np
from llguidance import LLMatcher, LLTokenizer
from llguidance.llamacpp import lltokenizer_from_vocab

from lmdock.core.errors import InvalidRequest


class ConstraintFactory:
    """Builds matchers for one model; the llguidance tokenizer (about 1 s to build) is made once."""

    def __init__(self, vocab, n_vocab: int) -> None:
        self.n_vocab = n_vocab
        self._vocab = vocab
        self._tokenizer: LLTokenizer | None = None

    @property
    def tokenizer(self) -> LLTokenizer:
        if self._tokenizer is None:
            with warnings.catch_warnings():  # one DeprecationWarning per token from llama_token_get_attr
                warnings.simplefilter("ignore", DeprecationWarning)
                self._tokenizer = lltokenizer_from_vocab(self._vocab, n_vocab=self.n_vocab)
        return self._tokenizer

    def create(self, grammar: str) -> Constraint:
        matcher = LLMatcher(self.tokenizer, grammar, log_level=0)
        if matcher.is_error():
            raise InvalidRequest(f"invalid output constraint: {matcher.get_error()}")
        return Constraint(matcher, self.n_vocab)


class Constraint:
    """One request's grammar state: mask the logits, then consume the sampled token."""

    def __init__(self, matcher: LLMatcher, n_vocab: int) -> None:
        self.matcher = matcher
        self.n_vocab = n_vocab
        self._mask = np.zeros((n_vocab + 31) // 32, dtype=np.int32)

    def apply(self, logits_ptr) -> None:
        """Set every token the grammar forbids to -inf in the context's logits buffer, in place."""
        self.matcher.unsafe_compute_mask_ptr(self._mask.ctypes.data, self._mask.nbytes)
        allowed = np.unpackbits(self._mask.view(np.uint8), bitorder="little")[: self.n_vocab]
        fptr = ctypes.cast(logits_ptr, ctypes.POINTER(ctypes.c_float))
        logits = np.ctypeslib.as_array(fptr, shape=(self.n_vocab,))
        logits[allowed == 0] = -np.inf

    def consume(self, token: int) -> bool:
        """Advance the grammar; False if the token was not allowed (the matcher is then in error)."""
        return self.matcher.consume_token(token)

    def valid_prefix(self, tokens: list[int]) -> int:
        """How many leading `tokens` the grammar would accept from its current state (none consumed)."""
        return self.matcher.validate_tokens(tokens)

    @property
    def done(self) -> bool:
        return self.matcher.is_stopped()

    @property
    def error(self) -> str | None:
        return self.matcher.get_error() if self.matcher.is_error() else None


def special_tokens_of(tokenizer: LLTokenizer) -> dict[str, int]:
    """Texts and ids of the tokens an llguidance LLTokenizer treats as special (control tokens, and
    user-defined ones shaped like `<...>`), for ChatFormatter(special_tokens=...)."""
    out: dict[str, int] = {}
    for token in range(tokenizer.vocab_size):
        if tokenizer.is_special_token(token):
            text = tokenizer.decode_bytes([token]).decode("utf-8", errors="replace")
            if text:
                out.setdefault(text, token)
    return out
