"""PNG plots of a sweep: final eval metrics against each swept value, and all runs' curves overlaid."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from prospect.io import atomic_path, read_jsonl

# Final metrics plotted against swept values, in this order, when the runs logged them.
SWEEP_METRICS = ("eval_rewards/accuracies", "eval_rewards/margins", "eval_loss", "eval_kl")


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _save(fig: Any, path: Path) -> None:
    # Written beside the target and renamed: a killed sweep never leaves a half-written PNG.
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")


def _file_label(key: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in key)


def plot_metric_vs_values(
    rows: Sequence[Mapping[str, Any]], swept: Sequence[str], out_dir: Path, metrics: Sequence[str] | None = None
) -> list[Path]:
    """For each swept key write `eval_vs_<key>.png`: one panel per metric, the metric's final
    value against the key's value, one line per model and combination of the other swept values.

    Non-numeric values are placed at evenly spaced positions labelled with the value. Without a
    grid (models only) one `eval_by_model.png` shows each metric per model.
    """
    plt = _plt()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    wanted = list(metrics or SWEEP_METRICS)
    present = [m for m in wanted if any(_is_num(r.get(m)) for r in rows)]
    if not present:
        return []
    written: list[Path] = []
    if not swept:
        fig, axes = plt.subplots(1, len(present), figsize=(4.5 * len(present), 3.8), squeeze=False)
        for ax, m in zip(axes[0], present):
            pts = [(str(r.get("model")), r[m]) for r in rows if _is_num(r.get(m))]
            ax.bar(range(len(pts)), [v for _, v in pts])
            ax.set_xticks(range(len(pts)), [n for n, _ in pts], rotation=30, ha="right", fontsize=8)
            ax.set_title(m)
            ax.grid(alpha=0.3, axis="y")
        fig.tight_layout()
        p = out_dir / "eval_by_model.png"
        _save(fig, p)
        plt.close(fig)
        return [p]
    for key in swept:
        values = [r.get(key) for r in rows]
        numeric = all(_is_num(v) for v in values if v is not None)
        cats = list(dict.fromkeys(str(v) for v in values)) if not numeric else []
        fig, axes = plt.subplots(1, len(present), figsize=(4.8 * len(present), 3.8), squeeze=False)
        for ax, m in zip(axes[0], present):
            groups: dict[str, list[tuple[float, float]]] = {}
            for r in rows:
                if not _is_num(r.get(m)) or r.get(key) is None:
                    continue
                others = [f"{o.rsplit('.', 1)[-1]}={r.get(o)}" for o in swept if o != key]
                label = ", ".join([str(r.get("model"))] + others)
                x = float(r[key]) if numeric else float(cats.index(str(r[key])))
                groups.setdefault(label, []).append((x, float(r[m])))
            for label, pts in groups.items():
                pts.sort()
                ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=label, markersize=4)
            if not numeric:
                ax.set_xticks(range(len(cats)), cats, rotation=30, ha="right", fontsize=8)
            ax.set_xlabel(key)
            ax.set_title(m)
            ax.grid(alpha=0.3)
            if len(groups) > 1:
                ax.legend(fontsize=7)
        fig.suptitle(f"final eval metrics vs {key}")
        fig.tight_layout()
        p = out_dir / f"eval_vs_{_file_label(key)}.png"
        _save(fig, p)
        plt.close(fig)
        written.append(p)
    return written


def plot_training_curves(run_dirs: Mapping[str, Path], out_path: Path) -> Path | None:
    """Write one PNG with every run's training loss (left) and eval loss (right) against step.

    Reads each run's metrics.jsonl; runs with no logged loss are left out. Returns None if
    no run logged anything.
    """
    plt = _plt()
    fig, (ax_t, ax_e) = plt.subplots(1, 2, figsize=(12, 4.5))
    drawn = False
    for name, run_dir in run_dirs.items():
        rows = read_jsonl(Path(run_dir) / "metrics.jsonl")
        for ax, key, style in ((ax_t, "loss", "-"), (ax_e, "eval_loss", "o--")):
            pts = sorted((r["step"], r[key]) for r in rows if _is_num(r.get(key)) and _is_num(r.get("step")))
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], style, label=name, markersize=3)
                drawn = True
    if not drawn:
        plt.close(fig)
        return None
    for ax, title in ((ax_t, "training loss"), (ax_e, "eval loss")):
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7)
    fig.tight_layout()
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    _save(fig, out_path)
    plt.close(fig)
    return out_path
