"""`--set a.b.c=VALUE` overrides: parsing, merging into a config tree, and the run's method.

An override's value is read as YAML (`0.2`, `[q_proj, v_proj]`, `null`); seed names work
in its key too (`training.lr=5e-6`). Sections and the sweep grid merge with an override,
other values are replaced; `models.0.id=...` indexes into a list. Which method a run has
is decided before aliases are applied (it decides where `training.beta` lands): the file,
then overrides (last wins), seed 004's `deltas` imply factual_dpo, else the class default.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from prospect.config.canonicalize import AliasError, canonicalize
from prospect.config.keys import Path, dotted, model_at, nest
from prospect.config.messages import check_method
from prospect.config.methods import METHODS
from prospect.config.redact import redact_secrets
from prospect.config.yaml_dialect import parse_value
from prospect.errors import ConfigError


@dataclass(frozen=True)
class Override:
    """One `--set KEY=VALUE` or command-line shortcut, its value already read as YAML."""

    text: str  # "kto.beta=0.2"
    label: str  # what the user typed: "--set kto.beta=0.2" or "--lr 5e-6"
    key: str
    value: Any


def parse_override(text: Any, label: str | None = None) -> Override:
    if not isinstance(text, str):
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE (a string)")
    key, sep, raw = text.partition("=")
    key = key.strip()
    if label is None:  # echoed in error messages: a secret value is shown as REDACTED
        label = f"--set {key}{sep}{redact_secrets(raw, key.split('.')[-1]) if sep else ''}"
    parts = key.split(".")
    if not sep or not key or any(not p.strip() for p in parts):
        raise ConfigError(f"{label}: expected KEY=VALUE with a dotted key, e.g. kto.beta=0.2")
    return Override(text, label, ".".join(p.strip() for p in parts), parse_value(raw))


def leaf_paths(tree: Any, path: Path, config_cls: type[BaseModel]) -> list[Path]:
    """Paths an override tree sets: leaves, or whole values at non-mergeable keys."""
    if isinstance(tree, dict) and (not path or is_mergeable(config_cls, path)):
        return [p for k, v in tree.items() for p in leaf_paths(v, path + (k,), config_cls)] or [path]
    return [path]


def is_mergeable(config_cls: type[BaseModel], path: Path) -> bool:
    """Sections (and the sweep grid) merge with an override; other values are replaced."""
    return path == ("sweep",) or model_at(config_cls, path) is not None


def merge(base: dict[Any, Any], over: Mapping[Any, Any], path: Path, config_cls: type[BaseModel], label: str) -> None:
    """Merge override tree `over` into `base` in place: sections merge, other values are replaced."""
    for key, value in over.items():
        here = path + (key,)
        current = base.get(key)
        if isinstance(value, dict) and isinstance(current, dict) and is_mergeable(config_cls, here):
            merge(current, value, here, config_cls, label)
        elif (
            isinstance(value, dict)
            and isinstance(current, list)
            and all(isinstance(k, str) and k.isdigit() for k in value)
        ):
            # models.0.id=...: index into a list
            for k, item in value.items():
                idx = int(k)
                if idx >= len(current):
                    raise ConfigError(f"{label}: {dotted(here)} has {len(current)} entries, no index {idx}")
                if isinstance(item, dict) and isinstance(current[idx], dict):
                    merge(current[idx], item, here + (idx,), config_cls, label)
                else:
                    current[idx] = item
        else:
            base[key] = copy.deepcopy(value)


def method_of(tree: Any) -> tuple[Any | None, Path | None]:
    """Explicit method name in a (raw or canonical) tree and the path it was written at."""
    if not isinstance(tree, dict):
        return None, None
    method = tree.get("method")
    if isinstance(method, str):
        return method, ("method",)
    if isinstance(method, dict) and "name" in method:
        return method["name"], ("method", "name")
    training = tree.get("training")
    if isinstance(training, dict) and "method" in training:
        return training["method"], ("training", "method")
    return None, None


def resolve_method(
    tree: dict[Any, Any],
    overrides: Sequence[Override],
    config_cls: type[BaseModel],
    lines: Mapping[Path, int],
    source: str,
) -> tuple[str, bool]:
    """(method, explicit?) from the file, then overrides (last wins); seed 004 deltas imply
    factual_dpo; else the config class's default."""
    name, where, explicit = None, None, False
    file_name, file_path = method_of(tree)
    if file_path is not None:
        name, explicit = file_name, True
        where = f"{source}:{lines.get(file_path, lines.get(file_path[:1], '?'))}: {dotted(file_path)}"
    has_deltas = "deltas" in tree
    for ov in overrides:
        parts = ov.key.split(".")
        if parts == ["deltas"]:
            has_deltas = True
        try:
            # The method given here decides only `{method}` targets, not where method.name lands.
            canon = canonicalize(nest(parts, ov.value), next(iter(METHODS))).tree
        except (AliasError, RecursionError):
            continue  # reported properly when the override is applied
        ov_name, ov_path = method_of(canon)
        if ov_path is not None and ov_path[0] == "method":
            name, explicit, where = ov_name, True, ov.label
    if explicit:
        return check_method(name, where or source), True
    if has_deltas:
        return "factual_dpo", False
    default = config_cls.model_fields["method"].get_default(call_default_factory=True)
    return str(default.name), False


def apply_to_dict(
    config_dict: Mapping[str, Any], overrides: Sequence[str], config_cls: type[BaseModel]
) -> dict[str, Any]:
    """`loader.apply_overrides` for any config class: a copy of `config_dict` with `a.b.c=value` overrides applied (seed names allowed in
    keys; values read as YAML). No validation; `config_with_overrides` validates."""
    parsed = [parse_override(o) for o in overrides]
    base = copy.deepcopy(dict(config_dict))
    method, _ = resolve_method(base, parsed, config_cls, {}, "<config>")
    if isinstance(base.get("method"), str):
        base["method"] = {"name": base["method"]}
    for ov in parsed:
        try:
            over = canonicalize(nest(ov.key.split("."), ov.value), method)
        except AliasError as exc:
            raise ConfigError(f"{ov.label}: {exc.message}") from None
        merge(base, over.tree, (), config_cls, ov.label)
    return base
