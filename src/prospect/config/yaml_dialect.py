"""The YAML dialect of config files: safe loading, YAML 1.2 floats, refusals, key lines, dumping.

- `yaml.SafeLoader` semantics (no Python tags), libyaml's parser when PyYAML has it;
- `1e-6` is a float (YAML 1.2), not a string, on the way in and on the way out;
- a key given twice in one mapping is refused (YAML would silently keep the last);
- a document whose aliases expand into more than `MAX_EXPANDED_NODES` values is refused;
- `parse_yaml` also returns the line of every key and list item, for error messages;
- `dump_config` writes a config as deterministic YAML, secrets redacted.
"""

from __future__ import annotations

import os
import re
from typing import Any

import yaml
from pydantic import BaseModel

from prospect.config.keys import Path
from prospect.config.redact import redact_secrets
from prospect.errors import ConfigError
from prospect.io import atomic_write_text

# PyYAML implements YAML 1.1, where `1e-6` (no dot) is a string; the seeds write
# `learning_rate: 1e-6` meaning a number. Both the loader and the dumper know the 1.2 form,
# so a string that looks like one is quoted on the way out and round-trips.
_FLOAT_12 = re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$")


# libyaml parses several times faster and gives the same nodes and marks; the dumper stays
# pure Python so the written text does not depend on how PyYAML was built.
class ConfigLoader(yaml.CSafeLoader if getattr(yaml, "__with_libyaml__", False) else yaml.SafeLoader):  # type: ignore[misc]
    pass


class ConfigDumper(yaml.SafeDumper):
    pass


for _cls in (ConfigLoader, ConfigDumper):
    _cls.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT_12, list("-+0123456789"))


def _represent_tuple(dumper: yaml.SafeDumper, data: tuple) -> yaml.Node:
    return dumper.represent_list(list(data))


def _represent_other(dumper: yaml.SafeDumper, data: Any) -> yaml.Node:
    # Values from the Python API that YAML has no tag for (Path, enums) are written as text.
    return dumper.represent_str(str(data))


ConfigDumper.add_representer(tuple, _represent_tuple)
ConfigDumper.add_multi_representer(object, _represent_other)


def parse_yaml(text: str, source: str) -> tuple[Any, dict[Path, int]]:
    """Parse one YAML document; return the data and the line (1-based) of every key/item."""
    loader: ConfigLoader | None = None
    try:
        loader = ConfigLoader(text)
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


def _collect_lines(loader: ConfigLoader, node: yaml.Node, path: Path, out: dict[Path, int], seen: set[int]) -> None:
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


def parse_value(text: str) -> Any:
    """An override's value as YAML (`0.2`, `[a, b]`, `null`); unparsable text stays a string."""
    try:
        return yaml.load(text, Loader=ConfigLoader)  # noqa: S506 - ConfigLoader is a SafeLoader
    except Exception:  # noqa: BLE001 - e.g. `@foo`: the user meant the plain string
        return text


def dump_config(config: BaseModel, path: str | os.PathLike[str] | None = None, *, redact: bool = True) -> str:
    """The fully resolved config as YAML (schema order, secrets redacted); written atomically
    to `path` if given. Deterministic: the same config always gives the same text."""
    data = config.model_dump(mode="python")
    if redact:
        data = redact_secrets(data)
    text = yaml.dump(data, Dumper=ConfigDumper, sort_keys=False, allow_unicode=True, default_flow_style=False)
    if path is not None:
        atomic_write_text(path, text)
    return text
