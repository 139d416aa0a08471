"""Recipes: the only layer that runs a job. Everything below is a library.

train(cfg)              prepare -> load -> tokenize -> reference -> trainer -> fit -> finish
prepare(cfg)            every check that needs no model (also what tests and bench use)
evaluate_run(run_dir)   `prospect eval`
export_run(run_dir, o)  `prospect export`
inspect_data(file)      `prospect data inspect`
run_sweep(cfg)          `prospect sweep`
load_run_config(...)    a YAML file + --set overrides + seed shortcuts
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

# name -> module. Loaded on first use, so `prospect --help` and config errors do not import torch.
_EXPORTS = {
    "PreparedRun": "prospect.recipes.preparation",
    "RunResult": "prospect.recipes.preparation",
    "prepare": "prospect.recipes.preparation",
    "train": "prospect.recipes.training",
    "evaluate_run": "prospect.recipes.evaluate",
    "export_run": "prospect.recipes.export",
    "inspect_data": "prospect.recipes.inspect",
    "run_sweep": "prospect.recipes.sweep",
    "load_run_config": "prospect.recipes.config",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'prospect.recipes' has no attribute {name!r}")
    return getattr(import_module(_EXPORTS[name]), name)
