"""Request bodies for every protocol: one safe JSON reader, and validation whose first problem becomes a
400 naming its field path (`messages.2.content.0.source: Input should be a valid dictionary`).

API layers (Anthropic, OpenAI, Responses, management) call `read_json` then `validate_body`; the
envelope (Anthropic's or OpenAI's) is chosen by the error handler from the route.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Hashable
from typing import Any, TypeVar, get_args

from pydantic import BaseModel, GetCoreSchemaHandler, ValidationError
from pydantic_core import CoreSchema, core_schema
from starlette.requests import Request

from lmdock.core import safejson
from lmdock.core.errors import InvalidRequest

_M = TypeVar("_M", bound=BaseModel)
_INSTANCE_OF = re.compile(r" or instance of \w+")
log = logging.getLogger(__name__)


async def read_json(request: Request) -> Any:
    """The request body as JSON, decoded with depth, number and surrogate limits (core.safejson)."""
    raw = await request.body()
    if log.isEnabledFor(logging.DEBUG):
        log.debug("%s %s body: %s", request.method, request.url.path, raw[:20000].decode(errors="replace"))
    return safejson.loads(raw)


def _is_type_tag(part: object) -> bool:
    """Union members and validators add their own names to an error location (`str`, `list[str]`,
    `function-after[...]`, `NamedToolChoice`); a client wants the field path only."""
    return isinstance(part, str) and (
        "[" in part or part[:1].isupper() or part in ("str", "int", "float", "bool", "dict", "list")
    )


def error_path(loc: tuple[Any, ...], prefix: str = "") -> str:
    """A pydantic error location as the dotted field path a client reads."""
    parts = [str(p) for p in loc if not _is_type_tag(p)]
    return ".".join([prefix, *parts] if prefix else parts)


def _clean(msg: str) -> str:
    """Pydantic's wording without lmdock's class names (`... or instance of TextBlock`)."""
    return _INSTANCE_OF.sub("", msg).removeprefix("Value error, ")


def invalid(err: ValidationError, prefix: str = "") -> InvalidRequest:
    """The first problem of a ValidationError as a 400 naming its field."""
    errors = err.errors(include_url=False)
    # A union reports every member's problem; the member that got deepest is the one the client meant
    # (a list of blocks with one bad field, rather than "content: Input should be a valid string").
    first = max(errors, key=lambda e: len(error_path(e["loc"]).split(".")) if e["loc"] else 0)
    param = error_path(first["loc"], prefix) or None
    msg = "Field required" if first["type"] == "missing" else _clean(first["msg"])
    return InvalidRequest(f"{param}: {msg}" if param else msg, param=param)


def validate_body(model: type[_M], body: Any) -> _M:
    """Validate a decoded JSON body against `model`; raise InvalidRequest("<field.path>: <problem>")."""
    if not isinstance(body, dict):
        raise InvalidRequest("request body must be a JSON object")
    try:
        return model.model_validate(body)
    except ValidationError as err:
        raise invalid(err) from None


class ByType:
    """Marks a union of models chosen by their `type` literal (content blocks, sources, content parts):
    `Annotated[TextBlock | ImageBlock | UnknownBlock, BY_TYPE]`. Any other `type`, or none, selects the
    last member: the lenient catch-all (unknown block types are accepted and ignored). Tags are class
    names, which `error_path` leaves out of field paths."""

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        members: tuple[type[BaseModel], ...] = get_args(source)
        by_type = {get_args(m.model_fields["type"].annotation)[0]: m.__name__ for m in members[:-1]}
        fallback = members[-1].__name__

        def tag(value: Any) -> str:
            kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
            return by_type.get(kind, fallback) if isinstance(kind, str) else fallback

        choices: dict[Hashable, CoreSchema] = {m.__name__: handler.generate_schema(m) for m in members}
        return core_schema.tagged_union_schema(choices, tag)


BY_TYPE = ByType()
