"""YAML in and out for run configs: load, alias, override, validate, dump.

Loading runs in a fixed order so that every failure is a one-line `ConfigError`
naming the file and line (or the `--set` option) before any model is touched:

1. read the file and compose it with `yaml.SafeLoader` (safe_load semantics: no Python
   tags), keeping each key's line; `1e-6` is read as a float (YAML 1.2), not a string;
   a key given twice in one mapping is refused (YAML would silently keep the last);
2. find the method (file, then `--set`, then shortcuts; seed 004 `deltas` imply
   `factual_dpo`; else the config class's default) - aliases such as `training.beta`
   land in the active method's section;
3. rewrite seed names to canonical keys (`aliases.py`);
4. apply `--set a.b.c=value` overrides in order (value read as YAML; seed names work
   in the key too), then command-line shortcuts (`--lr`, `--kto_lambda`, ...);
5. validate with pydantic, then the loss names and sweep grid.

`dump_config` writes the fully resolved config with secrets redacted; for a config
holding no secrets `load(dump(c)) == c`, and the same config always gives the same text.
"""

from __future__ import annotations

import copy
import difflib
import json
import os
import re
import sys
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, get_args

import yaml
from pydantic import BaseModel, ValidationError

from prospect.config.aliases import (
    DPO_LOSS_TYPES,
    KTO_LOSS_TYPES,
    METHOD_NAMES,
    SHORTCUTS,
    UNSUPPORTED_HINTS,
    AliasError,
    aliases_at,
    canonicalize,
    method_section,
)
from prospect.config.schema import RunConfig
from prospect.errors import ConfigError
from prospect.io import atomic_write_text

__all__ = [
    "ConfigWarning",
    "REDACTED",
    "load_config",
    "loads_config",
    "dump_config",
    "apply_overrides",
    "config_with_overrides",
    "parse_cli_shortcuts",
    "resolve_shortcuts",
    "redact_secrets",
    "load_saved_config",
    "valid_keys",
]

REDACTED = "***REDACTED***"
_MAX_ERRORS = 5  # lines shown for one failed validation

Path = tuple[Any, ...]


class ConfigWarning(UserWarning):
    """A config that loads but contains something ignored or without effect."""


# --- YAML dialect --------------------------------------------------------------------
# PyYAML implements YAML 1.1, where `1e-6` (no dot) is a string; the seeds write
# `learning_rate: 1e-6` meaning a number. Both the loader and the dumper know the 1.2 form,
# so a string that looks like one is quoted on the way out and round-trips.
_FLOAT_12 = re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$")


# libyaml parses several times faster and gives the same nodes and marks; the dumper stays
# pure Python so the written text does not depend on how PyYAML was built.
class _Loader(yaml.CSafeLoader if getattr(yaml, "__with_libyaml__", False) else yaml.SafeLoader):  # type: ignore[misc]
    pass


class _Dumper(yaml.SafeDumper):
    pass


for _cls in (_Loader, _Dumper):
    _cls.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT_12, list("-+0123456789"))


def _represent_tuple(dumper: yaml.SafeDumper, data: tuple) -> yaml.Node:
    return dumper.represent_list(list(data))


def _represent_other(dumper: yaml.SafeDumper, data: Any) -> yaml.Node:
    # Values from the Python API that YAML has no tag for (Path, enums) are written as text.
    return dumper.represent_str(str(data))


_Dumper.add_representer(tuple, _represent_tuple)
_Dumper.add_multi_representer(object, _represent_other)


def _parse_yaml(text: str, source: str) -> tuple[Any, dict[Path, int]]:
    """Parse one YAML document; return the data and the line (1-based) of every key/item."""
    loader: _Loader | None = None
    try:
        loader = _Loader(text)
        node = loader.get_single_node()
        if node is None:
            return None, {}
        _check_duplicates(node, source)
        _check_expanded_size(node, source)
        data = loader.construct_document(node)
        lines: dict[Path, int] = {}
        _collect_lines(loader, node, (), lines, set())
        return data, lines
    except ConfigError:
        raise
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        problem = exc.problem or exc.context or "invalid YAML"
        if exc.problem and exc.context and exc.context_mark is not None and exc.context_mark is not mark:
            started = f"at line {exc.context_mark.line + 1}"
            if exc.problem.startswith("but "):  # "expected a single document ..., but found another"
                problem = f"{exc.context} ({started}), {exc.problem}"
            else:
                problem += f" ({exc.context} started {started})"
        raise ConfigError(f"{where}: invalid YAML: {problem}") from None
    except yaml.reader.ReaderError as exc:
        position = exc.position if isinstance(exc.position, int) else 0
        line = text[:position].count("\n") + 1
        raise ConfigError(f"{source}:{line}: invalid YAML: {exc.reason}") from None
    except RecursionError:
        raise ConfigError(f"{source}: invalid YAML: nested too deeply") from None
    except Exception as exc:  # noqa: BLE001 - any parser failure on user text is a user error
        raise ConfigError(f"{source}: invalid YAML: {exc}") from None
    finally:
        if loader is not None:
            loader.dispose()


