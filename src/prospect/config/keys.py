"""Dotted keys of a config class: paths into a config tree and the pydantic model at each.

A path is a tuple of keys and list indices (`("models", 0, "id")`); its dotted form is
`models.0.id`. The loader, the override merger and the error messages walk the schema
through these helpers; they take the config class as an argument, so nothing here imports
`RunConfig` (schema.py is built on top of the loading code).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, get_args

from pydantic import BaseModel

#: A key path into a config tree: keys (str) and list indices (int).
Path = tuple[Any, ...]


def dotted(path: Iterable[Any]) -> str:
    return ".".join(str(p) for p in path)


def nest(path: Sequence[Any], value: Any) -> dict[Any, Any]:
    """`{"a": {"b": value}}` for path ("a", "b")."""
    tree: Any = value
    for part in reversed(path):
        tree = {part: tree}
    return tree


def unwrap_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = unwrap_model(arg)
        if found is not None:
            return found
    return None


def model_at(config_cls: type[BaseModel], path: Sequence[Any]) -> type[BaseModel] | None:
    """The pydantic model at dotted `path` (list indices skipped), or None if not a model."""
    current: type[BaseModel] | None = config_cls
    for part in path:
        if isinstance(part, int):
            continue
        if current is None or not isinstance(part, str) or part not in current.model_fields:
            return None
        current = unwrap_model(current.model_fields[part].annotation)
    return current


def leaf_keys(config_cls: type[BaseModel]) -> list[str]:
    """Every canonical dotted key of `config_cls` (leaf fields), in schema order."""
    out: list[str] = []

    def walk(cls: type[BaseModel], prefix: str) -> None:
        for name, info in cls.model_fields.items():
            sub = unwrap_model(info.annotation)
            if sub is not None and get_args(info.annotation) == ():
                walk(sub, prefix + name + ".")
            else:
                out.append(prefix + name)

    walk(config_cls, "")
    return out
