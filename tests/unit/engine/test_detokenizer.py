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
        emitted.append(m.feed(piece))
        stop = m.hit
        if stop:
            break
    assert "".join(emitted) == "Hello "
    assert stop == "</end>"


def test_partial_match_that_does_not_complete_is_released():
    m = StopMatcher(["STOP"])
    a = m.feed("ST")
    b = m.feed("ART")
    assert a == "" and b == "START" and m.hit is None


def test_earliest_stop_wins_and_flush_returns_held_text():
    m = StopMatcher(["b", "a"])
    assert m.feed("xxab") == "xx" and m.hit == "a"
    m2 = StopMatcher(["abc"])
    assert m2.feed("zab") == "z" and m2.hit is None
    assert m2.flush() == "ab"


def test_no_stops_passes_through():
    m = StopMatcher([])
    assert m.feed("anything") == "anything" and m.hit is None


def test_stop_matcher_holds_back_partial_matches():
    m = StopMatcher(["STOP", "\n\n"])
    assert m.feed("abc ST") == "abc "
    assert m.feed("O") == ""
    assert m.feed("Px") == "" and m.hit == "STOP"
    m = StopMatcher(["END"])
    assert m.feed("EN") == "" and m.feed("d") == "ENd" and m.flush() == ""