def _check_duplicates(node: yaml.Node, source: str) -> None:
    """Refuse a key written twice in one mapping (merge keys `<<` excepted)."""
    seen_nodes: set[int] = set()
    stack = [node]
    while stack:
        cur = stack.pop()
        if id(cur) in seen_nodes:
            continue
        seen_nodes.add(id(cur))
        if isinstance(cur, yaml.MappingNode):
            first: dict[tuple[str, str], int] = {}
            for key, value in cur.value:
                stack.append(value)
                if not isinstance(key, yaml.ScalarNode) or key.tag == "tag:yaml.org,2002:merge":
                    continue
                ident = (key.tag, key.value)
                line = key.start_mark.line + 1
                if ident in first:
                    raise ConfigError(
                        f"{source}:{line}: duplicate key '{key.value}' (first at line {first[ident]}); "
                        "YAML would keep only the last one"
                    )
                first[ident] = line
        elif isinstance(cur, yaml.SequenceNode):
            stack.extend(cur.value)


MAX_EXPANDED_NODES = 100_000  # a real run config has a few hundred


def _check_expanded_size(node: yaml.Node, source: str) -> None:
    """Refuse a document whose aliases expand into more than MAX_EXPANDED_NODES values.

    Aliases share nodes, so a few hundred bytes of nested anchors ("billion laughs") load
    instantly but expand into millions of values when anything walks the tree (validation,
    writing config.yaml). The expanded size is counted on the node graph, each node once
    (memoised), so the count itself costs no more than the text; an alias back into its own
    ancestor counts once.
    """
    size: dict[int, int] = {}

    def count(n: yaml.Node) -> int:
        if id(n) in size:
            return size[id(n)]
        size[id(n)] = 1  # in progress: a recursive alias counts once
        if isinstance(n, yaml.MappingNode):
            total = 1 + sum(count(k) + count(v) for k, v in n.value)
        elif isinstance(n, yaml.SequenceNode):
            total = 1 + sum(count(v) for v in n.value)
        else:
            total = 1
        size[id(n)] = min(total, MAX_EXPANDED_NODES + 1)
        return size[id(n)]

    if count(node) > MAX_EXPANDED_NODES:
        raise ConfigError(
            f"{source}: YAML aliases expand into more than {MAX_EXPANDED_NODES:,} values "
            "(an alias bomb?); write the values out or use fewer nested aliases"
        )


def _collect_lines(loader: _Loader, node: yaml.Node, path: Path, out: dict[Path, int], seen: set[int]) -> None:
    if id(node) in seen:  # anchors/aliases (even recursive ones) are walked once
        return
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                continue
            key = loader.construct_object(key_node)
            out[path + (key,)] = key_node.start_mark.line + 1
            _collect_lines(loader, value_node, path + (key,), out, seen)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            out[path + (i,)] = item.start_mark.line + 1
            _collect_lines(loader, item, path + (i,), out, seen)


def _parse_value(text: str) -> Any:
    """An override's value as YAML (`0.2`, `[a, b]`, `null`); unparsable text stays a string."""
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader
    except Exception:  # noqa: BLE001 - e.g. `@foo`: the user meant the plain string
        return text


# --- where a value came from ---------------------------------------------------------
@dataclass(frozen=True)
class _Origin:
    where: str  # "my.yaml:12" or "--set kto.beta=0.2"
    written: str  # the key as the user wrote it
    is_override: bool = False


@dataclass(frozen=True)
class _Override:
    text: str  # "kto.beta=0.2"
    label: str  # what the user typed: "--set kto.beta=0.2" or "--lr 5e-6"
    key: str
    value: Any


def _dotted(path: Iterable[Any]) -> str:
    return ".".join(str(p) for p in path)


def _parse_override(text: Any, label: str | None = None) -> _Override:
    if not isinstance(text, str):
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE (a string)")
    key, sep, raw = text.partition("=")
    key = key.strip()
    if label is None:  # echoed in error messages: a secret value is shown as REDACTED
        label = f"--set {key}{sep}{redact_secrets(raw, key.split('.')[-1]) if sep else ''}"
    parts = key.split(".")
    if not sep or not key or any(not p.strip() for p in parts):
        raise ConfigError(f"{label}: expected KEY=VALUE with a dotted key, e.g. kto.beta=0.2")
    return _Override(text, label, ".".join(p.strip() for p in parts), _parse_value(raw))


def _nest(path: Sequence[Any], value: Any) -> dict[Any, Any]:
    tree: Any = value
    for part in reversed(path):
        tree = {part: tree}
    return tree


