"""Curriculum ordering of preference pairs (seed 003, track A: "train on easy pairs first").

Two sources of difficulty, chosen by `dpo.curriculum`:

- `reference_margin`: the reference model's margin on the pair,
      m_i = log pi_ref(y_w | x) - log pi_ref(y_l | x)      (summed over completion tokens).
  A large m_i means the reference already prefers the chosen completion clearly: an easy
  pair. Pairs are ordered by m_i, largest first. The margins come from the precomputed
  reference columns (`ref_chosen_logps`, `ref_rejected_logps`), so this mode needs
  `dpo.precompute_ref_log_probs: true` and a reference (not `reference_free`).
- `column`: a numeric column of the training file, named by `dpo.curriculum_column`,
  read as a difficulty: smallest first (a `difficulty` or `level` column: 1 = simple,
  3 = nuanced). A leading "-" reverses it, largest first (`-score_margin`: a large score
  gap between chosen and rejected is easy). Values are looked up by each pair's source
  row, so any column of the file works, whether or not Prospect otherwise reads it.

Ties keep the data order (the sort is stable). The engine trains in the resulting order
with a sequential sampler (`TrainingArguments.train_sampling_strategy = "sequential"`),
so every epoch goes easy-to-hard; group-by-length sampling is off for such a run.

`curriculum_order` is the pure core; `apply_curriculum` is what `engine/run.py` calls.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from prospect.data.readers import open_source, read_rows
from prospect.errors import ConfigError, DPODataError

CURRICULA = ("reference_margin", "column")


def curriculum_order(difficulty: Sequence[float]) -> list[int]:
    """Indices of `difficulty` from easiest (smallest) to hardest; ties keep their order.

    >>> curriculum_order([3.0, 1.0, 2.0, 1.0])
    [1, 3, 2, 0]
    """
    values = [float(d) for d in difficulty]
    for i, d in enumerate(values):
        if math.isnan(d):
            raise ValueError(f"difficulty of item {i} is NaN")
    return sorted(range(len(values)), key=lambda i: values[i])


def reference_margin_difficulty(ref_chosen_logps: Sequence[float], ref_rejected_logps: Sequence[float]) -> list[float]:
    """Difficulty = -(log pi_ref(y_w|x) - log pi_ref(y_l|x)): the largest reference margin is easiest."""
    if len(ref_chosen_logps) != len(ref_rejected_logps):
        raise ValueError(f"{len(ref_chosen_logps)} chosen but {len(ref_rejected_logps)} rejected reference log-probs")
    return [-(float(c) - float(r)) for c, r in zip(ref_chosen_logps, ref_rejected_logps)]


def column_difficulty(
    source_rows: Sequence[int], values_by_row: Mapping[int, Any], column: str, source: str = "training data"
) -> list[float]:
    """Difficulty of each pair from `column` of its source row ("-column": negated, largest first).

    Raises DPODataError naming the file, row and column when a value is missing or not a number.
    """
    name, sign = (column[1:], -1.0) if column.startswith("-") else (column, 1.0)
    out = []
    for row in source_rows:
        if row not in values_by_row or values_by_row[row] is None:
            raise DPODataError(
                f"{source}: row {row}: field '{name}': missing; dpo.curriculum 'column' needs a "
                f"number in every training row"
            )
        value = values_by_row[row]
        try:
            if isinstance(value, bool):
                raise TypeError
            number = float(value)
        except (TypeError, ValueError):
            raise DPODataError(
                f"{source}: row {row}: field '{name}': {value!r} is not a number "
                "(dpo.curriculum 'column' orders pairs by a numeric difficulty)"
            ) from None
        if math.isnan(number):
            raise DPODataError(f"{source}: row {row}: field '{name}': NaN is not a difficulty")
        out.append(sign * number)
    return out


def read_column(location: str, column: str) -> dict[int, Any]:
    """{source row: value of `column`} of the file or dataset at `location` (rows as the readers number them)."""
    name = column[1:] if column.startswith("-") else column
    return {raw.row: raw.data.get(name) for raw in read_rows(open_source(location)) if raw.data is not None}


def check_curriculum(cfg: Any) -> None:
    """Refuse a curriculum the run cannot use, before any model is loaded (ConfigError)."""
    mode = cfg.dpo.curriculum
    if mode is None:
        return
    if cfg.is_unpaired:
        raise ConfigError(
            f"dpo.curriculum: orders pairs, but method {cfg.method.name} trains on unpaired rows; "
            "remove dpo.curriculum or use a pair method (dpo, ipo, factual_dpo, dpo_kto)"
        )
    if mode == "reference_margin":
        sec = cfg.method_section
        if sec.reference_free:
            raise ConfigError(
                "dpo.curriculum: 'reference_margin' needs a reference model, but dpo.reference_free "
                "is true; use curriculum 'column' or drop reference_free"
            )
        if not sec.precompute_ref_log_probs:
            raise ConfigError(
                "dpo.curriculum: 'reference_margin' reads the precomputed reference log-probs; "
                "set dpo.precompute_ref_log_probs: true"
            )
    elif mode == "column" and not cfg.dpo.curriculum_column:
        raise ConfigError(
            "dpo.curriculum: 'column' needs dpo.curriculum_column (a numeric column of the training "
            "file; smallest first, '-name' for largest first)"
        )


def apply_curriculum(train_ds: Any, cfg: Any) -> tuple[Any, dict[str, Any] | None]:
    """(train_ds reordered easy-to-hard, a note for results.json), or (train_ds, None) without a curriculum.

    `train_ds`: the tokenized `datasets.Dataset` of pairs (with `source_row`, and the reference
    columns when precomputed). The note records the mode, the column, the number of pairs
    and the difficulty of the first and last pair.
    """
    check_curriculum(cfg)
    mode = cfg.dpo.curriculum
    if mode is None:
        return train_ds, None
    if mode == "reference_margin":
        missing = [c for c in ("ref_chosen_logps", "ref_rejected_logps") if c not in train_ds.column_names]
        if missing:
            raise ConfigError(
                f"dpo.curriculum: 'reference_margin' needs the precomputed reference columns "
                f"({', '.join(missing)} missing); set dpo.precompute_ref_log_probs: true"
            )
        difficulty = reference_margin_difficulty(
            list(train_ds["ref_chosen_logps"]), list(train_ds["ref_rejected_logps"])
        )
        column = None
    else:
        column = str(cfg.dpo.curriculum_column)
        values = read_column(str(cfg.data.train_file), column)
        difficulty = column_difficulty(
            [int(r) for r in train_ds["source_row"]], values, column, source=str(cfg.data.train_file)
        )
    order = curriculum_order(difficulty)
    rows = [int(r) for r in train_ds["source_row"]]
    note = {
        "mode": mode,
        "column": column,
        "pairs": len(order),
        "sampler": "sequential",
        "easiest_difficulty": difficulty[order[0]] if order else None,
        "hardest_difficulty": difficulty[order[-1]] if order else None,
        "first_source_rows": [rows[i] for i in order[:5]],
    }
    return train_ds.select(order), note


__all__ = [
    "CURRICULA",
    "apply_curriculum",
    "check_curriculum",
    "column_difficulty",
    "curriculum_order",
    "read_column",
    "reference_margin_difficulty",
]
