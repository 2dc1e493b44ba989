"""Finding the end of streamed JSON, and repairing truncated JSON."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lmdock.chat.calls import call_from_object, call_head, coerce_arguments, new_tool_id
from lmdock.chat.jsonutil import JsonPrefix, JsonScanner, in_string_at, repair_json

_SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
_VALUES = st.recursive(
    _SCALARS | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
_OBJECTS = st.dictionaries(st.text(max_size=8), _VALUES, max_size=5)


def test_scanner_finds_the_end_fed_piecewise():
    text = '  {"a": "}\\"]", "b": [1, {"c": "{"}]} tail'
    scanner, end = JsonScanner(), None
    for i in range(1, len(text) + 1):
        end = scanner.scan(text[:i])
        if end is not None:
            break
    assert text[:end] == '  {"a": "}\\"]", "b": [1, {"c": "{"}]}'


def test_scanner_rejects_non_containers_and_waits_on_blanks():
    scanner = JsonScanner()
    assert scanner.scan("   ") is None and not scanner.invalid
    assert scanner.scan("   x") is None and scanner.invalid


def test_in_string_at():
    text = '{"a": "</x>"} </x>'
    assert in_string_at(text, text.index("</x>"))
    assert not in_string_at(text, text.rindex("</x>"))


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ('{"a": 1', {"a": 1}),
        ('{"a": "hel', {"a": "hel"}),
        ('{"a": [1, 2', {"a": [1, 2]}),
        ('{"a": 1, "b', {"a": 1}),
        ('{"a": 1, "b":', {"a": 1}),
        ('{"a": tru', {"a": True}),
        ('{"a": nu', {"a": None}),
        ('{"a": -1.', {"a": -1}),
        ('{"a": "x\\', {"a": "x"}),
        ('{"a": "x\\u00', {"a": "x"}),
        ('{"a": {"b": ["c", {"d"', {"a": {"b": ["c", {}]}}),
        ('[{"name": "f"', [{"name": "f"}]),
        ('{"a": 1} trailing text', {"a": 1}),
        ("{", {}),
    ],
)
def test_repair(text, value):
    assert repair_json(text) == value


@pytest.mark.parametrize("text", ["", "nope", "}", "<tool_call>"])
def test_unrepairable(text):
    with pytest.raises(ValueError):
        repair_json(text)


def test_call_shapes():
    assert call_from_object({"name": "f", "arguments": {"x": 1}}) == ("f", {"x": 1})
    assert call_from_object({"name": "f", "parameters": '{"x": 1}'}) == ("f", {"x": 1})
    assert call_from_object({"type": "function", "function": {"name": "f"}}) == ("f", {})
    assert call_from_object({"name": "", "arguments": {}}) is None
    assert call_from_object({"name": "f", "arguments": [1]}) is None
    assert coerce_arguments("not json") is None


def test_tool_ids_are_fresh():
    ids = {new_tool_id() for _ in range(100)}
    assert len(ids) == 100 and all(len(i) == 30 and i.startswith("toolu_") and i[6:].isalnum() for i in ids)


@given(
    value=_OBJECTS,
    indent=st.sampled_from([None, 0, 2]),
    ascii_only=st.booleans(),
    cuts=st.lists(st.integers(min_value=1, max_value=400), max_size=6),
)
def test_a_streamed_object_is_sent_as_its_own_text_and_closes_where_it_stops(value, indent, ascii_only, cuts):
    text = json.dumps(value, indent=indent, ensure_ascii=ascii_only)
    for cut in sorted({min(c, len(text)) for c in cuts}):
        stream = JsonPrefix()
        sent = "".join(stream.feed(piece) for piece in _pieces(text[:cut], 3))
        assert text.startswith(sent) and not stream.failed
        json.loads(sent + stream.closing)  # cut anywhere, it still closes as valid JSON
    stream = JsonPrefix()
    sent = "".join(stream.feed(piece) for piece in _pieces(text + ' {"after": 1}', 5))
    assert stream.done and sent == text and json.loads(sent) == value


def _pieces(text: str, size: int) -> list[str]:
    return [text[at : at + size] for at in range(0, len(text), size)]


def test_a_streamed_value_is_held_where_closing_would_be_invalid():
    stream = JsonPrefix()
    assert stream.feed('{"path": "a.py", "n": 1') == '{"path": "a.py"'  # a number may still grow
    assert stream.feed('2, "content": "def f') == ', "n": 12, "content": "def f'
    assert stream.closing == '"}'
    assert stream.feed("\\") == ""  # an escape cut in half is held
    assert stream.feed("n(x)") == "\\n(x)"


def test_sloppy_json_stops_the_stream_where_it_went_wrong():
    stream = JsonPrefix()
    assert stream.feed("{\"a\": 'single'}") == "{"
    assert stream.failed and json.loads("{" + stream.closing) == {}


def test_call_head_needs_the_name_first_and_an_object_of_arguments():
    text = '<tool_call> {"name": "get_weather", "arguments": {"city"'
    head = call_head(text, len("<tool_call>"))
    assert head is not None and head.name == "get_weather" and text[head.args_at] == "{"
    assert call_head('{"name": "f", "arguments": "{}"}') is None  # arguments as a JSON string
    assert call_head('{"arguments": {}, "name": "f"}') is None
    assert call_head('{"name": "f", "argu') is None
