"""The sweep's results table: one row per run, written as results.csv and results.md.

A row holds the run name, its status, the model, the swept values, the steps and wall
time from the run's results.json, the final metrics (train_loss and every eval_* metric
of results.json) and the best value of each eval metric with a known direction over all
evaluations logged in metrics.jsonl (`best_<metric>`, plus `best_step` of the sweep's
primary metric), and the error message of a failed run.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from prospect.io import atomic_write_text, read_jsonl

# Eval metrics whose "best" has an obvious direction (max or min over evaluations).
BEST_DIRECTION: dict[str, Callable[..., Any]] = {
    "eval_loss": min,
    "eval_rewards/accuracies": max,
    "eval_rewards/margins": max,
}
# Trainer bookkeeping that is not a metric of the model.
_NOT_METRICS = ("_runtime", "_per_second", "total_flos", "epoch")

STATUS_DONE, STATUS_SKIPPED, STATUS_FAILED = "done", "skipped (finished earlier)", "failed"
STATUS_PENDING, STATUS_INTERRUPTED = "pending", "interrupted"


def _is_metric(key: str, value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and not key.endswith(_NOT_METRICS)


def final_metrics(results: dict[str, Any]) -> dict[str, float]:
    """train_loss and the eval_* metrics of a run's results.json."""
    m = results.get("metrics") or {}
    return {k: float(v) for k, v in m.items() if (k == "train_loss" or k.startswith("eval_")) and _is_metric(k, v)}


def eval_history(run_dir: Path) -> list[dict[str, Any]]:
    """The eval rows (those holding an eval_* number) of a run's metrics.jsonl, in order."""
    return [
        r
        for r in read_jsonl(Path(run_dir) / "metrics.jsonl")
        if any(k.startswith("eval_") and _is_metric(k, v) for k, v in r.items())
    ]


def best_metrics(history: Sequence[dict[str, Any]], directions: dict[str, Callable[..., Any]]) -> dict[str, float]:
    """{`best_<metric>`: max or min of the metric over `history`} for each metric present."""
    out: dict[str, float] = {}
    for key, pick in directions.items():
        vals = [float(r[key]) for r in history if _is_metric(key, r.get(key)) and math.isfinite(float(r[key]))]
        if vals:
            out[f"best_{key}"] = pick(vals)
    return out


def primary_metric(keys: Sequence[str], preferred: str | None = None) -> str | None:
    """The metric the sweep is judged by: `preferred` (metric_for_best_model, with or without
    the eval_ prefix) if logged, else paired reward accuracy, mean margin, then eval loss."""
    cands = []
    if preferred:
        cands += [preferred, preferred if preferred.startswith("eval_") else f"eval_{preferred}"]
    cands += ["eval_rewards/accuracies", "eval_rewards/margins", "eval_loss"]
    return next((c for c in cands if c in keys), None)


def run_row(
    run_dir: Path,
    *,
    name: str,
    status: str,
    model: str,
    values: dict[str, Any],
    error: str | None = None,
    preferred: str | None = None,
    greater_is_better: bool = True,
) -> dict[str, Any]:
    """One table row for the run in `run_dir` (results.json and metrics.jsonl read if present)."""
    row: dict[str, Any] = {"run": name, "status": status, "model": model, **values}
    res_path = Path(run_dir) / "results.json"
    results: dict[str, Any] = {}
    if res_path.exists():
        try:
            results = json.loads(res_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            results = {}
    row["global_step"] = results.get("global_step")
    row["wall_time_s"] = results.get("wall_time_s")
    row.update(final_metrics(results))
    history = eval_history(run_dir)
    directions = dict(BEST_DIRECTION)
    logged = {k for r in history for k in r}
    primary = primary_metric(sorted(logged), preferred)
    if primary and primary not in directions:
        directions[primary] = max if greater_is_better else min
    row.update(best_metrics(history, directions))
    if primary:
        pick = directions[primary]
        scored = [r for r in history if _is_metric(primary, r.get(primary))]
        if scored:
            row["best_step"] = pick(scored, key=lambda r: float(r[primary])).get("step")
    if error:
        row["error"] = error
    return row


def columns(rows: Sequence[dict[str, Any]], swept: Sequence[str]) -> list[str]:
    """Column order: identity, swept values, steps/time, final metrics, best metrics, error."""
    head = ["run", "status", "model", *swept, "global_step", "wall_time_s"]
    seen = [k for r in rows for k in r if k not in head]
    rest = list(dict.fromkeys(seen))
    finals = sorted(k for k in rest if k == "train_loss" or k.startswith("eval_"))
    bests = sorted(k for k in rest if k.startswith("best_") and k != "best_step")
    other = [k for k in rest if k not in finals and k not in bests and k not in ("best_step", "error")]
    tail = (["best_step"] if "best_step" in rest else []) + (["error"] if "error" in rest else [])
    return head + finals + bests + other + tail


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (list, dict)):
        return json.dumps(v)
    return str(v)


def to_csv(rows: Sequence[dict[str, Any]], cols: Sequence[str]) -> str:
    """CSV text (full precision numbers, empty cells for missing values)."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(cols), extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow(
            {
                k: ("" if r.get(k) is None else (json.dumps(r[k]) if isinstance(r[k], (list, dict)) else r[k]))
                for k in cols
            }
        )
    return buf.getvalue()


def to_markdown(rows: Sequence[dict[str, Any]], cols: Sequence[str], title: str | None = None) -> str:
    """A GitHub markdown table (numbers to 4 significant digits; '|' in cells escaped)."""
    lines = [f"# {title}", ""] if title else []
    lines.append("| " + " | ".join(cols) + " |")
    lines.append("|" + "|".join("---" for _ in cols) + "|")
    for r in rows:
        cells = [_cell(r.get(c)).replace("|", "\\|").replace("\n", " ") for c in cols]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_tables(
    sweep_dir: Path, rows: Sequence[dict[str, Any]], swept: Sequence[str], title: str | None = None
) -> tuple[Path, Path]:
    """Write results.csv and results.md into `sweep_dir` atomically; returns both paths."""
    cols = columns(rows, swept)
    csv_path, md_path = Path(sweep_dir) / "results.csv", Path(sweep_dir) / "results.md"
    atomic_write_text(csv_path, to_csv(rows, cols))
    atomic_write_text(md_path, to_markdown(rows, cols, title))
    return csv_path, md_path
