"""Apply the alias table (aliases.py) to a parsed config: seed spellings -> canonical keys.

`canonicalize(tree, method)` returns the rewritten tree with a record of every move
(written path -> canonical path) and the rows used, so that error messages and warnings
can name the key as the user wrote it (`model.lora_config.r (= optimization.lora_rank)`).
"""

from __future__ import annotations

import copy
import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from prospect.config.aliases import ALIASES, CONTAINER_FALLBACK, METHOD_SECTION, Alias, aliases_at, method_section
from prospect.config.keys import Path, dotted

_RULES: dict[tuple[str, str], Alias] = {(a.where, a.key): a for a in ALIASES}
_WHERES: tuple[str, ...] = tuple(dict.fromkeys(a.where for a in ALIASES if a.where))
_CONTAINERS = {(a.where + "." + a.key).lstrip(".") for a in ALIASES if a.action == "container"}


class AliasError(Exception):
    """An alias that cannot be applied; `path` is the key as written, for locating it."""

    def __init__(self, path: Path, message: str) -> None:
        super().__init__(message)
        self.path = path
        self.message = message


@dataclass
class Canonical:
    """Result of `canonicalize`: the rewritten tree, each move (written path -> canonical
    path), and (written path, message) warnings."""

    tree: dict[Any, Any]
    moves: list[tuple[Path, Path]] = field(default_factory=list)
    warnings: list[tuple[Path, str]] = field(default_factory=list)
    rules: dict[Path, Alias] = field(default_factory=dict)


def _target_path(alias: Alias, method: str) -> Path:
    return tuple(alias.target.replace(METHOD_SECTION, method_section(method)).split("."))


def canonicalize(tree: Mapping[Any, Any], method: str) -> Canonical:
    """Rewrite seed spellings in `tree` (a parsed config mapping) to canonical keys.

    `method` is the run's method name; it decides where `{method}` targets land. The
    input is not modified. Raises `AliasError` when an alias and the key it stands for
    are both given with different values, or a key is ambiguous.
    """
    out: dict[Any, Any] = copy.deepcopy(dict(tree))
    result = Canonical(out)
    written_by: dict[Path, Path] = {}
    if isinstance(out.get("method"), str):
        out["method"] = {"name": out["method"]}
    # Top level first (containers there write into sections), then each section.
    _process(out, (), "", method, result, written_by)
    for where in _WHERES:
        if where in _CONTAINERS:
            continue  # handled when its parent mapping is processed
        node = _get(out, tuple(where.split(".")))
        if isinstance(node, dict):
            _process(node, tuple(where.split(".")), where, method, result, written_by)
    return result


def _process(
    node: dict[Any, Any],
    path: Path,
    where: str,
    method: str,
    result: Canonical,
    written_by: dict[Path, Path],
    container: str | None = None,
) -> None:
    """Apply the rows for `where` to the keys of `node` (found at `path` in the input)."""
    for key in list(node):
        rule = _RULES.get((where, key)) if isinstance(key, str) else None
        src = path + (key,)
        if rule is None:
            if container is None:
                continue  # a canonical key (or an unknown one pydantic will name)
            target = _fallback_target(container, key)
            if target is None:
                raise AliasError(src, f"unknown key in the {container}: block{_container_hint(container, key)}")
            _move(result, written_by, src, target, node.pop(key), None)
            continue
        value = node.pop(key)
        if rule.action == "ambiguous":
            raise AliasError(src, rule.note.replace("{key}", str(key)))
        if rule.action == "ignore":
            result.warnings.append((src, f"ignored: {rule.note} ({rule.origin})"))
            continue
        if rule.action == "container":
            if value is None:
                continue
            if not isinstance(value, dict):
                raise AliasError(src, f"expected a mapping ({rule.origin} block), got {type(value).__name__}")
            sub_where = (where + "." + key).lstrip(".")
            _process(value, src, sub_where, method, result, written_by, container=sub_where)
            continue
        if rule.action == "sweep":
            grid = value if isinstance(value, list) else [value]
            sweep = result.tree.get("sweep")
            if sweep is None:
                sweep = result.tree["sweep"] = {}
            elif not isinstance(sweep, dict):
                raise AliasError(src, "cannot add the deltas grid: 'sweep' is not a mapping")
            if "method.delta" in sweep and sweep["method.delta"] != grid:
                raise AliasError(src, f"deltas {grid!r} conflicts with sweep['method.delta'] {sweep['method.delta']!r}")
            sweep["method.delta"] = grid
            result.moves.append((src, ("sweep", "method.delta")))
            result.rules[src] = rule
            continue
        _move(result, written_by, src, _target_path(rule, method), value, rule)


def _container_hint(container: str, key: Any) -> str:
    accepted = aliases_at(container) + _fallback_names(container)
    close = difflib.get_close_matches(str(key), accepted, n=1, cutoff=0.6)
    if close:
        return f" (did you mean '{container}.{close[0]}'?)"
    sections = [section for section, _ in CONTAINER_FALLBACK.get(container, ())]
    extra = f", or any {'/'.join(sections)} key name" if sections else ""
    return f" (accepted: {', '.join(aliases_at(container))}{extra})"


def _fallback_names(container: str) -> list[str]:
    return [n for _, cls in CONTAINER_FALLBACK.get(container, ()) for n in cls.model_fields]


def _fallback_target(container: str, key: Any) -> Path | None:
    for section, cls in CONTAINER_FALLBACK.get(container, ()):
        if isinstance(key, str) and key in cls.model_fields:
            return (section, key)
    return None


def _move(
    result: Canonical, written_by: dict[Path, Path], src: Path, dst: Path, value: Any, rule: Alias | None
) -> None:
    """Put `value` at `dst`, refusing to overwrite a different value already there."""
    node = result.tree
    for i, part in enumerate(dst[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        elif part == "method" and i == 0 and isinstance(child, str):
            child = node[part] = {"name": child}
        if not isinstance(child, dict):
            raise AliasError(src, f"cannot set {dotted(dst)} (alias target): {dotted(dst[: i + 1])} is not a mapping")
        node = child
    leaf = dst[-1]
    if value is None and leaf in node:
        return  # a null alias (e.g. the `max_completion_length: null` a resolved config holds) sets nothing
    if leaf in node and node[leaf] != value:
        other = written_by.get(dst, dst)
        raise AliasError(
            src, f"conflicts with {dotted(other)}: both set {dotted(dst)} ({value!r} vs {node[leaf]!r}); keep one"
        )
    node[leaf] = value
    written_by[dst] = src
    result.moves.append((src, dst))
    if rule is not None:
        result.rules[src] = rule


def _get(tree: Any, path: Path) -> Any:
    node = tree
    for part in path:
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node
