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

import itertools
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from prospect.data.balance import balance_unpaired, effective_strategy, weights_dict
from prospect.data.convert import (
    ViewCounter,
    pair_unpaired,
    ranking_to_pairs,
    ranking_to_unpaired,
    reorient_factual_pairs,
    unpair_pair,
)
from prospect.data.filters import FILTER_CODES, UTILITY_ALPHA, UTILITY_LAMBDA, RowFilters
from prospect.data.formats import DETECT_ROWS, FAMILIES, FormatResolver, Item, RankingItem, RowParser
from prospect.data.readers import RawRow, Source, open_source, read_rows
from prospect.data.records import PairedRecord, UnpairedRecord
from prospect.data.report import DataReport, one_line
from prospect.data.split import split_records
from prospect.data.text import FieldError, text_chars
from prospect.errors import DPODataError, DPOLabelError, KTODataError, KTOLabelError

Kind = Literal["unpaired", "paired"]
log = logging.getLogger("prospect.data")


def row_limit(cfg: Any) -> int | None:
    """Rows to read at most: max_samples and, with sanity_check, sanity_check_size."""
    limits = [n for n in (cfg.max_samples, cfg.sanity_check_size if cfg.sanity_check else None) if n]
    return min(limits) if limits else None


def strict_error(source: str, raw: RawRow, err: FieldError, family: str | None) -> KTODataError:
    """The exception strict mode raises for a bad row: 'file:row: field: reason'."""
    where = f"{source}:{raw.row}"
    if raw.line is not None and raw.line != raw.row:
        where += f" (line {raw.line})"
    msg = f"{where}: {err.field}: {err.reason}"
    if family == "paired":
        return DPOLabelError(msg) if err.label else DPODataError(msg)
    return KTOLabelError(msg) if err.label else KTODataError(msg)


PAIR_NOT_CONVERTED = (
    "a chosen/rejected pair, not used for unpaired (KTO) training because data.convert_pairwise_to_binary is "
    "false (set it to true to split each pair into a desirable and an undesirable row)"
)


def _record_lengths(report: DataReport, item: Item) -> None:
    report.length("prompt", text_chars(item.prompt))
    if isinstance(item, UnpairedRecord):
        report.length("completion", text_chars(item.completion))
    elif isinstance(item, PairedRecord):
        for name, text in (("chosen", item.chosen), ("rejected", item.rejected)):
            n = text_chars(text)
            report.length(name, n)
            report.length("completion", n)
    else:
        for text in item.responses:
            report.length("completion", text_chars(text))


def filter_settings(cfg: Any) -> dict[str, Any]:
    return {
        "min_prompt_length": cfg.min_prompt_length,
        "max_prompt_chars": cfg.max_prompt_chars,
        "min_response_length": cfg.min_response_length,
        "max_response_chars": cfg.max_response_chars,
        "drop_duplicates": cfg.drop_duplicates,
        "filter_low_utility": cfg.filter_low_utility,
        "utility_range": [cfg.min_utility_threshold, cfg.max_utility_threshold] if cfg.filter_low_utility else None,
        "utility_params": _utility_params(cfg) if cfg.filter_low_utility else None,
    }


def _utility_params(cfg: Any) -> dict[str, float]:
    """The value function's parameters the utility filter used (data.kto_specific)."""
    params = getattr(cfg, "kto_specific", None)
    if params is None:
        return {"alpha": UTILITY_ALPHA, "lambda_param": UTILITY_LAMBDA}
    return {"alpha": params.alpha, "lambda_param": params.lambda_param}


def scan(
    source: Source,
    cfg: Any,
    report: DataReport,
    *,
    on_disk: bool = False,
    strict: bool | None = None,
    kind: Kind | None = None,
) -> Iterator[Item]:
    """Yield accepted items of `source` in file order, accounting for every row in `report`.

    `on_disk`: keep the duplicate index in a temporary SQLite file (bounded memory).
    `kind`: what the rows are read for; "unpaired" with data.convert_pairwise_to_binary false
    rejects pair rows (`pair_not_converted`). None (inspect) keeps every family.
    The report's format, shapes, notes and filters are final once the generator is exhausted.
    """
    strict = cfg.strict if strict is None else strict
    reject_pairs = kind == "unpaired" and not getattr(cfg, "convert_pairwise_to_binary", True)
    parser = RowParser(cfg)
    resolver = FormatResolver(cfg, parser, source.name)
    filters = RowFilters(cfg, on_disk=on_disk)
    report.reader = source.reader
    report.streaming = on_disk
    families_seen: set[str] = set()
    limit = row_limit(cfg)
    rows: Iterator[RawRow] = iter(read_rows(source))
    try:
        head = list(itertools.islice(rows, DETECT_ROWS))
        resolver.observe([(r.row, r.data) for r in head if r.data is not None][:DETECT_ROWS])
        for raw in itertools.chain(head, rows):
            if limit is not None and report.rows_read >= limit:
                report.stopped_at_max_samples = True
                break
            report.rows_read += 1
            family: str | None = resolver.file_family
            try:
                if raw.error is not None:
                    raise FieldError(*raw.error)
                assert raw.data is not None
                family = resolver.family(raw.data)
                item, shape = parser.parse(raw.data, raw.row, family, raw.stringly)
            except FieldError as err:
                if strict:
                    raise strict_error(source.name, raw, err, family) from None
                report.reject(raw.row, err.field, err.code, err.reason, line=raw.line, file=raw.file)
                continue
            if reject_pairs and isinstance(item, PairedRecord):
                report.reject(raw.row, "row", "pair_not_converted", PAIR_NOT_CONVERTED, line=raw.line, file=raw.file)
                continue
            try:
                filters.check(item)
            except FieldError as err:
                report.reject(raw.row, err.field, err.code, err.reason, line=raw.line, file=raw.file)
                continue
            report.accepted += 1
            report.shapes[shape] = report.shapes.get(shape, 0) + 1
            families_seen.add(family)
            _record_lengths(report, item)
            yield item
    finally:
        filters.close()
        report.reader = source.reader  # a .json file may have been read as JSON lines
        report.notes.update(parser.notes)
        if len(families_seen) == 1:
            report.format = families_seen.pop()
        elif families_seen:
            report.format = "mixed"
        elif resolver.file_family:
            report.format = resolver.file_family
        by_reason = report.rejected_by_reason
        report.filters = {"settings": filter_settings(cfg), "rejected": {c: by_reason.get(c, 0) for c in FILTER_CODES}}


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


__all__ = ["LoadedData", "load_records", "scan", "count_views", "read_items", "to_unpaired", "to_paired", "FAMILIES"]
