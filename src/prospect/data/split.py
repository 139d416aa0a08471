"""Deterministic train/validation split when no validation file is given.

Records are grouped by their source row (the two rows made from one pair, or the pairs
made from one ranking, stay together, so validation never sees half of a training row).
With n groups and fraction p (`data.validation_split_percentage`), the validation split
takes min(n - 1, max(1, floor(n * p))) groups when p > 0 and n >= 2 (else none: training
always keeps at least one group), chosen by shuffling
the group keys with `random.Random(seed)`. Both splits keep file order.

`in_validation(seed, row, p)` is the streaming counterpart: a row goes to validation when
a seeded hash of its row number falls below p (so the fraction is p only on average).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import TypeVar

from prospect.data.index import digest

T = TypeVar("T")


def validation_count(n_groups: int, fraction: float) -> int:
    """Number of groups held out: min(n - 1, max(1, floor(n * p))) if p > 0 and n >= 2, else 0."""
    if fraction <= 0 or n_groups < 2:
        return 0
    return min(n_groups - 1, max(1, math.floor(n_groups * fraction + 1e-9)))


def split_records(records: Sequence[T], fraction: float, seed: int = 42) -> tuple[list[T], list[T]]:
    """(train, validation) by source-row groups (see module doc)."""
    keys: list[object] = []
    seen: set[object] = set()
    for i, rec in enumerate(records):
        key = getattr(rec, "source_row", None)
        key = ("i", i) if key is None else key
        if key not in seen:
            seen.add(key)
            keys.append(key)
    n_val = validation_count(len(keys), fraction)
    if n_val == 0:
        return list(records), []
    shuffled = list(keys)
    random.Random(seed).shuffle(shuffled)
    held = set(shuffled[:n_val])
    train, val = [], []
    for i, rec in enumerate(records):
        key = getattr(rec, "source_row", None)
        key = ("i", i) if key is None else key
        (val if key in held else train).append(rec)
    return train, val


def in_validation(seed: int, row: int, fraction: float) -> bool:
    """Streaming split: True for about `fraction` of rows, fixed by (seed, row)."""
    if fraction <= 0:
        return False
    return (digest("split", str(seed), str(row)) & 0xFFFFFFFF) < fraction * 2**32