def _leaf_paths(tree: Any, path: Path, config_cls: type[BaseModel]) -> list[Path]:
    """Paths an override tree sets: leaves, or whole values at non-mergeable keys."""
    if isinstance(tree, dict) and (not path or _is_mergeable(config_cls, path)):
        return [p for k, v in tree.items() for p in _leaf_paths(v, path + (k,), config_cls)] or [path]
    return [path]


def _is_mergeable(config_cls: type[BaseModel], path: Path) -> bool:
    """Sections (and the sweep grid) merge with an override; other values are replaced."""
    return path == ("sweep",) or _model_at(config_cls, path) is not None


def _merge(base: dict[Any, Any], over: Mapping[Any, Any], path: Path, config_cls: type[BaseModel], label: str) -> None:
    for key, value in over.items():
        here = path + (key,)
        current = base.get(key)
        if isinstance(value, dict) and isinstance(current, dict) and _is_mergeable(config_cls, here):
            _merge(current, value, here, config_cls, label)
        elif (
            isinstance(value, dict)
            and isinstance(current, list)
            and all(isinstance(k, str) and k.isdigit() for k in value)
        ):
            # models.0.id=...: index into a list
            for k, item in value.items():
                idx = int(k)
                if idx >= len(current):
                    raise ConfigError(f"{label}: {_dotted(here)} has {len(current)} entries, no index {idx}")
                if isinstance(item, dict) and isinstance(current[idx], dict):
                    _merge(current[idx], item, here + (idx,), config_cls, label)
                else:
                    current[idx] = item
        else:
            base[key] = copy.deepcopy(value)


# --- schema helpers ------------------------------------------------------------------
def _unwrap_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _unwrap_model(arg)
        if found is not None:
            return found
    return None


def _model_at(config_cls: type[BaseModel], path: Sequence[Any]) -> type[BaseModel] | None:
    """The pydantic model at dotted `path` (list indices skipped), or None if not a model."""
    current: type[BaseModel] | None = config_cls
    for part in path:
        if isinstance(part, int):
            continue
        if current is None or not isinstance(part, str) or part not in current.model_fields:
            return None
        current = _unwrap_model(current.model_fields[part].annotation)
    return current


def valid_keys(config_cls: type[BaseModel] = RunConfig) -> list[str]:
    """Every canonical dotted key of `config_cls` (leaf fields), in schema order."""
    out: list[str] = []

    def walk(cls: type[BaseModel], prefix: str) -> None:
        for name, info in cls.model_fields.items():
            sub = _unwrap_model(info.annotation)
            if sub is not None and get_args(info.annotation) == ():
                walk(sub, prefix + name + ".")
            else:
                out.append(prefix + name)

    walk(config_cls, "")
    return out


def _suggest(path: Path, config_cls: type[BaseModel]) -> str:
    """' (did you mean 'kto.beta'?)' for an unknown key at `path`, or a list of valid keys."""
    section = tuple(p for p in path[:-1] if not isinstance(p, int))
    leaf = str(path[-1])
    model = _model_at(config_cls, section)
    prefix = _dotted(path[:-1]) + "." if path[:-1] else ""
    if model is not None:
        names = list(model.model_fields) + aliases_at(_dotted(section))
        close = difflib.get_close_matches(leaf, names, n=1, cutoff=0.6)
        if close:
            return f" (did you mean '{prefix}{close[0]}'?)"
    # the key may live in another section (training.lora_rank -> optimization.lora_rank)
    everything = valid_keys(config_cls)
    by_leaf = {k.rsplit(".", 1)[-1]: k for k in reversed(everything)}
    close = difflib.get_close_matches(leaf, list(by_leaf), n=1, cutoff=0.75)
    if close:
        return f" (did you mean '{by_leaf[close[0]]}'?)"
    close = difflib.get_close_matches(_dotted(path), everything, n=1, cutoff=0.6)
    if close:
        return f" (did you mean '{close[0]}'?)"
    if model is not None:
        names = list(model.model_fields)
        shown = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
        return f" (valid keys{' in ' + _dotted(section) if section else ''}: {shown})"
    return ""


# --- error formatting ----------------------------------------------------------------
def _locate(path: Path, origins: Mapping[Path, _Origin], source: str) -> tuple[str, str, bool]:
    """(where, key as written, from an override) for `path`, via its longest known prefix."""
    for n in range(len(path), 0, -1):
        origin = origins.get(path[:n])
        if origin is not None:
            written = origin.written + ("." + _dotted(path[n:]) if path[n:] else "")
            return origin.where, written, origin.is_override
    return source, _dotted(path), False


def _fail(path: Path, message: str, origins: Mapping[Path, _Origin], source: str) -> ConfigError:
    return ConfigError(_line(path, message, origins, source))


