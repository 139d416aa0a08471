"""read -> parse -> filter -> account: one pass over a source, and `load_records` on top.

`scan(source, cfg, report)` yields the accepted items (UnpairedRecord, PairedRecord or
RankingItem) of one source in file order and fills `report` as it goes: every raw row
ends accepted or rejected. In strict mode (`data.strict`) the first malformed row raises
`KTODataError` / `KTOLabelError` (`DPODataError` / `DPOLabelError` for paired rows) with
"file:row: field: reason"; the policy filters (length, duplicates, utility) only ever reject.
With `kind="unpaired"` and `data.convert_pairwise_to_binary: false`, pair rows are policy
rejections too (code `pair_not_converted`), so accepted + rejected == rows_read still holds.

`load_records(cfg, kind=...)` reads the training source (and the validation source when
given), converts everything to `kind`, re-orients Factual-DPO pairs, splits off
validation, balances, and returns `LoadedData` with the report. A training source whose
every row is rejected is an error that names the count and the most common reasons.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from prospect.data.balance import balance_unpaired, effective_strategy, weights_dict
from prospect.data.convert import (
    ViewCounter,
    pair_unpaired,
    ranking_to_pairs,
    ranking_to_unpaired,
    reorient_factual_pairs,
    unpair_pair,
)
from prospect.data.formats import FAMILIES, Item, RankingItem
from prospect.data.readers import open_source
from prospect.data.records import PairedRecord, UnpairedRecord
from prospect.data.report import DataReport, one_line
from prospect.data.scan import PAIR_NOT_CONVERTED, Kind, filter_settings, row_limit, scan, strict_error
from prospect.data.split import split_records
from prospect.errors import DPODataError, KTODataError, KTOLabelError

log = logging.getLogger("prospect.data")


def count_views(
    items: Iterator[Item], cfg: Any, report: DataReport, seed: int, on_disk: bool = False
) -> Iterator[Item]:
    """Pass items through while filling report.labels, .pairs, .conversions and .suggested_weights."""
    views = ViewCounter(cfg, seed, on_disk)
    try:
        for item in items:
            views.add(item)
            yield item
    finally:
        result = views.result()
        report.labels = result["labels"]
        report.pairs = result["pairs"]
        report.conversions = result["conversions"]
        report.suggested_weights = weights_dict(report.labels["desirable"], report.labels["undesirable"])


def read_items(
    location: str,
    cfg: Any,
    *,
    split: str = "train",
    seed: int = 42,
    report: DataReport | None = None,
    kind: Kind | None = None,
) -> tuple[list[Item], DataReport]:
    """All accepted items of one source, with its report (`kind` as in `scan`)."""
    source = open_source(location, split=split, streaming=cfg.streaming)
    report = report or DataReport(source=source.name)
    on_disk = bool(cfg.streaming)  # bounded memory: duplicate and pairing indexes in SQLite
    items = list(count_views(scan(source, cfg, report, kind=kind, on_disk=on_disk), cfg, report, seed, on_disk=on_disk))
    return items, report


def nothing_accepted_error(report: DataReport, kind: str) -> KTODataError:
    """The error for a training source none of whose rows can be used: count, top reasons, examples."""
    cls = KTODataError if kind == "unpaired" else DPODataError
    if not report.rows_read:
        return cls(f"{report.source}: no rows to train on (the source is empty)")
    return cls(
        one_line(
            f"{report.source}: all {report.rows_read} rows were rejected, none is left to train on: "
            f"{report.reasons_summary()}; `prospect data inspect {report.source}` lists every row"
        )
    )


# ---- conversion to the training kind ---------------------------------------
def to_unpaired(items: list[Item], cfg: Any, seed: int) -> list[UnpairedRecord]:
    """Every item as unpaired rows (pairs and rankings converted, see convert.py)."""
    out: list[UnpairedRecord] = []
    pair_index = 0
    for item in items:
        if isinstance(item, UnpairedRecord):
            out.append(item)
        elif isinstance(item, PairedRecord):
            out += unpair_pair(item, pair_index, cfg.pairwise_sampling_strategy, seed)
            pair_index += 1
        else:
            out += ranking_to_unpaired(item, cfg.ranking_strategy)[0]
    return out


def to_paired(items: list[Item], cfg: Any) -> tuple[list[PairedRecord], list[UnpairedRecord]]:
    """Every item as pairs; returns (pairs in source-row order, unpaired rows left unused)."""
    pairs: list[PairedRecord] = []
    unpaired: list[UnpairedRecord] = []
    for item in items:
        if isinstance(item, PairedRecord):
            pairs.append(item)
        elif isinstance(item, RankingItem):
            pairs += ranking_to_pairs(item, cfg.ranking_strategy)
        else:
            unpaired.append(item)
    made, unused = pair_unpaired(unpaired)
    if made:
        pairs = sorted(pairs + made, key=lambda p: p.source_row or 0)
    return pairs, unused


def label_counts(records: list[UnpairedRecord]) -> dict[str, int]:
    n_d = sum(1 for r in records if r.label)
    return {"desirable": n_d, "undesirable": len(records) - n_d}


@dataclass
class LoadedData:
    """What the engine trains on: records per split, the report and suggested KTO weights."""

    kind: str
    train: list[UnpairedRecord] | list[PairedRecord]
    validation: list[UnpairedRecord] | list[PairedRecord]
    report: DataReport
    suggested_weights: dict[str, float] = field(default_factory=dict)


def convert_items(items: list[Item], kind: str, cfg: Any, seed: int) -> tuple[list[Any], int]:
    """`items` as records of `kind` (see to_unpaired / to_paired); returns (records, unpaired rows left unused)."""
    return _convert(items, kind, cfg, seed)


def _convert(items: list[Item], kind: str, cfg: Any, seed: int) -> tuple[list[Any], int]:
    if kind == "unpaired":
        return to_unpaired(items, cfg, seed), 0
    pairs, unused = to_paired(items, cfg)
    return pairs, len(unused)


def load_records(
    data_config: Any,
    *,
    kind: Kind,
    seed: int = 42,
    method: str = "kto",
    delta_reorient: bool = False,
    both_nonfactual: str = "keep",
) -> LoadedData:
    """Read, convert, split and balance the configured data for training.

    kind="unpaired": rows for KTO (pairs -> 2 rows or 1 by pairwise_sampling_strategy,
    rankings -> rows); kind="paired": pairs for the DPO family (unpaired rows paired per
    prompt, leftovers counted as unused; rankings -> pairs by ranking_strategy).
    method="factual_dpo" with delta_reorient=True swaps pairs with h_w=1, h_l=0, and drops
    pairs with h_w = h_l = 1 when both_nonfactual="drop" (counted in report "both_nonfactual").
    Validation: `validation_file`, else the source's own "validation" split (dataset
    directories), else `validation_split_percentage` of the training records (split.py).
    Balancing (unpaired, training split only) by balance.py; suggested weights are computed
    on the final training split. With data.streaming the reading indexes live on disk, but
    the accepted records are returned as lists (they are what training iterates over). Raises KTOLabelError when either label has fewer than
    `min_samples_per_label` training rows, DPODataError when no pair is usable.
    """
    if kind not in ("unpaired", "paired"):
        raise ValueError(f"kind must be 'unpaired' or 'paired', got {kind!r}")
    cfg = data_config
    if not cfg.train_file:
        raise KTODataError("no training data: set data.train_file")
    train_source = open_source(cfg.train_file, split="train", streaming=cfg.streaming)
    report = DataReport(source=train_source.name)
    on_disk = bool(cfg.streaming)  # bounded memory: duplicate and pairing indexes in SQLite
    items = list(
        count_views(scan(train_source, cfg, report, kind=kind, on_disk=on_disk), cfg, report, seed, on_disk=on_disk)
    )
    if not report.accepted:
        raise nothing_accepted_error(report, kind)
    train, unused = _convert(items, kind, cfg, seed)

    val_location, val_split = cfg.validation_file, "train"
    if not val_location and "validation" in train_source.splits():
        val_location, val_split = cfg.train_file, "validation"
    if val_location:
        val_items, val_report = read_items(val_location, cfg, split=val_split, seed=seed, kind=kind)
        report.validation = val_report
        validation, val_unused = _convert(val_items, kind, cfg, seed)
        split_info: dict[str, Any] = {"source": "validation_file" if cfg.validation_file else "validation split"}
    else:
        train, validation = split_records(train, cfg.validation_split_percentage, seed)
        val_unused = 0
        split_info = {"source": "split", "fraction": cfg.validation_split_percentage, "seed": seed}

    if kind == "paired" and method == "factual_dpo" and delta_reorient:
        n_train, n_val = len(train), len(validation)
        train, swapped = reorient_factual_pairs(train, both_nonfactual)
        validation, val_swapped = reorient_factual_pairs(validation, both_nonfactual)
        report.reoriented = swapped + val_swapped
        report.extra["both_nonfactual"] = {  # method.both_nonfactual: pairs with h_w = h_l = 1
            "setting": both_nonfactual,
            "dropped": {"train": n_train - len(train), "validation": n_val - len(validation)},
        }

    if kind == "unpaired":
        strategy = effective_strategy(cfg)
        train, report.balancing = balance_unpaired(
            train, strategy=strategy, tolerance=cfg.label_imbalance_tolerance, seed=seed
        )
        counts = label_counts(train)
        suggested = weights_dict(counts["desirable"], counts["undesirable"])
        report.records = {
            "train": {"rows": len(train), **counts},
            "validation": {"rows": len(validation), **label_counts(validation)},
        }
        short = [name for name, n in counts.items() if n < cfg.min_samples_per_label]
        if short:
            raise KTOLabelError(
                one_line(
                    f"{train_source.name}: {' and '.join(short)} rows: {', '.join(str(counts[s]) for s in short)} in the training "
                    f"split, fewer than data.min_samples_per_label={cfg.min_samples_per_label} "
                    f"(labels after conversion: {report.labels}; rejected rows: {len(report.rejected)}"
                    + (f": {report.reasons_summary()})" if report.rejected else ")")
                )
            )
    else:
        suggested = {}
        report.records = {
            "train": {"pairs": len(train), "unused_unpaired_rows": unused},
            "validation": {"pairs": len(validation), "unused_unpaired_rows": val_unused},
        }
        if not train:
            raise DPODataError(
                one_line(
                    f"{train_source.name}: no usable pairs (accepted rows: {report.accepted}, rejected: {len(report.rejected)}"
                    + (f": {report.reasons_summary()}" if report.rejected else "")
                    + f", unpaired rows that found no partner: {unused})"
                )
            )
    split_info.update({"train": len(train), "validation": len(validation)})
    report.split = split_info
    if kind == "unpaired":
        report.suggested_weights = suggested
    if report.rejected:
        report.warnings.append(
            f"{len(report.rejected)} of {report.rows_read} rows rejected; training on the accepted rows"
        )
        log.warning(report.summary_line())
    return LoadedData(kind=kind, train=train, validation=validation, report=report, suggested_weights=suggested)


__all__ = [
    "LoadedData",
    "load_records",
    "scan",
    "count_views",
    "read_items",
    "to_unpaired",
    "to_paired",
    "FAMILIES",
    "PAIR_NOT_CONVERTED",  # scan.py's, re-exported
    "filter_settings",
    "row_limit",
    "strict_error",
]
