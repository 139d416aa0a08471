"""Run configs as the command line gives them: a YAML file, `--set` overrides and the seeds' shortcuts."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from prospect.config.loader import load_config, resolve_shortcuts
from prospect.config.schema import RunConfig
from prospect.errors import ConfigError


def load_run_config(
    path: str | None,
    overrides: Sequence[str] = (),
    shortcuts: Mapping[str, Any] | None = None,
    config_cls: type[RunConfig] = RunConfig,
) -> RunConfig:
    """Load `path` with `--set` overrides, then the seed shortcuts (`--lr`, `--kto_lambda`, ...), validated.

    Shortcuts are resolved against the loaded config (which key `--kto_lambda` sets depends on
    the method), then applied after the overrides.
    """
    if not path:
        raise ConfigError("no config file given (prospect train CONFIG or --config CONFIG)")
    cfg = load_config(path, list(overrides), config_cls=config_cls)
    if shortcuts:
        cfg = load_config(path, list(overrides) + resolve_shortcuts(cfg, dict(shortcuts)), config_cls=config_cls)
    return cfg