def _line(path: Path, message: str, origins: Mapping[Path, _Origin], source: str) -> str:
    where, written, is_override = _locate(path, origins, source)
    canonical = _dotted(path)
    if is_override and where.startswith(f"--set {canonical}="):
        return f"{where}: {message}"  # the key is already in the option as typed
    key = written if written == canonical or not canonical else f"{written} (= {canonical})"
    where, key = _visible(where), _visible(key)
    return f"{where}: {key}: {message}" if key else f"{where}: {message}"


def _visible(text: str) -> str:
    """`text` with control characters escaped (a YAML key may hold a newline): one problem, one line."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _short_repr(value: Any) -> str:
    text = _redact_value(None, repr(value))  # messages get logged too
    return text if len(text) <= 60 else text[:57] + "..."


def _data_path(loc: Sequence[Any], data: Any, err_type: str) -> Path:
    """The part of a pydantic error location that exists in the input (drops union tags)."""
    path: list[Any] = []
    current = data
    for i, part in enumerate(loc):
        if isinstance(current, dict) and not isinstance(part, (list, dict)) and part in current:
            current = current[part]
        elif isinstance(current, list) and isinstance(part, int) and 0 <= part < len(current):
            current = current[part]
        elif err_type == "missing" and i == len(loc) - 1:
            pass
        else:
            break
        path.append(part)
    return tuple(path)


_SHOULD = "input should be "
_MSG_NOISE = re.compile(r", unable to parse string as an? \w+$")


def _validation_error(
    exc: ValidationError, data: Any, origins: Mapping[Path, _Origin], source: str, config_cls: type[BaseModel]
) -> ConfigError:
    grouped: dict[Path, list[str]] = {}
    inputs: dict[Path, Any] = {}
    for err in exc.errors():
        path = _data_path(err["loc"], data, err["type"])
        if err["type"] == "extra_forbidden":
            message = "unknown key" + (_hint_unsupported(path) or _suggest(path, config_cls))
        elif err["type"] == "missing":
            message = "required key missing"
        else:
            message = _MSG_NOISE.sub("", err["msg"])
            message = message[:1].lower() + message[1:]
            inputs.setdefault(path, err.get("input"))
        grouped.setdefault(path, [])
        if message not in grouped[path]:
            grouped[path].append(message)
    lines = []
    for path, messages in grouped.items():
        # union members: "input should be a valid number or 'auto'"
        message = messages[0] + "".join(
            " or " + (m[len(_SHOULD) :] if m.startswith(_SHOULD) and messages[0].startswith(_SHOULD) else m)
            for m in messages[1:]
        )
        if path in inputs and not isinstance(inputs[path], (dict, list)):
            message += f", got {_short_repr(inputs[path])}"
        lines.append((_sort_key(path, origins), _line(path, message, origins, source)))
    lines.sort(key=lambda item: item[0])
    text = [line for _, line in lines[:_MAX_ERRORS]]
    if len(lines) > _MAX_ERRORS:
        text.append(f"... and {len(lines) - _MAX_ERRORS} more")
    return ConfigError("\n".join(text))


def _hint_unsupported(path: Path) -> str:
    if len(path) == 1 and path[0] in UNSUPPORTED_HINTS:
        return f": {UNSUPPORTED_HINTS[path[0]]}"
    return ""


def _sort_key(path: Path, origins: Mapping[Path, _Origin]) -> tuple[int, int, str]:
    where, _, is_override = _locate(path, origins, "")
    line = where.rsplit(":", 1)[-1] if not is_override else ""
    return (1 if is_override else 0, int(line) if line.isdigit() else 0, _dotted(path))


# --- method --------------------------------------------------------------------------
def _method_of(tree: Any) -> tuple[Any | None, Path | None]:
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


def _check_method(name: Any, where: str) -> str:
    if isinstance(name, str) and name in METHOD_NAMES:
        return name
    close = difflib.get_close_matches(str(name), METHOD_NAMES, n=1, cutoff=0.5)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    raise ConfigError(f"{where}: unknown method {_short_repr(name)}{hint}; valid methods: {', '.join(METHOD_NAMES)}")


def _resolve_method(
    tree: dict[Any, Any],
    overrides: Sequence[_Override],
    config_cls: type[BaseModel],
    lines: Mapping[Path, int],
    source: str,
) -> tuple[str, bool]:
    """(method, explicit?) from the file, then overrides (last wins); seed 004 deltas imply
    factual_dpo; else the config class's default."""
    name, where, explicit = None, None, False
    file_name, file_path = _method_of(tree)
    if file_path is not None:
        name, explicit = file_name, True
        where = f"{source}:{lines.get(file_path, lines.get(file_path[:1], '?'))}: {_dotted(file_path)}"
    has_deltas = "deltas" in tree
    for ov in overrides:
        parts = ov.key.split(".")
        if parts == ["deltas"]:
            has_deltas = True
        try:
            canon = canonicalize(_nest(parts, ov.value), "kto").tree
        except (AliasError, RecursionError):
            continue  # reported properly when the override is applied
        ov_name, ov_path = _method_of(canon)
        if ov_path is not None and ov_path[0] == "method":
            name, explicit, where = ov_name, True, ov.label
    if explicit:
        return _check_method(name, where or source), True
    if has_deltas:
        return "factual_dpo", False
    default = config_cls.model_fields["method"].get_default(call_default_factory=True)
    return str(default.name), False


