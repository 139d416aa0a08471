"""A sweep's runs: the model registry x the cartesian product of the `sweep:` grid.

Each run's config is the base config with one model and one grid point applied through
`prospect.config.loader.config_with_overrides` (so it is validated exactly like a
`--set` override), with `models` and `sweep` cleared, `training.output_dir` set to the
sweep directory and `training.run_name` set to the run's name:

    <short>_<method>[_<key><value>...]      e.g. smollm2-135m_factual_dpo_delta10

`short` is the registry entry's `short` (else derived from the model id), `key` the last
component of each swept dotted key (the whole key, dots as dashes, when two swept keys
share a last component), in the order the grid lists them.
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prospect.config.loader import config_with_overrides
from prospect.config.schema import ModelEntry, RunConfig
from prospect.engine.rundir import model_short_name, run_directory, safe_name
from prospect.errors import ConfigError


@dataclass
class SweepRun:
    """One point of a sweep.

    name: run directory name; model_id / short: the registry entry; values: swept dotted
    key -> value; cfg: the run's full, validated config.
    """

    name: str
    model_id: str
    short: str
    values: dict[str, Any]
    cfg: RunConfig
    overrides: list[str] = field(default_factory=list)

    @property
    def run_dir(self) -> Path:
        return run_directory(self.cfg)


def format_value(value: Any) -> str:
    """A grid value as it appears in a run name: 10.0 -> '10', 0.05 -> '0.05', True -> 'true'."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isfinite(value) and value == int(value) and abs(value) < 1e15:
            return str(int(value))
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "-".join(format_value(v) for v in value)
    if value is None:
        return "none"
    return str(value)


def name_keys(keys: list[str]) -> dict[str, str]:
    """Swept dotted key -> the label used in run names (last component unless ambiguous)."""
    last = [k.rsplit(".", 1)[-1] for k in keys]
    return {k: (short if last.count(short) == 1 else k.replace(".", "-")) for k, short in zip(keys, last)}


def registry(cfg: RunConfig) -> list[ModelEntry]:
    """The models of a sweep: `cfg.models`, or the single `cfg.model` when there is no registry."""
    if cfg.models:
        return list(cfg.models)
    return [ModelEntry(id=cfg.model.name, short=None, gguf_file=cfg.model.gguf_file)]


def sweep_name(cfg: RunConfig) -> str:
    """Directory name of the sweep: `training.run_name` if set, else `<method>[_<key>...]`
    (e.g. `factual_dpo_delta`), else `<method>_models`."""
    if cfg.training.run_name:
        return safe_name(cfg.training.run_name)
    keys = list((cfg.sweep or {}).keys())
    labels = list(name_keys(keys).values())
    return safe_name("_".join([cfg.method.name] + (labels or ["models"])))


def sweep_directory(cfg: RunConfig) -> Path:
    """`<training.output_dir>/<sweep name>` (absolute)."""
    return (Path(cfg.training.output_dir) / sweep_name(cfg)).resolve()


def _override(key: str, value: Any) -> str:
    # JSON is YAML, so the loader reads the value back with its type (0.1, "x", [1, 2], null).
    return f"{key}={json.dumps(value)}"


def expand_grid(cfg: RunConfig) -> list[SweepRun]:
    """Every (model, grid point) of `cfg` as a `SweepRun`, models outermost, grid in listed order.

    Raises ConfigError for an empty grid list or two runs that would share a directory.
    """
    grid = dict(cfg.sweep or {})
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"sweep.{key}: expected a non-empty list of values, got {values!r}")
    keys = list(grid)
    labels = name_keys(keys)
    out_dir = str(sweep_directory(cfg))
    runs: list[SweepRun] = []
    seen: dict[str, dict[str, Any]] = {}
    for entry in registry(cfg):
        short = safe_name(entry.short) if entry.short else model_short_name(entry.id)
        for point in itertools.product(*(grid[k] for k in keys)):
            values = dict(zip(keys, point))
            # model.name swept in the grid wins over the registry entry
            model_name = values.get("model.name", entry.id)
            run_short = model_short_name(str(model_name)) if "model.name" in values and not entry.short else short
            parts = [run_short, cfg.method.name] + [
                f"{labels[k]}{format_value(v)}" for k, v in values.items() if k != "model.name"
            ]
            name = safe_name("_".join(parts))
            overrides = [
                _override("models", None),
                _override("sweep", None),
                _override("model.name", entry.id),
                _override("model.gguf_file", entry.gguf_file),
                _override("training.output_dir", out_dir),
                _override("training.run_name", name),
            ]
            if not cfg.models:  # no registry: keep the base model's gguf_file as given
                overrides = [o for o in overrides if not o.startswith(("model.name=", "model.gguf_file="))]
            overrides += [_override(k, v) for k, v in values.items()]
            run_cfg = config_with_overrides(cfg, overrides)
            if name in seen:
                raise ConfigError(
                    f"sweep: runs {seen[name]} and {values} would both be named '{name}'; "
                    "give the models distinct `short` names"
                )
            seen[name] = values
            runs.append(
                SweepRun(
                    name=name,
                    model_id=str(model_name),
                    short=run_short,
                    values=values,
                    cfg=run_cfg,
                    overrides=overrides,
                )
            )
    return runs


def describe(runs: list[SweepRun]) -> list[dict[str, Any]]:
    """Plain dicts (name, model, values, state) for listing runs, e.g. `--dry-run`."""
    rows = []
    for r in runs:
        d = r.run_dir
        state = (
            "done"
            if (d / "results.json").exists()
            else (
                "interrupted"
                if (d / "checkpoints").is_dir() and any((d / "checkpoints").glob("checkpoint-*"))
                else "pending"
            )
        )
        rows.append({"run": r.name, "model": r.model_id, **r.values, "state": state, "run_dir": str(d)})
    return rows
