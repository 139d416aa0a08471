"""`prospect sweep`: model registry x parameter grid -> runs, trained in turn; one results table.

from prospect.recipes.sweep import expand_grid, run_sweep
runs = expand_grid(cfg)          # [SweepRun(name, model_id, short, values, cfg), ...]
exit_code = run_sweep(cfg)       # trains, skips finished runs, writes results.csv/.md and plots
"""

from prospect.recipes.sweep.grid import SweepRun, expand_grid, sweep_directory, sweep_name
from prospect.recipes.sweep.runner import run_sweep

__all__ = ["SweepRun", "expand_grid", "run_sweep", "sweep_directory", "sweep_name"]