# --- loading -------------------------------------------------------------------------
def load_config(
    path: str | os.PathLike[str],
    overrides: Sequence[str] = (),
    config_cls: type[RunConfig] = RunConfig,
    *,
    shortcuts: Mapping[str, Any] | None = None,
) -> RunConfig:
    """Load, alias, override and validate the YAML config at `path`.

    `overrides` are `a.b.c=value` strings (value read as YAML), applied in order after the
    file; `shortcuts` maps seed options to values (`{"lr": "5e-6", "kto_lambda": "0.05"}`)
    and is applied last (see `parse_cli_shortcuts`). Raises `ConfigError` (one line per
    problem: file:line, key, reason, closest valid key) and warns with `ConfigWarning`.
    """
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
    return loads_config(text, overrides, config_cls, source=source, shortcuts=shortcuts)


def load_saved_config(path: str | os.PathLike[str], config_cls: type[RunConfig] = RunConfig) -> RunConfig:
    """A run directory's config.yaml, for `prospect eval` and `export`: values written as
    REDACTED are dropped (their defaults apply, e.g. a token read from the environment again)
    instead of being used as the secret."""
    source = os.fspath(path)
    try:
        with open(source, encoding="utf-8-sig") as fh:
            text = fh.read()
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read: {exc.strerror or exc}") from None
    tree, _ = _parse_yaml(text, source)

    def drop(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: drop(v) for k, v in node.items() if v != REDACTED}
        if isinstance(node, list):
            return [drop(v) for v in node if v != REDACTED]
        return node

    return loads_config(
        yaml.dump(drop(tree or {}), Dumper=_Dumper, allow_unicode=True), config_cls=config_cls, source=source
    )


def loads_config(
    text: str,
    overrides: Sequence[str] = (),
    config_cls: type[RunConfig] = RunConfig,
    *,
    source: str = "<string>",
    shortcuts: Mapping[str, Any] | None = None,
) -> RunConfig:
    """`load_config` for YAML text; `source` names it in messages."""
    tree, lines = _parse_yaml(text, source)
    if tree is None:
        raise ConfigError(
            f"{source}: the config is empty; expected a mapping of sections ({', '.join(config_cls.model_fields)})"
        )
    if not isinstance(tree, dict):
        raise ConfigError(
            f"{source}: the top level must be a mapping of sections "
            f"({', '.join(config_cls.model_fields)}), got {type(tree).__name__}"
        )
    parsed = [_parse_override(o) for o in overrides or ()]
    method, explicit = _resolve_method(tree, parsed, config_cls, lines, source)
    if shortcuts:
        parsed += _shortcut_overrides(shortcuts, method)
        method, explicit = _resolve_method(tree, parsed, config_cls, lines, source)
    try:
        return _build(tree, lines, parsed, method, explicit, config_cls, source)
    except RecursionError:
        raise ConfigError(f"{source}: the config is nested too deeply or refers to itself") from None


def _build(
    tree: dict[Any, Any],
    lines: Mapping[Path, int],
    overrides: Sequence[_Override],
    method: str,
    explicit: bool,
    config_cls: type[RunConfig],
    source: str,
) -> RunConfig:
    # Empty sections (`data:` with only comments) mean defaults.
    tree = {k: v for k, v in tree.items() if not (v is None and _model_at(config_cls, (k,)) is not None)}
    file_origins = {p: _Origin(f"{source}:{line}", _dotted(p)) for p, line in lines.items()}
    try:
        canon = canonicalize(tree, method)
    except AliasError as exc:
        raise _fail(exc.path, exc.message, file_origins, source) from None
    data = canon.tree
    origins = _moved_origins(file_origins, canon.moves)
    pending = [
        (file_origins.get(src, _Origin(source, _dotted(src))), canon.rules.get(src), msg) for src, msg in canon.warnings
    ]
    pending += [(file_origins.get(src, _Origin(source, _dotted(src))), rule, None) for src, rule in canon.rules.items()]

    for ov in overrides:
        origin = _Origin(ov.label, ov.key, True)
        try:
            over = canonicalize(_nest(ov.key.split("."), ov.value), method)
        except AliasError as exc:
            raise ConfigError(f"{ov.label}: {exc.message}") from None
        if isinstance(data.get("method"), str):
            data["method"] = {"name": data["method"]}
        _merge(data, over.tree, (), config_cls, ov.label)
        for leaf in _leaf_paths(over.tree, (), config_cls):
            for known in [p for p in origins if p[: len(leaf)] == leaf]:
                del origins[known]
            origins[leaf] = _Origin(ov.label, _written_as(leaf, ov.key, over.moves), True)
        pending += [(origin, over.rules.get(src), msg) for src, msg in over.warnings]
        pending += [(origin, rule, None) for rule in over.rules.values()]

    if not explicit and isinstance(data.get("method", {}), dict):
        data.setdefault("method", {}).setdefault("name", method)
    _canonical_sweep(data, method, origins, source, config_cls)

    try:
        config = config_cls.model_validate(data)
    except ValidationError as exc:
        raise _validation_error(exc, data, origins, source, config_cls) from None
    _check_losses(config, origins, source)
    _check_sweep(config, data, origins, source, config_cls)
    _warn(pending, config.method.name)
    return config


