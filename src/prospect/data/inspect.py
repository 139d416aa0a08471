"""`prospect data inspect FILE`: the report of one file, for people (rich) or machines (JSON).

`inspect_file` reads the file once, through the same reader, parser and filters as
training, and returns `DataReport.to_dict()` (keys in report.py). Nothing is kept per row
but the rejected list; with `data.streaming: true` the duplicate and pairing indexes live
in a temporary SQLite file, so memory does not grow with the file.

`records=N` (`--records N`) adds the first N canonical records under `"records"`, as
training sees them: converted for the run's kind (pairs -> unpaired rows for KTO, unpaired
rows paired per prompt and rankings -> pairs for the DPO family; for no particular method,
rankings become pairs and the rest is kept as read), with every text a message list when any
shown record is conversational. It keeps the accepted items in memory (pairing unpaired rows
needs the whole file).
"""

from __future__ import annotations

import os
from typing import Any, get_args

from pydantic import ValidationError

from prospect.data.convert import ranking_to_pairs
from prospect.data.formats import RankingItem
from prospect.data.loader import is_conversational, record_row
from prospect.data.pipeline import convert_items, count_views, scan
from prospect.data.readers import open_source
from prospect.data.report import DataReport, one_line
from prospect.errors import KTODataError
from prospect.io import atomic_path

MAX_REJECTED_SHOWN = 20


def data_formats() -> tuple[str, ...]:
    """The values data.format accepts (from the schema, so the list cannot drift)."""
    from prospect.config.schema import KTODataConfig

    return tuple(get_args(KTODataConfig.model_fields["format"].annotation))


def _one_line_errors(exc: ValidationError) -> str:
    """A pydantic error as "field: message, got value; ..." on one line (the CLI prints one line)."""
    parts = []
    for err in exc.errors():
        where = ".".join(str(x) for x in err["loc"]) or "data"
        text = f"{where}: {err['msg']}"
        if not isinstance(err.get("input"), (dict, list)):
            text += f", got {err.get('input')!r}"
        parts.append(text)
    return one_line("; ".join(parts))


def _config(data_config: Any, fmt: str | None, strict: bool | None, streaming: bool | None) -> Any:
    from prospect.config.schema import KTODataConfig

    cfg = data_config if data_config is not None else KTODataConfig()
    updates: dict[str, Any] = {}
    if fmt is not None:
        valid = data_formats()
        if fmt not in valid:
            raise KTODataError(f"unknown data format {one_line(str(fmt))!r}; valid formats: {', '.join(valid)}")
        updates["format"] = fmt
    if strict is not None:
        updates["strict"] = strict
    if streaming is not None:
        updates["streaming"] = streaming
    if not updates:
        return cfg
    try:  # validate (model_copy(update=...) would not)
        return type(cfg).model_validate({**cfg.model_dump(), **updates})
    except ValidationError as e:
        raise KTODataError(f"invalid data setting: {_one_line_errors(e)}") from None


def inspect_file(
    path: str | os.PathLike[str],
    data_config: Any = None,
    fmt: str | None = None,
    *,
    strict: bool | None = None,
    streaming: bool | None = None,
    seed: int = 42,
    kind: str | None = None,
    records: int = 0,
) -> dict[str, Any]:
    """Read `path` and return its report dict (format, rows_read, accepted, rejected, labels,
    pairs, suggested_weights, lengths, conversions, filters, ...).

    `fmt` overrides data.format (an unknown one is a one-line KTODataError listing the valid
    formats); `strict`/`streaming` override data.strict/data.streaming.
    Raises KTODataError for an unreadable file, an undecidable format, or (strict) a bad row.
    `kind` ("unpaired"/"paired", e.g. from a run config's method) reads the file as training
    would; None reads it for no particular method, so pair rows are kept even with
    data.convert_pairwise_to_binary: false (they then count in `pairs`, not in `labels`).
    `records` > 0 adds the first `records` canonical records under "records" (module doc).
    """
    if kind not in (None, "unpaired", "paired"):
        raise ValueError(f"kind must be None, 'unpaired' or 'paired', got {kind!r}")
    cfg = _config(data_config, fmt, strict, streaming)
    source = open_source(path, split="train", streaming=cfg.streaming)
    report = DataReport(source=source.name)
    on_disk = bool(cfg.streaming)
    kept: list[Any] = []
    for item in count_views(
        scan(source, cfg, report, on_disk=on_disk, kind=kind),  # type: ignore[arg-type]
        cfg,
        report,
        seed,
        on_disk=on_disk,
    ):
        if records > 0:
            kept.append(item)
    out = report.to_dict()
    if records > 0:
        out["records"] = first_records(kept, cfg, kind, seed, records)
    return out


def first_records(items: list[Any], cfg: Any, kind: str | None, seed: int, n: int) -> list[dict[str, Any]]:
    """The first `n` canonical records made from `items`, as dataset rows (module doc)."""
    if kind is None:
        converted: list[Any] = []
        for item in items:
            converted += [item] if not isinstance(item, RankingItem) else ranking_to_pairs(item, cfg.ranking_strategy)
            if len(converted) >= n:
                break
    else:
        converted = convert_items(items, kind, cfg, seed)[0]
    shown = converted[:n]
    conversational = is_conversational(shown)
    rows = [record_row(r, conversational) for r in shown]
    for row, r in zip(rows, shown):  # what the chat template gets besides the texts
        if getattr(r, "tools", None):
            row["tools"] = r.tools
    return rows


