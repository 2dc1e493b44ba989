"""Request-body validation shared by every protocol: the first problem becomes a 400 naming its field."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from lmdock.core.errors import InvalidRequest

_M = TypeVar("_M", bound=BaseModel)


def _is_type_tag(part: object) -> bool:
    """Union members and validators add their own names to an error location (`str`, `list[str]`,
    `function-after[...]`, `NamedToolChoice`); a client wants the field path only."""
    return isinstance(part, str) and (
        "[" in part or part[:1].isupper() or part in ("str", "int", "float", "bool", "dict", "list")
    )


def validate_body(model: type[_M], body: Any) -> _M:
    """Validate a decoded JSON body against `model`; raise InvalidRequest("<field.path>: <problem>")."""
    if not isinstance(body, dict):
        raise InvalidRequest("request body must be a JSON object")
    try:
        return model.model_validate(body)
    except ValidationError as err:
        first = err.errors()[0]
        param = ".".join(str(p) for p in first["loc"] if not _is_type_tag(p)) or None
        msg = "Field required" if first["type"] == "missing" else first["msg"]
        raise InvalidRequest(f"{param}: {msg}" if param else msg, param=param) from None