def _written_as(leaf: Path, key: str, moves: Sequence[tuple[Path, Path]]) -> str:
    """How the user wrote the override key that ended up at `leaf`."""
    for src, dst in moves:
        if leaf[: len(dst)] == dst:
            return _dotted(src + leaf[len(dst) :])
    return _dotted(leaf) if len(leaf) >= len(key.split(".")) else key


def _moved_origins(file_origins: Mapping[Path, _Origin], moves: Sequence[tuple[Path, Path]]) -> dict[Path, _Origin]:
    out = dict(file_origins)
    for src, dst in moves:
        for path, origin in file_origins.items():
            if path[: len(src)] == src:
                out[dst + path[len(src) :]] = origin
    return out


def _warn(pending: Sequence[tuple[_Origin, Any, str | None]], method: str) -> None:
    seen: set[str] = set()
    for origin, rule, message in pending:
        if message is None:
            if rule is None or not rule.methods or method in rule.methods:
                continue
            message = (
                f"sets {rule.target}, which has no effect with method {method} "
                f"(only with {', '.join(rule.methods)}): {rule.note}"
            )
        text = f"{origin.where}: {origin.written}: {message}"
        if text not in seen:
            seen.add(text)
            warnings.warn(text, ConfigWarning, stacklevel=_caller_level())


def _caller_level() -> int:
    """warnings stacklevel pointing at the first frame outside prospect.config."""
    here = os.path.dirname(os.path.abspath(__file__))
    frame, level = sys._getframe(1), 1
    while frame is not None and os.path.dirname(os.path.abspath(frame.f_code.co_filename)) == here:
        frame, level = frame.f_back, level + 1
    return level


def _canonical_sweep(
    data: dict[Any, Any], method: str, origins: dict[Path, _Origin], source: str, config_cls: type[BaseModel]
) -> None:
    """Rewrite sweep keys to canonical dotted keys; refuse unknown ones."""
    sweep = data.get("sweep")
    if not isinstance(sweep, dict):
        return
    keys = set(valid_keys(config_cls))
    rewritten: dict[Any, Any] = {}
    for key, grid in sweep.items():
        path = ("sweep", key)
        if not isinstance(key, str) or not key:
            raise _fail(path, "sweep keys must be dotted config keys such as kto.beta", origins, source)
        parts = key.split(".")
        try:
            canon = canonicalize(_nest(parts, 0), method)
        except AliasError as exc:
            raise _fail(path, exc.message, origins, source) from None
        target = canon.moves[-1][1] if canon.moves else tuple(parts)
        name = _dotted(target)
        if name not in keys or name in ("sweep", "models"):
            raise _fail(path, "unknown key in sweep" + _suggest(target, config_cls), origins, source)
        if name in rewritten:
            raise _fail(path, f"sweeps {name} twice", origins, source)
        rewritten[name] = grid
        if name != key and path in origins:
            origins[("sweep", name)] = origins[path]
    data["sweep"] = rewritten


def _check_losses(config: RunConfig, origins: Mapping[Path, _Origin], source: str) -> None:
    """Loss names must be ones the loss registry knows; loss_weights must match loss_type."""
    kto_type = config.kto.loss_type
    if kto_type not in KTO_LOSS_TYPES:
        raise _fail(("kto", "loss_type"), _unknown_name("KTO loss type", kto_type, KTO_LOSS_TYPES), origins, source)
    dpo_types = config.dpo.loss_type if isinstance(config.dpo.loss_type, list) else [config.dpo.loss_type]
    if not dpo_types:
        raise _fail(("dpo", "loss_type"), "needs at least one loss type", origins, source)
    for name in dpo_types:
        if name not in DPO_LOSS_TYPES:
            raise _fail(("dpo", "loss_type"), _unknown_name("DPO loss type", name, DPO_LOSS_TYPES), origins, source)
    weights = config.dpo.loss_weights
    if weights is not None and len(weights) != len(dpo_types):
        raise _fail(
            ("dpo", "loss_weights"),
            f"{len(weights)} weights for {len(dpo_types)} loss types "
            f"({', '.join(dpo_types)}); give one weight per loss type",
            origins,
            source,
        )


