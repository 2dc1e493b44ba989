"""The error tree drawn in core/errors.py's docstring is the tree of LmdockError's subclasses, wherever
they are defined, with the HTTP statuses it names."""

from __future__ import annotations

import importlib
import pkgutil
import re

import lmdock
from lmdock.core import errors


def _drawn() -> dict[str, tuple[str | None, int | None]]:
    """name -> (parent, status) from the docstring's `* Name   status ...` lines."""
    tree: dict[str, tuple[str | None, int | None]] = {}
    stack: list[tuple[int, str]] = []
    for line in (errors.__doc__ or "").splitlines():
        m = re.match(r"^( *)\* (\w+)\s*(\d{3})?", line)
        if not m:
            continue
        depth = len(m[1])
        while stack and stack[-1][0] >= depth:
            stack.pop()
        tree[m[2]] = (stack[-1][1] if stack else None, int(m[3]) if m[3] else None)
        stack.append((depth, m[2]))
    return tree


def _defined() -> dict[str, type[errors.LmdockError]]:
    for info in pkgutil.walk_packages(lmdock.__path__, "lmdock."):
        importlib.import_module(info.name)
    found: dict[str, type[errors.LmdockError]] = {"LmdockError": errors.LmdockError}
    todo = [errors.LmdockError]
    while todo:
        for sub in todo.pop().__subclasses__():
            found[sub.__name__] = sub
            todo.append(sub)
    return found


def test_the_drawn_tree_is_the_class_tree():
    drawn, defined = _drawn(), _defined()
    assert set(drawn) == set(defined)
    for name, cls in defined.items():
        parent, status = drawn[name]
        assert parent == (None if cls is errors.LmdockError else cls.__base__.__name__), name
        if status is not None:
            assert status == cls.status, name
