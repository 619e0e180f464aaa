"""Typed construction of frozen settings dataclasses from TOML / JSON documents.

Pure: checks every key of a document against the dataclass's type hints and collects every
problem (unknown key, wrong type, missing field) instead of stopping at the first. Used by the
policy files and the simulator's configuration.
"""

from __future__ import annotations

import types
from collections import abc
from collections.abc import Mapping
from dataclasses import MISSING, fields
from enum import Enum
from typing import Any, TypeVar, Union, get_args, get_origin, get_type_hints

T = TypeVar("T")
_BAD = object()


def _convert(value: Any, tp: Any) -> Any:
    """*value* as type *tp*, or _BAD. Integers are accepted where floats are expected."""
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        if value is None:
            return None if type(None) in get_args(tp) else _BAD
        for arg in get_args(tp):
            if arg is type(None):
                continue
            converted = _convert(value, arg)
            if converted is not _BAD:
                return converted
        return _BAD
    if origin is tuple:
        (item_type, *_rest) = get_args(tp)
        if not isinstance(value, list | tuple):
            return _BAD
        items = [_convert(v, item_type) for v in value]
        return _BAD if any(i is _BAD for i in items) else tuple(items)
    if origin in (dict, abc.Mapping):
        key_type, value_type = get_args(tp) or (Any, Any)
        if not isinstance(value, Mapping):
            return _BAD
        pairs = {_convert(k, key_type): _convert(v, value_type) for k, v in value.items()}
        return _BAD if _BAD in pairs or _BAD in pairs.values() else pairs
    if tp is Any or origin is not None:
        return value
    if isinstance(tp, type) and issubclass(tp, Enum):
        try:
            return tp(value)
        except ValueError:
            return _BAD
    if tp is bool:
        return value if isinstance(value, bool) else _BAD
    if tp is int:
        return value if isinstance(value, int) and not isinstance(value, bool) else _BAD
    if tp is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return float(value) if ok else _BAD
    if tp is str:
        return value if isinstance(value, str) else _BAD
    return value if isinstance(value, tp) else _BAD


def describe(tp: Any) -> str:
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        return " or ".join(describe(a) for a in get_args(tp) if a is not type(None))
    if origin is tuple:
        return f"a list of {describe(get_args(tp)[0])}"
    if isinstance(tp, type) and issubclass(tp, Enum):
        return "one of " + ", ".join(repr(m.value) for m in tp)
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )


def build(cls: type[T], doc: Any, where: str, problems: list[str]) -> T | None:
    """An instance of dataclass *cls* from *doc*, or None after appending every problem."""
    if not isinstance(doc, Mapping):
        problems.append(f"{where}: expected a table, got {doc!r}")
        return None
    hints = get_type_hints(cls)
    known = {f.name: f for f in fields(cls)}  # type: ignore[arg-type]  # cls is a dataclass
    kwargs: dict[str, Any] = {}
    before = len(problems)
    for key, value in doc.items():
        if key not in known:
            problems.append(f"{where}: unknown key {key!r} (known: {', '.join(sorted(known))})")
            continue
        converted = _convert(value, hints[key])
        if converted is _BAD:
            problems.append(f"{where}.{key}: expected {describe(hints[key])}, got {value!r}")
            continue
        kwargs[key] = converted
    for name, f in known.items():
        if name not in doc and f.default is MISSING and f.default_factory is MISSING:
            problems.append(f"{where}: {name!r} is required")
    if len(problems) > before:
        return None
    return cls(**kwargs)
