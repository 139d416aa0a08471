"""One pass over a source: read -> rename third-party layouts -> parse -> filter -> account.

`scan(source, cfg, report)` yields the accepted items (UnpairedRecord, PairedRecord or
RankingItem) of one source in file order and fills `report` as it goes: every raw row
ends accepted or rejected (see pipeline.py for the strict-mode and policy rules).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any, Literal

from prospect.data.filters import FILTER_CODES, UTILITY_ALPHA, UTILITY_LAMBDA, RowFilters
from prospect.data.formats import DETECT_ROWS, FormatResolver, Item, RowParser
from prospect.data.layouts import Skip, normalize
from prospect.data.readers import RawRow, Source, read_rows
from prospect.data.records import PairedRecord, UnpairedRecord
from prospect.data.registry import row_adapter
from prospect.data.report import DataReport
from prospect.data.text import FieldError, text_chars
from prospect.errors import DPODataError, DPOLabelError, KTODataError, KTOLabelError

Kind = Literal["unpaired", "paired"]


def row_limit(cfg: Any) -> int | None:
    """Rows to read at most: max_samples and, with sanity_check, sanity_check_size."""
    limits = [n for n in (cfg.max_samples, cfg.sanity_check_size if cfg.sanity_check else None) if n]
    return min(limits) if limits else None


def strict_error(source: str, raw: RawRow, err: FieldError, family: str | None) -> KTODataError:
    """The exception strict mode raises for a bad row: 'file:row: field: reason'."""
    row = raw.file_row or raw.row
    where = f"{source}: {raw.file}:{row}" if raw.file else f"{source}:{row}"
    if raw.line is not None and raw.line != row:
        where += f" (line {raw.line})"
    msg = f"{where}: {err.field}: {err.reason}"
    if family == "paired":
        return DPOLabelError(msg) if err.label else DPODataError(msg)
    return KTOLabelError(msg) if err.label else KTODataError(msg)


def _reject(report: DataReport, raw: RawRow, field_name: str, code: str, reason: str) -> None:
    """Account for a rejected row; in a multi-file source its row within its file (and the running one)."""
    entry = report.reject(raw.file_row or raw.row, field_name, code, reason, line=raw.line, file=raw.file)
    if raw.file_row is not None and raw.file_row != raw.row:
        entry["source_row"] = raw.row


def _normalized(rows: Iterator[RawRow], notes: dict[str, int]) -> Iterator[RawRow]:
    """Rows of third-party layouts renamed (layouts.normalize); a row that cannot be becomes a row error."""
    for raw in rows:
        if raw.data is not None:
            try:
                raw.data, raw.shape = normalize(raw.data, notes)
            except FieldError as err:
                raw.data, raw.error, raw.policy = None, (err.field, err.code, err.reason), isinstance(err, Skip)
        yield raw


def _adapted(raw: RawRow, adapt: Any) -> RawRow:
    if raw.data is not None:
        raw.data = adapt(raw.data)
    return raw


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
    filters = RowFilters(cfg, on_disk=on_disk, locate=source.locate)
    report.reader = source.reader
    report.streaming = on_disk
    families_seen: set[str] = set()
    limit = row_limit(cfg)
    rows: Iterator[RawRow] = iter(read_rows(source))
    adapt = row_adapter(cfg)  # data.dataset_info: LLaMA-Factory's column and role names -> ours
    if adapt is not None:
        rows = (_adapted(raw, adapt) for raw in rows)
    rows = _normalized(rows, parser.notes)  # AlpacaEval, Nectar, ... -> the usual columns (layouts.py)
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
                if strict and not raw.policy:
                    raise strict_error(source.name, raw, err, family) from None
                _reject(report, raw, err.field, err.code, err.reason)
                continue
            if reject_pairs and isinstance(item, PairedRecord):
                _reject(report, raw, "row", "pair_not_converted", PAIR_NOT_CONVERTED)
                continue
            try:
                filters.check(item)
            except FieldError as err:
                _reject(report, raw, err.field, err.code, err.reason)
                continue
            report.accepted += 1
            shape = raw.shape or shape
            report.shapes[shape] = report.shapes.get(shape, 0) + 1
            families_seen.add(family)
            _record_lengths(report, item)
            yield item
    finally:
        filters.close()
        report.reader = source.reader  # a .json file may have been read as JSON lines
        report.warnings += parser.warning_lines()  # (adds their counts to parser.notes)
        report.notes.update(parser.notes)
        if len(families_seen) == 1:
            report.format = families_seen.pop()
        elif families_seen:
            report.format = "mixed"
        elif resolver.file_family:
            report.format = resolver.file_family
        by_reason = report.rejected_by_reason
        report.filters = {"settings": filter_settings(cfg), "rejected": {c: by_reason.get(c, 0) for c in FILTER_CODES}}
