"""Finding the end of streamed JSON, and repairing truncated JSON."""

from __future__ import annotations

import pytest

from lmdock.chat.calls import call_from_object, coerce_arguments, new_tool_id
from lmdock.chat.jsonutil import JsonScanner, in_string_at, repair_json


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