def _unknown_name(kind: str, name: str, valid: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, valid, n=1, cutoff=0.6)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return f"unknown {kind} {name!r}{hint}; valid: {', '.join(valid)}"


def _check_sweep(
    config: RunConfig, data: dict[Any, Any], origins: Mapping[Path, _Origin], source: str, config_cls: type[RunConfig]
) -> None:
    """Every grid value must give a valid config, so a sweep never fails half-way."""
    if not config.sweep:
        return
    for key, grid in config.sweep.items():
        for i, value in enumerate(grid):
            trial = copy.deepcopy(data)
            _merge(trial, _nest(key.split("."), value), (), config_cls, "sweep")
            trial["sweep"] = None
            try:
                _check_losses(config_cls.model_validate(trial), {}, source)
            except ValidationError as exc:
                reason = exc.errors()[0]
                msg = _MSG_NOISE.sub("", reason["msg"])
                raise _fail(
                    ("sweep", key), f"value {i} ({_short_repr(value)}): {msg[:1].lower() + msg[1:]}", origins, source
                ) from None
            except ConfigError as exc:
                raise _fail(("sweep", key), f"value {i} ({_short_repr(value)}): {exc}", origins, source) from None


# --- overrides for callers holding a dict or a config --------------------------------
def apply_overrides(
    config_dict: Mapping[str, Any], overrides: Sequence[str], config_cls: type[RunConfig] = RunConfig
) -> dict[str, Any]:
    """A copy of `config_dict` with `a.b.c=value` overrides applied (seed names allowed in
    keys; values read as YAML). No validation; `config_with_overrides` validates."""
    parsed = [_parse_override(o) for o in overrides]
    base = copy.deepcopy(dict(config_dict))
    method, _ = _resolve_method(base, parsed, config_cls, {}, "<config>")
    if isinstance(base.get("method"), str):
        base["method"] = {"name": base["method"]}
    for ov in parsed:
        try:
            over = canonicalize(_nest(ov.key.split("."), ov.value), method)
        except AliasError as exc:
            raise ConfigError(f"{ov.label}: {exc.message}") from None
        _merge(base, over.tree, (), config_cls, ov.label)
    return base


def config_with_overrides(config: RunConfig, overrides: Sequence[str]) -> RunConfig:
    """A validated copy of `config` with overrides applied (e.g. one point of a sweep)."""
    text = dump_config(config, redact=False)
    return loads_config(text, overrides, type(config), source="<config>")


# --- command-line shortcuts ----------------------------------------------------------
def _kto_lambda_target(method: str) -> str:
    # seed 003 (`--lambda 0.1` on a DPO+KTO config) vs seed 000 (loss aversion).
    return "method.kto_weight" if method == "dpo_kto" else "kto.kto_lambda"


def _format_value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _shortcut_overrides(options: Mapping[str, Any] | Sequence[str], method: str) -> list[_Override]:
    pairs = _option_pairs(options)
    for name, value in pairs:  # --method changes where --beta / --kto_lambda land
        if name == "method":
            method = _check_method(value, f"--method {value}")
    out: list[_Override] = []
    for name, value in pairs:
        if name == "set":
            out.append(_parse_override(value))
            continue
        if name == "config":
            raise ConfigError("--config names the config file itself; pass it as the CONFIG argument")
        if name in ("kto_lambda", "lambda"):
            target = _kto_lambda_target(method)
            if method not in ("kto", "dpo_kto"):
                warnings.warn(
                    f"--{name} {value}: sets kto.kto_lambda (loss aversion), which has no effect "
                    f"with method {method}; the DPO+KTO weight needs method dpo_kto",
                    ConfigWarning,
                    stacklevel=_caller_level(),
                )
        elif name == "beta":
            target = f"{method_section(method)}.beta"
        elif name in SHORTCUTS:
            target = SHORTCUTS[name]
        else:
            close = difflib.get_close_matches(name, list(SHORTCUTS) + ["set", "config"], n=1, cutoff=0.6)
            hint = f" (did you mean --{close[0]}?)" if close else ""
            raise ConfigError(
                f"--{name}: unknown option{hint}; shortcuts: "
                + ", ".join("--" + s for s in SHORTCUTS)
                + ", --set KEY=VALUE"
            )
        shown = _format_value(value)
        out.append(_Override(f"{target}={shown}", f"--{name} {shown}", target, _parse_value(shown)))
    return out


