"""The markdown table of a bench_train.py results file: one row per case, the worst case per method.

    python bench/profiles_table.py bench/results/bench_train_profiles.json

Columns: step seconds of Prospect (defaults), TRL with gradient checkpointing (its default) and
without; the per-step ratio against the faster TRL setting (at the epoch's mean row length, as
bench/summary.py); the whole-run ratio (every step plus Prospect's reference precompute); peak
RSS of both defaults and their ratio; how many decoder layers Prospect checkpointed; the
first-step loss gap (Prospect in TRL's order against TRL's default).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def _layers(run: dict[str, Any]) -> str:
    note = run.get("gradient_checkpointing") or {}
    if "layers" not in note:
        return "on" if note.get("enabled") else "off"
    return f"{note['layers']}/{note['of_layers']}"


def _step(run: dict[str, Any]) -> str:
    return f"{run['step_s']:.1f}" if "step_s" in run else "failed"  # e.g. killed for memory


def rows(table: list[dict[str, Any]]) -> list[str]:
    out = [
        "| case | Prospect step s | TRL-gc step s | TRL step s | per step | whole run | RSS Prospect / TRL-gc (GB) "
        "| RSS ratio | checkpointed layers | first-step loss gap |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in table:
        p, g, t = r["prospect"], r["trl-gc"], r["trl"]
        out.append(
            f"| {r['method']} {r['profile']} | {p['step_s']:.1f} | {g['step_s']:.1f} | {_step(t)} "
            f"| x{r['ratio_samples']:.2f} | x{r['ratio_samples_with_reference']:.2f} "
            f"| {p['rss_mb'] / 1000:.2f} / {g['rss_mb'] / 1000:.2f} | x{r['ratio_rss']:.2f} | {_layers(p)} "
            f"| {r['first_loss']['abs_diff']:.1e} |"
        )
    return out


def worst(table: list[dict[str, Any]]) -> list[str]:
    out = []
    for method in sorted({r["method"] for r in table}):
        mine = [r for r in table if r["method"] == method]

        def pick(key: str, highest_is_worst: bool = False, mine: list[dict[str, Any]] = mine) -> str:
            r = (max if highest_is_worst else min)(mine, key=lambda x: x[key])
            return f"x{r[key]:.2f} ({r['profile']})"

        gap = max(mine, key=lambda x: x["first_loss"]["abs_diff"])
        out.append(
            f"- worst case {method} over {len(mine)} profiles: per step {pick('ratio_samples')}, whole run "
            f"{pick('ratio_samples_with_reference')}, peak RSS {pick('ratio_rss', highest_is_worst=True)}, "
            f"first-step loss gap {gap['first_loss']['abs_diff']:.1e} ({gap['profile']})"
        )
    return out


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    data = json.loads(Path(args[0] if args else "bench/results/bench_train_profiles.json").read_text())
    table = [r for r in data["table"] if all(k in r for k in ("prospect", "trl-gc", "trl", "ratio_samples"))]
    print("\n".join(rows(table) + [""] + worst(table)))


if __name__ == "__main__":
    main()
