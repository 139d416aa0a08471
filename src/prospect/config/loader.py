"""YAML in and out for run configs: load, alias, override, validate, dump.

This is the public API of config loading, for `RunConfig` and its subclasses (the
default class is `RunConfig`); `prospect.config` re-exports it. The work is done in:

- `pipeline.py`     the loading steps, in order (read, method, aliases, overrides, validation);
- `yaml_dialect.py` safe YAML with 1.2 floats, duplicate keys and alias bombs refused, key lines;
- `aliases.py`      the alias table and the shortcuts table; `canonicalize.py` applies it;
- `overrides.py`    `--set a.b.c=VALUE` parsing and merging, and which method a run has;
- `shortcuts.py`    the seeds' command-line shortcuts (`--lr`, `--kto_lambda`, ...);
- `messages.py`     one-line errors `file:line: key: reason (did you mean ...)` and warnings;
- `redact.py`       secrets that are never written or shown.

`dump_config` writes the fully resolved config with secrets redacted; for a config
holding no secrets `load(dump(c)) == c`, and the same config always gives the same text.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from prospect.config import pipeline
from prospect.config.keys import leaf_keys
from prospect.config.overrides import apply_to_dict
from prospect.config.pipeline import config_with_overrides
from prospect.config.redact import REDACTED, redact_secrets
from prospect.config.schema import RunConfig
from prospect.config.shortcuts import parse_cli_shortcuts
from prospect.config.yaml_dialect import dump_config
from prospect.errors import ConfigWarning

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
    return pipeline.load_file(path, overrides, config_cls, shortcuts=shortcuts)


def loads_config(
    text: str,
    overrides: Sequence[str] = (),
    config_cls: type[RunConfig] = RunConfig,
    *,
    source: str = "<string>",
    shortcuts: Mapping[str, Any] | None = None,
) -> RunConfig:
    """`load_config` for YAML text; `source` names it in messages."""
    return pipeline.load_text(text, overrides, config_cls, source=source, shortcuts=shortcuts)


def load_saved_config(path: str | os.PathLike[str], config_cls: type[RunConfig] = RunConfig) -> RunConfig:
    """A run directory's config.yaml, for `prospect eval` and `export`: values written as
    REDACTED are dropped (their defaults apply, e.g. a token read from the environment again)
    instead of being used as the secret."""
    return pipeline.load_saved(path, config_cls)


def apply_overrides(
    config_dict: Mapping[str, Any], overrides: Sequence[str], config_cls: type[RunConfig] = RunConfig
) -> dict[str, Any]:
    """A copy of `config_dict` with `a.b.c=value` overrides applied (seed names allowed in
    keys; values read as YAML). No validation; `config_with_overrides` validates."""
    return apply_to_dict(config_dict, overrides, config_cls)


def resolve_shortcuts(config: RunConfig, shortcuts: Mapping[str, Any]) -> list[str]:
    """`parse_cli_shortcuts` for the method of an already loaded `config`."""
    return parse_cli_shortcuts(shortcuts, config.method.name)


def valid_keys(config_cls: type[RunConfig] = RunConfig) -> list[str]:
    """Every canonical dotted key of `config_cls` (leaf fields), in schema order."""
    return leaf_keys(config_cls)