def _option_pairs(options: Mapping[str, Any] | Sequence[str]) -> list[tuple[str, Any]]:
    """(name, value) pairs from a mapping (None values skipped, as argparse leaves them) or
    argv tokens (`--lr 5e-6`, `--lr=5e-6`, `--set a.b=c`)."""
    if isinstance(options, Mapping):
        pairs = []
        for name, value in options.items():
            if value is None:
                continue
            name = str(name).lstrip("-").replace("-", "_")
            values = value if name == "set" and isinstance(value, (list, tuple)) else [value]
            pairs += [(name, v) for v in values]
        return pairs
    pairs, tokens = [], list(options)
    i = 0
    while i < len(tokens):
        token = str(tokens[i])
        if not token.startswith("--") or len(token) == 2:
            raise ConfigError(f"{token}: expected an option such as --lr 5e-6 or --set kto.beta=0.2")
        name, sep, value = token[2:].partition("=")
        name = name.replace("-", "_")
        if not sep:
            if i + 1 >= len(tokens):
                raise ConfigError(f"--{name}: missing value")
            value = str(tokens[i + 1])
            i += 1
        pairs.append((name, value))
        i += 1
    return pairs


def parse_cli_shortcuts(argv_options: Mapping[str, Any] | Sequence[str], method: str = "kto") -> list[str]:
    """Map the seeds' command-line shortcuts to dotted overrides for a run of `method`.

    --lr X -> training.learning_rate=X; --beta X -> <kto|dpo>.beta=X (the active method's
    section); --kto_lambda X / --lambda X -> method.kto_weight=X for method dpo_kto (seed
    003), kto.kto_lambda=X otherwise (seed 000); --delta -> method.delta; --model/--model_id
    -> model.name; --method, --output_dir, --seed, --max_steps, --batch_size, --num_epochs
    likewise; --set KEY=VALUE passes through. A --method among the options decides `method`.
    """
    return [ov.text for ov in _shortcut_overrides(argv_options, _check_method(method, "method"))]


def resolve_shortcuts(config: RunConfig, shortcuts: Mapping[str, Any]) -> list[str]:
    """`parse_cli_shortcuts` for the method of an already loaded `config`."""
    return parse_cli_shortcuts(shortcuts, config.method.name)


# --- dumping -------------------------------------------------------------------------
_SECRET_SUBSTRINGS = ("password", "passwd", "secret", "api_key", "apikey")
_TOKEN_WORD = re.compile(r"(?:^|[^a-z])token(?:$|[^a-z])")  # token, hf_token, auth-token; not max_new_tokens
_SECRET_VALUES = (
    re.compile(r"hf_[A-Za-z0-9]{20,}"),  # Hugging Face access token
    re.compile(r"sk-[A-Za-z0-9_-]{20,}"),  # OpenAI-style key
    re.compile(r"\b(?:local-|wandb_v1_)[0-9A-Za-z_]{32,}"),  # W&B keys with a prefix
)
_BARE_KEY = re.compile(r"^[0-9a-f]{40}$")  # W&B key - or a git commit id, see `_redact_value`
_URL_PASSWORD = re.compile(r"(://[^/\s:@]+:)[^/\s@]+@")


def _is_secret_key(key: Any) -> bool:
    if not isinstance(key, str):
        return False
    snake = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", key).lower()
    return any(s in snake for s in _SECRET_SUBSTRINGS) or bool(_TOKEN_WORD.search(snake))


def _redact_value(key: Any, value: str) -> str:
    for pattern in _SECRET_VALUES:
        value = pattern.sub(REDACTED, value)
    value = _URL_PASSWORD.sub(r"\1" + REDACTED + "@", value)
    # 40 hex characters is a W&B key, or a commit id under `revision`, which must survive.
    if _BARE_KEY.match(value) and not (isinstance(key, str) and ("revision" in key.lower() or "commit" in key.lower())):
        return REDACTED
    return value


def redact_secrets(obj: Any, key: Any = None) -> Any:
    """A copy of `obj` with secrets replaced by REDACTED: every non-empty value under a key
    naming a secret (token, password, secret, api_key; `max_new_tokens` is not one), and
    strings that look like a Hugging Face / W&B / API key or a URL password anywhere."""
    if _is_secret_key(key) and obj is not None and not isinstance(obj, bool) and obj != "":
        return REDACTED
    if isinstance(obj, dict):
        return {k: redact_secrets(v, k) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [redact_secrets(v, key) for v in obj]
    if isinstance(obj, str):
        return _redact_value(key, obj)
    return obj


def dump_config(config: BaseModel, path: str | os.PathLike[str] | None = None, *, redact: bool = True) -> str:
    """The fully resolved config as YAML (schema order, secrets redacted); written atomically
    to `path` if given. Deterministic: the same config always gives the same text."""
    data = config.model_dump(mode="python")
    if redact:
        data = redact_secrets(data)
    text = yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True, default_flow_style=False)
    if path is not None:
        atomic_write_text(path, text)
    return text
