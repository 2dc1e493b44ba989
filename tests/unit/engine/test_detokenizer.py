"""Incremental UTF-8 decoding and stop-string holding."""

from lmdock.engine.detokenizer import IncrementalDecoder, StopMatcher


def test_utf8_split_across_tokens_is_not_broken():
    d = IncrementalDecoder()
    data = "héllo 🌍".encode()
    out = "".join(d.feed(data[i : i + 1]) for i in range(len(data))) + d.flush()
    assert out == "héllo 🌍"


def test_stop_string_split_across_chunks_is_never_emitted():
    m = StopMatcher(["</end>"])
    emitted = []
    stop = None
    for piece in ["Hello </", "en", "d> more"]:
        text, stop = m.feed(piece)
        emitted.append(text)
        if stop:
            break
    assert "".join(emitted) == "Hello "
    assert stop == "</end>"


def test_partial_match_that_does_not_complete_is_released():
    m = StopMatcher(["STOP"])
    a, _ = m.feed("ST")
    b, _ = m.feed("ART")
    assert a == "" and b == "START"


def test_earliest_stop_wins_and_flush_returns_held_text():
    m = StopMatcher(["b", "a"])
    assert m.feed("xxab") == ("xx", "a")
    m2 = StopMatcher(["abc"])
    assert m2.feed("zab") == ("z", None)
    assert m2.flush() == "ab"


def test_no_stops_passes_through():
    assert StopMatcher([]).feed("anything") == ("anything", None)