def _as_dict(report: DataReport | dict[str, Any]) -> dict[str, Any]:
    return report.to_dict() if isinstance(report, DataReport) else report


def render_report(report: DataReport | dict[str, Any], console: Any) -> None:
    """Print the report as rich tables on `console` (a rich.console.Console)."""
    from rich.table import Table

    r = _as_dict(report)
    shapes = ", ".join(f"{k} ({v})" for k, v in r.get("shapes", {}).items()) or "-"
    console.print(
        f"[bold]{r['source']}[/bold]  reader: {r.get('reader', '?')}  format: [bold]{r['format']}[/bold]  shapes: {shapes}"
    )

    rows = Table(title="Rows", show_header=True)
    for col in ("read", "accepted", "rejected"):
        rows.add_column(col, justify="right")
    rows.add_row(str(r["rows_read"]), str(r["accepted"]), str(len(r["rejected"])))
    console.print(rows)

    labels = Table(title="Labels and pairs (after conversion)")
    for col in ("desirable", "undesirable", "pairs", "desirable_weight", "undesirable_weight"):
        labels.add_column(col, justify="right")
    w = r["suggested_weights"]
    labels.add_row(
        str(r["labels"]["desirable"]),
        str(r["labels"]["undesirable"]),
        str(r["pairs"]),
        f"{w.get('desirable_weight', 1.0):g}",
        f"{w.get('undesirable_weight', 1.0):g}",
    )
    console.print(labels)

    if r.get("lengths"):
        lengths = Table(title="Lengths (characters)")
        for col in ("field", "count", "min", "p50", "p90", "p99", "max", "mean"):
            lengths.add_column(col, justify="right" if col != "field" else "left")
        for name, s in r["lengths"].items():
            if s.get("count"):
                lengths.add_row(name, *(f"{s[k]:g}" for k in ("count", "min", "p50", "p90", "p99", "max", "mean")))
        console.print(lengths)

    conv = Table(title="Conversions")
    conv.add_column("conversion")
    conv.add_column("counts")
    for name, info in r.get("conversions", {}).items():
        counts = {k: v for k, v in info.items() if isinstance(v, int) and not isinstance(v, bool)}
        if any(counts.values()):
            conv.add_row(name, ", ".join(f"{k} {v}" for k, v in counts.items()))
    if r.get("reoriented"):
        conv.add_row("factual re-orientation", f"swapped {r['reoriented']}")
    if conv.row_count:
        console.print(conv)

    if r["rejected"]:
        reasons = Table(title="Rejected rows by reason")
        reasons.add_column("reason")
        reasons.add_column("rows", justify="right")
        for code, n in r.get("rejected_by_reason", {}).items():
            reasons.add_row(code, str(n))
        console.print(reasons)
        shown = Table(
            title=f"Rejected rows (first {min(MAX_REJECTED_SHOWN, len(r['rejected']))} of {len(r['rejected'])})"
        )
        shown.add_column("row", justify="right")
        shown.add_column("reason", overflow="fold")
        for entry in r["rejected"][:MAX_REJECTED_SHOWN]:
            where = str(entry["row"]) + (f" (line {entry['line']})" if "line" in entry else "")
            where = (f"{entry['file']}:" if "file" in entry else "") + where
            shown.add_row(where, entry["reason"])
        console.print(shown)
    for key, n in r.get("notes", {}).items():
        console.print(f"note: {key}: {n}")
    for text in r.get("warnings", []):
        console.print(f"[yellow]warning:[/yellow] {text}")


def render_records(records: list[dict[str, Any]], console: Any, method: str | None = None) -> None:
    """Print canonical records (from `inspect_file(..., records=N)`) one JSON object each, turns visible."""
    import json

    whom = f"for {method}" if method else "for no particular method (--config sets one)"
    console.print(f"[bold]First {len(records)} records as training sees them ({whom})[/bold]")
    for i, rec in enumerate(records, 1):
        shown = {k: v for k, v in rec.items() if v is not None}
        console.print(f"record {i}:", json.dumps(shown, ensure_ascii=False, indent=2), markup=False, highlight=False)


def plot_lengths(report: DataReport | dict[str, Any], path: str | os.PathLike[str]) -> None:
    """Write a PNG with one character-length histogram per field (prompt, completion, ...)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    r = _as_dict(report)
    fields = [(name, s) for name, s in r.get("lengths", {}).items() if s.get("count")]
    fig = Figure(figsize=(6, 2.6 * max(1, len(fields))))
    FigureCanvasAgg(fig)
    if not fields:
        ax = fig.add_subplot(1, 1, 1)
        ax.text(0.5, 0.5, "no accepted rows", ha="center", va="center")
        ax.set_axis_off()
    for i, (name, s) in enumerate(fields, 1):
        ax = fig.add_subplot(len(fields), 1, i)
        hist = s["histogram"]
        edges, counts = hist["edges"], hist["counts"]
        widths = [b - a for a, b in zip(edges, edges[1:])]
        ax.bar(edges[:-1], counts, width=widths, align="edge", color="#4c72b0", edgecolor="white")
        ax.set_title(f"{name}: {s['count']} texts, median {s['p50']:g} chars")
        ax.set_xlabel("characters")
        ax.set_ylabel("texts")
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    fig.suptitle(os.path.basename(str(r.get("source", ""))))
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
