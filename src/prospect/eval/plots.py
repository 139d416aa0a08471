"""PNG plots of a run's metrics.jsonl: loss, rewards, margins, KL (train and eval)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prospect.io import atomic_path, read_jsonl

PANELS = (
    ("Loss", ("loss", "eval_loss")),
    ("Rewards", ("rewards/chosen", "rewards/rejected", "eval_rewards/chosen", "eval_rewards/rejected")),
    ("Margin", ("rewards/margins", "eval_rewards/margins")),
    ("KL / z0", ("kl", "eval_kl")),
)


def _save_png(fig: Any, path: Path) -> None:
    """Save atomically (temp file + rename); the temp name has no .png suffix, so the format is explicit."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")


def plot_run(run_dir: str | Path) -> list[Path]:
    """Write plots/<panel>.png and plots/overview.png for one run; returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    rows = read_jsonl(run_dir / "metrics.jsonl")
    out_dir = run_dir / "plots"
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    fig_all, axes = plt.subplots(2, 2, figsize=(11, 7))
    for ax_all, (title, keys) in zip(axes.flat, PANELS):
        fig, ax = plt.subplots(figsize=(6, 4))
        drawn = False
        for key in keys:
            pts = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), (int, float))]
            if not pts:
                continue
            xs, ys = zip(*pts)
            style = "o--" if key.startswith("eval_") else "-"
            for a in (ax, ax_all):
                a.plot(xs, ys, style, label=key, markersize=4)
            drawn = True
        for a in (ax, ax_all):
            a.set_title(f"{run_dir.name}: {title}" if a is ax else title)
            a.set_xlabel("step")
            a.grid(alpha=0.3)
            if drawn:
                a.legend(fontsize=8)
        fig.tight_layout()
        if drawn:
            p = out_dir / f"{title.split()[0].lower()}.png"
            _save_png(fig, p)
            written.append(p)
        plt.close(fig)
    fig_all.suptitle(run_dir.name)
    fig_all.tight_layout()
    p = out_dir / "overview.png"
    _save_png(fig_all, p)
    plt.close(fig_all)
    written.append(p)
    return written
