"""Sandboxed rendering of a model's own Jinja chat template, with the helpers Hugging Face provides.

GGUF templates are untrusted input (CVE-2024-34359 was code execution through exactly this), so they
run in jinja2's immutable sandbox, and any failure, including a blocked attribute, is a TemplateError.
"""

from __future__ import annotations

import json
import threading
import time
from datetime import datetime
from typing import Any

import jinja2
from jinja2.ext import Extension, loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment, safe_range

from lmdock.core.errors import InvalidRequest

_MAX_OUTPUT = 16 << 20  # characters; a template looping out text must not eat the server's memory
RENDER_SECONDS = 5.0  # one render; a template with huge loops is stopped with a TemplateError
_MAX_REPEAT = 1 << 20  # characters (or items) a `*` in a template may build
_deadline = threading.local()


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


def _check_time() -> None:
    until = getattr(_deadline, "until", None)
    if until is not None and time.monotonic() > until:
        raise TemplateError(f"chat template took longer than {RENDER_SECONDS:g} s to render")


def _range(*args: int) -> Any:
    """The sandbox's `range` (at most MAX_RANGE items), checking the time limit as it goes: loops over
    ranges are how a template burns time without touching anything the sandbox intercepts."""
    for i in safe_range(*args):
        if i & 255 == 0:
            _check_time()
        yield i


class _Environment(ImmutableSandboxedEnvironment):
    """The immutable sandbox, with a time limit checked on every attribute, item, call and `*`."""

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        _check_time()
        if operator == "**" and isinstance(right, int) and abs(right) > 64:
            raise TemplateError("chat template: exponent too large")
        if operator == "*":
            seq, n = (left, right) if isinstance(right, int) else (right, left)
            if isinstance(seq, (str, list, tuple)) and isinstance(n, int) and len(seq) * n > _MAX_REPEAT:
                raise TemplateError("chat template: repetition too large")
        return super().call_binop(context, operator, left, right)

    def getattr(self, obj: Any, attribute: str) -> Any:
        _check_time()
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        _check_time()
        return super().getitem(obj, argument)

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        _check_time()
        return super().call(__context, __obj, *args, **kwargs)


def _environment() -> ImmutableSandboxedEnvironment:
    env = _Environment(
        trim_blocks=True,
        lstrip_blocks=True,
        extensions=[_IgnoreGeneration, loopcontrols],
    )
    env.globals["range"] = _range
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
        """The rendered text; at most RENDER_SECONDS of work and _MAX_OUTPUT characters."""
        size = 0
        parts = []
        outer = getattr(_deadline, "until", None)
        _deadline.until = time.monotonic() + RENDER_SECONDS
        try:
            for part in self._template.generate(**context):
                size += len(part)
                if size > _MAX_OUTPUT:
                    raise TemplateError("chat template output is too large")
                _check_time()
                parts.append(part)
        except TemplateError:
            raise
        except RecursionError:
            raise TemplateError("chat template failed: recursion too deep") from None
        except Exception as e:  # the sandbox's SecurityError, template bugs, type errors...
            raise TemplateError(f"chat template failed: {type(e).__name__}: {e}") from e
        finally:
            _deadline.until = outer
        return "".join(parts)
