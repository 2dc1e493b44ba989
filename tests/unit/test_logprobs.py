"""Logprobs: computed from a logits row, and lined up with the text the client receives."""

import numpy as np

from lmdock.chat.logprobs import LogprobAligner
from lmdock.core.events import TokenLogprob
from lmdock.engine.logprobs import token_logprob


def test_log_softmax_and_top_k():
    row = np.array([1.0, 3.0, 2.0, -np.inf, 0.5], dtype=np.float32)
    lp = token_logprob(row, 1, 3, lambda t: f"t{t}".encode())
    expected = np.log(np.exp(3.0) / np.exp(row[np.isfinite(row)]).sum())
    assert abs(lp.logprob - expected) < 1e-6
    assert [t for t, _ in lp.top] == ["t1", "t2", "t0"]
    assert [v for _, v in lp.top] == sorted((v for _, v in lp.top), reverse=True)
    assert all(v <= 0 for _, v in lp.top)


def test_forbidden_tokens_are_never_alternatives():
    row = np.array([0.0, -np.inf, -np.inf], dtype=np.float32)
    lp = token_logprob(row, 0, 3, lambda t: b"x")
    assert lp.logprob == 0.0 and len(lp.top) == 1


def _entries(*tokens):
    return [TokenLogprob(t, -float(i), [(t, -float(i))]) for i, t in enumerate(tokens)]


def test_plain_text_passes_through():
    al = LogprobAligner()
    al.add(_entries("Hel", "lo", " world"))
    got = al.take("Hello") + al.take(" world") + al.flush()
    assert [e.token for e in got] == ["Hel", "lo", " world"]


def test_hidden_markers_and_trimmed_blanks_are_left_out():
    al = LogprobAligner()
    al.add(_entries("<think>", "plan", "</think>", "\n\n", "Answer", ".", "<tool_call>", "{}"))
    al.skip("plan")
    got = al.take("Answer.") + al.flush()
    assert "".join(e.token for e in got) == "Answer."
    assert [e.token for e in got] == ["Answer", "."]


def test_a_token_split_across_deltas_is_one_entry():
    al = LogprobAligner()
    al.add(_entries("ab <", "x"))
    first = al.take("ab ")  # the parser held back "<" (it might have opened a marker)
    second = al.take("<x") + al.flush()
    assert first == [] and [e.token for e in second] == ["ab <", "x"]


def test_stop_text_beyond_the_answer_is_dropped():
    al = LogprobAligner()
    al.add(_entries("one", " two", "STOP"))
    got = al.take("one two") + al.flush()
    assert [e.token for e in got] == ["one", " two"]
