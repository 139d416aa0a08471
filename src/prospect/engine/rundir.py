"""What a run directory already holds: the config it was trained with, whether it finished.

`prospect train` run twice on one run directory must neither train a finished run again
nor resume a checkpoint with other settings (that would mix two runs in one set of
weights). The sweep uses the same comparison to skip finished runs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from prospect.config.schema import RunConfig

# Settings that may change between a run and its resumption without mixing two runs:
# whether to resume, where metrics go, and how far to train (extending a finished run).
RESUMABLE_CHANGES = ("training.resume", "training.max_steps", "training.num_epochs", "logging.")


def _flat(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: obj}


def saved_config(run_dir: Path) -> dict[str, Any] | None:
    """The flattened config.yaml of `run_dir`, read through the current schema (None if absent;
    {"<unreadable>": ...} if damaged).

    Reading it through the schema and writing it out again puts it on the same footing as the
    config it is compared with: a field added to Prospect since (with its default) or a renamed
    alias is not a change of the run's settings.
    """
    import yaml

    from prospect.config.loader import loads_config
    from prospect.errors import ConfigError

    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        return None
    try:
        text = path.read_text(encoding="utf-8")
        raw = yaml.safe_load(text) or {}
    except (OSError, yaml.YAMLError):
        return {"config.yaml (unreadable)": object()}
    try:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return _flat(yaml.safe_load(loads_config(text, source=str(path)).to_yaml()) or {})
    except ConfigError:  # written by another version, no longer valid: compare it as written
        return _flat(raw)


def config_changes(old: dict[str, Any] | None, cfg: RunConfig) -> list[str]:
    """Dotted keys where a saved config differs from `cfg` (values the engine resolves, like
    `auto` KTO weights, are not counted)."""
    import yaml

    if old is None:
        return []
    new = _flat(yaml.safe_load(cfg.to_yaml()) or {})
    return sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k) and new.get(k) != "auto")


def mixing_changes(changes: list[str]) -> list[str]:
    """The changes that make resuming mix two runs (all but RESUMABLE_CHANGES)."""
    return [k for k in changes if not k.startswith(RESUMABLE_CHANGES)]


def finished_step(run_dir: Path) -> int | None:
    """The global step a finished run ended at (from results.json), or None."""
    try:
        return int(json.loads((Path(run_dir) / "results.json").read_text(encoding="utf-8"))["global_step"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
