"""`prospect sweep`: train every run of a sweep, skip finished ones, resume interrupted ones.

For each run of `expand_grid(cfg)`, in order:
- results.json exists in its directory -> finished earlier: skipped (not trained again; if
  its config.yaml differs from the config the sweep gives it now, a warning names the keys
  and the table's `config_changed` column lists them);
- otherwise `prospect.recipes.training.train(run_cfg, resume=True)`: continues from the run's
  last checkpoint if an earlier sweep was interrupted, else starts fresh;
- an exception fails that run only: recorded as `failed` with its message, the sweep
  goes on, and the exit code is 1 at the end.
Ctrl-C writes the table so far (the current run `interrupted`, the rest `pending`) and
stops; the next invocation resumes where it stopped.

The results table is rewritten after every trained run (later runs `pending`); at the end
the sweep directory holds:
    sweep_config.yaml   the sweep's own config (grid and registry included)
    <run>/...           one run directory per run (see prospect.engine.rundir)
    results.csv/.md     one row per run (prospect.recipes.sweep.results)
    plots/eval_vs_<key>.png, plots/training_curves.png
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prospect.config.schema import RunConfig
from prospect.engine.rundir import config_changes as changes
from prospect.engine.rundir import saved_config
from prospect.errors import ProspectError
from prospect.eval.sweep_plots import plot_metric_vs_values, plot_training_curves
from prospect.recipes.sweep.grid import SweepRun, describe, expand_grid, sweep_directory, sweep_name
from prospect.recipes.sweep.results import (
    STATUS_DONE,
    STATUS_FAILED,
    STATUS_INTERRUPTED,
    STATUS_PENDING,
    STATUS_SKIPPED,
    run_row,
    write_tables,
)
from prospect.recipes.training import train

log = logging.getLogger("prospect")


@contextlib.contextmanager
def scoped_environ() -> Iterator[None]:
    """Restore os.environ after one run.

    The engine sets tracker variables with `setdefault` (WANDB_DIR=<run dir>, ...); without
    this the first run's values would stick to every later run of the sweep.
    """
    saved = dict(os.environ)
    try:
        yield
    finally:
        for k in list(os.environ):
            if k not in saved:
                del os.environ[k]
        for k, v in saved.items():
            if os.environ.get(k) != v:
                os.environ[k] = v


def finish_trackers() -> None:
    """End tracker runs left open, so the next run of the sweep gets its own W&B / MLflow run.

    transformers' WandbCallback reuses an open `wandb.run` instead of starting a new one, and
    wandb reads WANDB_DIR & co. once per process (its setup singleton), so the run is finished
    and the singleton torn down: the next run's wandb.init reads the next run's settings.
    """
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        with contextlib.suppress(Exception):
            wandb.finish()
        with contextlib.suppress(Exception):
            wandb.teardown()
    mlflow = sys.modules.get("mlflow")
    if mlflow is not None:
        with contextlib.suppress(Exception):
            while mlflow.active_run() is not None:
                mlflow.end_run()


def _free_memory() -> None:
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


def _error_text(exc: BaseException) -> str:
    msg = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {msg[0] if msg else ''}".strip()


def _row(run: SweepRun, status: str, error: str | None = None) -> dict[str, Any]:
    ev = run.cfg.evaluation
    return run_row(
        run.run_dir,
        name=run.name,
        status=status,
        model=run.short,
        values=run.values,
        error=error,
        preferred=ev.metric_for_best_model,
        greater_is_better=ev.greater_is_better,
    )


def config_changes(run: SweepRun) -> list[str]:
    """Dotted keys where a finished run's config.yaml differs from the config the sweep would
    give it now (values the engine resolves, like `auto` KTO weights, are not counted)."""
    return changes(saved_config(run.run_dir), run.cfg)


def _later(runs: list[SweepRun]) -> list[dict[str, Any]]:
    """Rows of runs not reached yet: finished ones skipped, the rest pending."""
    return [_row(r, STATUS_SKIPPED if (r.run_dir / "results.json").exists() else STATUS_PENDING) for r in runs]


def print_plan(runs: list[SweepRun], sweep_dir: Path) -> None:
    """The `--dry-run` listing: one line per run with its state (done / interrupted / pending)."""
    rows = describe(runs)
    print(f"sweep directory: {sweep_dir}")
    print(
        f"{len(rows)} runs ({sum(r['state'] == 'done' for r in rows)} done, "
        f"{sum(r['state'] == 'interrupted' for r in rows)} to resume, "
        f"{sum(r['state'] == 'pending' for r in rows)} to train)"
    )
    width = max((len(r["run"]) for r in rows), default=3)
    for r in rows:
        values = ", ".join(f"{k}={r[k]}" for k in runs[0].values) if runs else ""
        print(f"  {r['run']:<{width}}  {r['state']:<11}  model={r['model']}" + (f"  {values}" if values else ""))


def finalize(cfg: RunConfig, runs: list[SweepRun], rows: list[dict[str, Any]], sweep_dir: Path) -> dict[str, Any]:
    """Write results.csv / results.md and the sweep plots; returns their paths."""
    swept = list((cfg.sweep or {}).keys())
    csv_path, md_path = write_tables(sweep_dir, rows, swept, title=f"Sweep {sweep_dir.name}")
    plots: list[Path] = []
    try:
        plots += plot_metric_vs_values(rows, swept, sweep_dir / "plots")
        curves = plot_training_curves({r.name: r.run_dir for r in runs}, sweep_dir / "plots" / "training_curves.png")
        if curves:
            plots.append(curves)
    except Exception as e:  # plots are a convenience; the table is what must be written
        log.warning("sweep plots failed: %s", e)
    return {"csv": csv_path, "md": md_path, "plots": plots}


def _skipped(run: SweepRun, i: int, total: int) -> dict[str, Any]:
    """The row of a run finished earlier (not trained again); warns if its config differs from today's."""
    changed = config_changes(run)
    if changed:
        log.warning(
            "[%d/%d] %s: finished earlier with a different config (%s); skipped - delete %s to train it again",
            i + 1,
            total,
            run.name,
            ", ".join(changed),
            run.run_dir,
        )
    else:
        log.info("[%d/%d] %s: finished earlier, skipped", i + 1, total, run.name)
    row = _row(run, STATUS_SKIPPED)
    if changed:
        row["config_changed"] = ", ".join(changed)
    return row


