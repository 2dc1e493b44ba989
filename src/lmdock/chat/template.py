"""Sandboxed rendering of a model's own Jinja chat template, with the helpers Hugging Face provides.

GGUF templates are untrusted input (CVE-2024-34359 was code execution through exactly this), so they
run in jinja2's immutable sandbox, and any failure, including a blocked attribute, is a TemplateError.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import jinja2
from jinja2.ext import Extension, loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

from lmdock.core.errors import InvalidRequest

_MAX_OUTPUT = 16 << 20  # characters; a template looping out text must not eat the server's memory


class TemplateError(InvalidRequest):
    """The chat template failed to render (its own raise_exception, a bug, or a sandbox violation)."""


class _IgnoreGeneration(Extension):
    """Accepts HF's `{% generation %}..{% endgeneration %}` (training masks) and renders the body as is."""

    tags = {"generation"}

    def parse(self, parser: Any) -> list[Any]:
        next(parser.stream)
        return parser.parse_statements(("name:endgeneration",), drop_needle=True)


def _raise_exception(message: str) -> None:
    raise TemplateError(f"chat template: {message}")


def _tojson(
    value: Any,
    ensure_ascii: bool = False,
    indent: int | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
) -> str:
    """Like transformers' tojson: no HTML escaping, unlike jinja2's built-in filter."""
    return json.dumps(
        value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


def _environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True,
        lstrip_blocks=True,
        extensions=[_IgnoreGeneration, loopcontrols],
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env


class ChatTemplate:
    """A compiled template; render() maps every failure to TemplateError."""

    def __init__(self, source: str) -> None:
        try:
            self._template = _environment().from_string(source)
        except jinja2.TemplateError as e:
            raise TemplateError(f"chat template does not compile: {e}") from e

    def render(self, **context: Any) -> str:
        size = 0
        parts = []
        try:
            for part in self._template.generate(**context):
                size += len(part)
                if size > _MAX_OUTPUT:
                    raise TemplateError("chat template output is too large")
                parts.append(part)
        except TemplateError:
            raise
        except Exception as e:  # the sandbox's SecurityError, template bugs, type errors...
            raise TemplateError(f"chat template failed: {type(e).__name__}: {e}") from e
        return "".join(parts)
