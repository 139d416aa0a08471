"""The loading pipeline: YAML text -> validated config, for any config class.

Loading runs in a fixed order so that every failure is a one-line `ConfigError`
naming the file and line (or the `--set` option) before any model is touched:

1. read the file and compose it (yaml_dialect.py): `1e-6` is a float (YAML 1.2), a key
   given twice in one mapping is refused, each key's line is kept;
2. find the method (file, then `--set`, then shortcuts; seed 004 `deltas` imply
   `factual_dpo`; else the config class's default) - aliases such as `training.beta`
   land in the active method's section;
3. rewrite seed names to canonical keys (aliases.py, canonicalize.py);
4. apply `--set a.b.c=value` overrides in order (value read as YAML; seed names work
   in the key too), then command-line shortcuts (`--lr`, `--kto_lambda`, ...);
5. validate with pydantic, then the loss names (the method table's `LOSS_TYPES`) and
   the sweep grid.

The functions here take the config class as an argument; `loader.py` gives them the
default `RunConfig` (and `RunConfig.from_yaml` its own class), so schema.py can use them
without an import cycle.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from prospect.config.aliases import DPO_LOSS_TYPES, KTO_LOSS_TYPES
from prospect.config.canonicalize import AliasError, canonicalize
from prospect.config.keys import Path, dotted, leaf_keys, model_at, nest
from prospect.config.messages import (
    MSG_NOISE,
    Origin,
    fail,
    short_repr,
    suggest,
    unknown_name,
    validation_error,
    warn_pending,
)
from prospect.config.overrides import Override, leaf_paths, merge, parse_override, resolve_method
from prospect.config.redact import REDACTED
from prospect.config.shortcuts import shortcut_overrides
from prospect.config.yaml_dialect import ConfigDumper, dump_config, parse_yaml
from prospect.errors import ConfigError

ConfigT = TypeVar("ConfigT", bound=BaseModel)


def load_file(
    path: str | os.PathLike[str],
    overrides: Sequence[str],
    config_cls: type[ConfigT],
    *,
    shortcuts: Mapping[str, Any] | None = None,
) -> ConfigT:
    """`loader.load_config` for any config class (`RunConfig.from_yaml` calls it with its own)."""
    source = os.fspath(path)
    try:
        with open(source, encoding="utf-8-sig") as fh:
            text = fh.read()
    except FileNotFoundError:
        raise ConfigError(f"{source}: config file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{source}: is a directory, expected a YAML config file") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{source}: not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read config file: {exc.strerror or exc}") from None
    return load_text(text, overrides, config_cls, source=source, shortcuts=shortcuts)


def load_saved(path: str | os.PathLike[str], config_cls: type[ConfigT]) -> ConfigT:
    """`loader.load_saved_config` for any config class: REDACTED values are dropped."""
    source = os.fspath(path)
    try:
        with open(source, encoding="utf-8-sig") as fh:
            text = fh.read()
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read: {exc.strerror or exc}") from None
    tree, _ = parse_yaml(text, source)

    def drop(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: drop(v) for k, v in node.items() if v != REDACTED}
        if isinstance(node, list):
            return [drop(v) for v in node if v != REDACTED]
        return node

    return load_text(
        yaml.dump(drop(tree or {}), Dumper=ConfigDumper, allow_unicode=True), (), config_cls, source=source
    )


def load_text(
    text: str,
    overrides: Sequence[str],
    config_cls: type[ConfigT],
    *,
    source: str = "<string>",
    shortcuts: Mapping[str, Any] | None = None,
) -> ConfigT:
    """`loader.loads_config` for any config class: the steps of the module docstring."""
    tree, lines = parse_yaml(text, source)
    if tree is None:
        raise ConfigError(
            f"{source}: the config is empty; expected a mapping of sections ({', '.join(config_cls.model_fields)})"
        )
    if not isinstance(tree, dict):
        raise ConfigError(
            f"{source}: the top level must be a mapping of sections "
            f"({', '.join(config_cls.model_fields)}), got {type(tree).__name__}"
        )
    parsed = [parse_override(o) for o in overrides or ()]
    method, explicit = resolve_method(tree, parsed, config_cls, lines, source)
    if shortcuts:
        parsed += shortcut_overrides(shortcuts, method)
        method, explicit = resolve_method(tree, parsed, config_cls, lines, source)
    try:
        return _build(tree, lines, parsed, method, explicit, config_cls, source)
    except RecursionError:
        raise ConfigError(f"{source}: the config is nested too deeply or refers to itself") from None


def _build(
    tree: dict[Any, Any],
    lines: Mapping[Path, int],
    overrides: Sequence[Override],
    method: str,
    explicit: bool,
    config_cls: type[ConfigT],
    source: str,
) -> ConfigT:
    """Steps 3-5 of the module docstring, on a parsed file whose method is known."""
    # Empty sections (`data:` with only comments) mean defaults.
    tree = {k: v for k, v in tree.items() if not (v is None and model_at(config_cls, (k,)) is not None)}
    file_origins = {p: Origin(f"{source}:{line}", dotted(p)) for p, line in lines.items()}
    try:
        canon = canonicalize(tree, method)
    except AliasError as exc:
        raise fail(exc.path, exc.message, file_origins, source) from None
    data = canon.tree
    origins = _moved_origins(file_origins, canon.moves)
    pending = [
        (file_origins.get(src, Origin(source, dotted(src))), canon.rules.get(src), msg) for src, msg in canon.warnings
    ]
    pending += [(file_origins.get(src, Origin(source, dotted(src))), rule, None) for src, rule in canon.rules.items()]

    for ov in overrides:
        origin = Origin(ov.label, ov.key, True)
        try:
            over = canonicalize(nest(ov.key.split("."), ov.value), method)
        except AliasError as exc:
            raise ConfigError(f"{ov.label}: {exc.message}") from None
        if isinstance(data.get("method"), str):
            data["method"] = {"name": data["method"]}
        merge(data, over.tree, (), config_cls, ov.label)
        for leaf in leaf_paths(over.tree, (), config_cls):
            for known in [p for p in origins if p[: len(leaf)] == leaf]:
                del origins[known]
            origins[leaf] = Origin(ov.label, _written_as(leaf, ov.key, over.moves), True)
        pending += [(origin, over.rules.get(src), msg) for src, msg in over.warnings]
        pending += [(origin, rule, None) for rule in over.rules.values()]

    if not explicit and isinstance(data.get("method", {}), dict):
        data.setdefault("method", {}).setdefault("name", method)
    _canonical_sweep(data, method, origins, source, config_cls)

    try:
        config = config_cls.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc, data, origins, source, config_cls) from None
    _check_losses(config, origins, source)
    _check_sweep(config, data, origins, source, config_cls)
    warn_pending(pending, config.method.name)  # type: ignore[attr-defined]
    return config


def _written_as(leaf: Path, key: str, moves: Sequence[tuple[Path, Path]]) -> str:
    """How the user wrote the override key that ended up at `leaf`."""
    for src, dst in moves:
        if leaf[: len(dst)] == dst:
            return dotted(src + leaf[len(dst) :])
    return dotted(leaf) if len(leaf) >= len(key.split(".")) else key


def _moved_origins(file_origins: Mapping[Path, Origin], moves: Sequence[tuple[Path, Path]]) -> dict[Path, Origin]:
    out = dict(file_origins)
    for src, dst in moves:
        for path, origin in file_origins.items():
            if path[: len(src)] == src:
                out[dst + path[len(src) :]] = origin
    return out


def _canonical_sweep(
    data: dict[Any, Any], method: str, origins: dict[Path, Origin], source: str, config_cls: type[BaseModel]
) -> None:
    """Rewrite sweep keys to canonical dotted keys; refuse unknown ones."""
    sweep = data.get("sweep")
    if not isinstance(sweep, dict):
        return
    keys = set(leaf_keys(config_cls))
    rewritten: dict[Any, Any] = {}
    for key, grid in sweep.items():
        path = ("sweep", key)
        if not isinstance(key, str) or not key:
            raise fail(path, "sweep keys must be dotted config keys such as kto.beta", origins, source)
        parts = key.split(".")
        try:
            canon = canonicalize(nest(parts, 0), method)
        except AliasError as exc:
            raise fail(path, exc.message, origins, source) from None
        target = canon.moves[-1][1] if canon.moves else tuple(parts)
        name = dotted(target)
        if name not in keys or name in ("sweep", "models"):
            raise fail(path, "unknown key in sweep" + suggest(target, config_cls), origins, source)
        if name in rewritten:
            raise fail(path, f"sweeps {name} twice", origins, source)
        rewritten[name] = grid
        if name != key and path in origins:
            origins[("sweep", name)] = origins[path]
    data["sweep"] = rewritten


def _check_losses(config: Any, origins: Mapping[Path, Origin], source: str) -> None:
    """Loss names must be ones the loss registry knows; loss_weights must match loss_type."""
    kto_type = config.kto.loss_type
    if kto_type not in KTO_LOSS_TYPES:
        raise fail(("kto", "loss_type"), unknown_name("KTO loss type", kto_type, KTO_LOSS_TYPES), origins, source)
    dpo_types = config.dpo.loss_type if isinstance(config.dpo.loss_type, list) else [config.dpo.loss_type]
    if not dpo_types:
        raise fail(("dpo", "loss_type"), "needs at least one loss type", origins, source)
    for name in dpo_types:
        if name not in DPO_LOSS_TYPES:
            raise fail(("dpo", "loss_type"), unknown_name("DPO loss type", name, DPO_LOSS_TYPES), origins, source)
    weights = config.dpo.loss_weights
    if weights is not None and len(weights) != len(dpo_types):
        raise fail(
            ("dpo", "loss_weights"),
            f"{len(weights)} weights for {len(dpo_types)} loss types "
            f"({', '.join(dpo_types)}); give one weight per loss type",
            origins,
            source,
        )


def _check_sweep(
    config: Any, data: dict[Any, Any], origins: Mapping[Path, Origin], source: str, config_cls: type[BaseModel]
) -> None:
    """Every grid value must give a valid config, so a sweep never fails half-way."""
    if not config.sweep:
        return
    for key, grid in config.sweep.items():
        for i, value in enumerate(grid):
            trial = copy.deepcopy(data)
            merge(trial, nest(key.split("."), value), (), config_cls, "sweep")
            trial["sweep"] = None
            try:
                _check_losses(config_cls.model_validate(trial), {}, source)
            except ValidationError as exc:
                reason = exc.errors()[0]
                msg = MSG_NOISE.sub("", reason["msg"])
                raise fail(
                    ("sweep", key), f"value {i} ({short_repr(value)}): {msg[:1].lower() + msg[1:]}", origins, source
                ) from None
            except ConfigError as exc:
                raise fail(("sweep", key), f"value {i} ({short_repr(value)}): {exc}", origins, source) from None


def config_with_overrides(config: ConfigT, overrides: Sequence[str]) -> ConfigT:
    """A validated copy of `config` with overrides applied (e.g. one point of a sweep)."""
    text = dump_config(config, redact=False)
    return load_text(text, overrides, type(config), source="<config>")
