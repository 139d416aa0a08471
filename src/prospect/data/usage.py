"""What training will use of the file, said before training: rows used, converted, unused.

`rows_used(report, kind, min_rows)` reads a data report after `load_records` (a dict with
`records` and `conversions`) and returns one console line, e.g.

    data: read 300 rows, accepted 300, rejected 0; 2 unpaired rows paired into 1 pair, 298 unpaired rows unused
    (no row of the other label with the same prompt); training on 1 pair (validation: 0)

It also stores the numbers under `report["usage"]`. When accepted rows were left unused by the
conversion to the method's kind (unpaired rows with no partner for a paired method, the middle
responses of a `best_worst` ranking) and fewer than `min_rows` training records remain
(`data.min_rows_used`, default two batches of `training.batch_size`), it raises `ConfigError`
(exit 2) naming the fix. A small file that is used in full is not refused.
"""

from __future__ import annotations

from typing import Any

from prospect.errors import ConfigError

NO_PARTNER = "no row of the other label with the same prompt"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _paired(report: dict[str, Any]) -> tuple[list[str], int, int]:
    """(conversion phrases, unused rows, training pairs) for a paired method."""
    rec, conv = report["records"], report.get("conversions", {})
    unused = rec["train"].get("unused_unpaired_rows", 0)  # of the training source (a validation file has its own)
    parts = []
    u = conv.get("unpaired_to_pairs", {})
    if u.get("rows"):
        parts.append(f"{_plural(u['rows'] - unused, 'unpaired row')} paired into {_plural(u.get('pairs', 0), 'pair')}")
        if unused:
            parts.append(f"{_plural(unused, 'unpaired row')} unused ({NO_PARTNER})")
    r = conv.get("ranking_to_pairs", {})
    if r.get("rows"):
        parts.append(f"{_plural(r['rows'], 'ranking')} turned into {_plural(r.get('pairs', 0), 'pair')}")
        if r.get("unused"):
            parts.append(f"{_plural(r['unused'], 'ranked response')} in no pair")
            unused += r["unused"]
    return parts, unused, rec["train"]["pairs"]


def _unpaired(report: dict[str, Any]) -> tuple[list[str], int, int]:
    """(conversion phrases, unused responses, training rows) for an unpaired method."""
    rec, conv = report["records"], report.get("conversions", {})
    parts, unused = [], 0
    p = conv.get("pairs_to_unpaired", {})
    if p.get("pairs") and p.get("converted"):
        rows = p.get("desirable", 0) + p.get("undesirable", 0)
        parts.append(f"{_plural(p['pairs'], 'pair')} split into {_plural(rows, 'row')} ({p.get('strategy')})")
    r = conv.get("ranking_to_unpaired", {})
    if r.get("rows"):
        rows = r.get("desirable", 0) + r.get("undesirable", 0)
        parts.append(f"{_plural(r['rows'], 'ranking')} turned into {_plural(rows, 'row')}")
        if r.get("unused"):
            parts.append(f"{_plural(r['unused'], 'ranked response')} unused (the middle of best_worst)")
            unused += r["unused"]
    return parts, unused, rec["train"]["rows"]


def rows_used(report: dict[str, Any], kind: str, min_rows: int, source: str | None = None) -> str:
    """The console line (module doc); sets report["usage"]; ConfigError when too little remains."""
    parts, unused, n_train = (_paired if kind == "paired" else _unpaired)(report)
    unit = "pair" if kind == "paired" else "row"
    n_val = report["records"]["validation"].get("pairs" if kind == "paired" else "rows", 0)
    report["usage"] = {"kind": kind, "train": n_train, "validation": n_val, "unused": unused, "min_rows_used": min_rows}
    head = f"data: read {report['rows_read']} rows, accepted {report['accepted']}, rejected {len(report['rejected'])}"
    line = "; ".join([head, *parts, f"training on {_plural(n_train, unit)} (validation: {n_val})"])
    if unused and n_train < min_rows:
        fix = (
            "give a paired method chosen/rejected pairs (or unpaired rows with a desirable and an undesirable "
            "completion for each prompt), or train an unpaired method (method: kto) on these rows"
            if kind == "paired"
            else "use another data.ranking_strategy"
        )
        raise ConfigError(
            f"{source or report.get('source')}: only {_plural(n_train, unit)} left to train on from "
            f"{report['rows_read']} rows read ({unused} unused), fewer than data.min_rows_used={min_rows}: {fix}; "
            "or set data.min_rows_used lower to train on them anyway"
        )
    return line
