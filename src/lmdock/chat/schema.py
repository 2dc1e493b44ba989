"""JSON Schemas made safe for llguidance: a schema it rejects is loosened, never a failed request."""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

from llguidance import LLMatcher

# Bounded blanks inside JSON: a small model cannot loop on newlines forever, and pretty-printing fits.
_GUIDANCE = {"lenient": True, "whitespace_pattern": r"[\x20\x0A\x0D\x09]{1,24}"}
# Keywords that still fail under `lenient` (regex dialect, formats) and only narrow what is valid.
_RISKY = frozenset(
    {
        "pattern",
        "patternProperties",
        "format",
        "propertyNames",
        "dependentSchemas",
        "if",
        "then",
        "else",
        "not",
        "contentSchema",
    }
)
_SCHEMA_MAPS = frozenset({"properties", "$defs", "definitions", "dependentSchemas"})
_SCHEMA_LISTS = frozenset({"anyOf", "allOf", "oneOf", "prefixItems"})
_SCHEMA_ONE = frozenset(
    {
        "items",
        "additionalProperties",
        "contains",
        "additionalItems",
        "unevaluatedProperties",
        "unevaluatedItems",
    }
)


def guided_schema(schema: dict[str, Any], fallback: dict[str, Any]) -> str:
    """The schema as JSON text for `%json`, loosened until llguidance accepts it, else `fallback`."""
    return _guided(json.dumps(schema, ensure_ascii=False), json.dumps(fallback))


@lru_cache(maxsize=512)
def _guided(schema_json: str, fallback_json: str) -> str:
    schema = json.loads(schema_json)
    for candidate in (schema, _strip_risky(schema), json.loads(fallback_json)):
        text = json.dumps({**candidate, "x-guidance": _GUIDANCE}, ensure_ascii=False)
        if not LLMatcher.validate_grammar(f"start: %json {text}"):
            return text
    raise ValueError(f"llguidance rejects even the fallback schema {fallback_json}")


def _strip_risky(schema: Any) -> Any:
    """Drop the risky keywords everywhere a subschema can sit (not from property names)."""
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in _RISKY:
            continue
        if key in _SCHEMA_MAPS and isinstance(value, dict):
            out[key] = {name: _strip_risky(sub) for name, sub in value.items()}
        elif key in _SCHEMA_LISTS and isinstance(value, list):
            out[key] = [_strip_risky(sub) for sub in value]
        elif key in _SCHEMA_ONE:
            out[key] = [_strip_risky(s) for s in value] if isinstance(value, list) else _strip_risky(value)
        else:
            out[key] = value
    return out