def run_sweep(cfg: RunConfig, dry_run: bool = False, *, quiet: bool = False) -> int:
    """Train every run of the sweep described by `cfg`; returns the exit code (0, or 1 if any run failed)."""
    runs = expand_grid(cfg)
    sweep_dir = sweep_directory(cfg)
    if dry_run:
        print_plan(runs, sweep_dir)
        return 0
    sweep_dir.mkdir(parents=True, exist_ok=True)
    cfg.to_yaml(str(sweep_dir / "sweep_config.yaml"))
    rows: list[dict[str, Any]] = []
    failed = 0
    for i, run in enumerate(runs):
        if (run.run_dir / "results.json").exists():
            rows.append(_skipped(run, i, len(runs)))
            continue
        log.info("[%d/%d] %s: training", i + 1, len(runs), run.name)
        try:
            with scoped_environ():
                train(run.cfg, resume=True, quiet=quiet)
            rows.append(_row(run, STATUS_DONE))
        except KeyboardInterrupt:
            rows.append(_row(run, STATUS_INTERRUPTED))
            rows += _later(runs[i + 1 :])
            finalize(cfg, runs, rows, sweep_dir)
            raise
        except Exception as exc:  # noqa: BLE001 - one failed run must not stop the sweep
            failed += 1
            if isinstance(exc, ProspectError):
                log.error("%s failed: %s", run.name, exc)
            else:  # a bug: keep its traceback in the log
                log.error("%s failed:\n%s", run.name, traceback.format_exc())
            rows.append(_row(run, STATUS_FAILED, _error_text(exc)))
        finally:
            finish_trackers()
            _free_memory()
        # The table so far (later runs pending), so a killed sweep still leaves one to read.
        write_tables(
            sweep_dir, rows + _later(runs[i + 1 :]), list((cfg.sweep or {}).keys()), title=f"Sweep {sweep_dir.name}"
        )
    out = finalize(cfg, runs, rows, sweep_dir)
    done = sum(r["status"] == STATUS_DONE for r in rows)
    skipped = sum(r["status"] == STATUS_SKIPPED for r in rows)
    print(f"sweep {sweep_name(cfg)}: {done} trained, {skipped} skipped, {failed} failed")
    print(out["md"].read_text(encoding="utf-8"))
    print(f"results: {out['csv']}")
    for p in out["plots"]:
        print(f"plot: {p}")
    return 1 if failed else 0
