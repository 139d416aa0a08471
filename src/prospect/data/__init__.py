"""prospect.data: any preference data in, canonical records and an account of every row out.

    from prospect.data import load_records, inspect_file
    loaded = load_records(run.data, kind="unpaired", seed=42)   # -> LoadedData
    report = inspect_file("feedback.jsonl")                      # -> dict (data_report.json)

Modules: readers, readers_files (files/directories/hub -> raw rows), registry (LLaMA-Factory's
dataset_info.json), layouts (AlpacaEval, Nectar, ... -> the usual columns), formats,
formats_base, formats_detect (detect + parse rows), transcripts (HH turns, implicit prompts),
tools (tool calls), row_checks (warnings), labels (label words incl. Arabic), filters,
convert (pairs <-> unpaired <-> rankings), balance (KTO weights, resampling), split, report,
scan (one pass over a source), pipeline (load_records), usage (rows used before training),
inspect (`prospect data inspect`), loader (seed 001's KTODataLoader / DPODataLoader; imports
`datasets`, so it is loaded lazily).
"""

from __future__ import annotations

from typing import Any

from prospect.data.balance import auto_kto_weights, balance_unpaired
from prospect.data.convert import (
    pair_unpaired,
    ranking_to_pairs,
    ranking_to_unpaired,
    reorient_factual_pairs,
    unpair_pair,
)
from prospect.data.formats import RankingItem
from prospect.data.inspect import inspect_file, plot_lengths, render_report
from prospect.data.labels import normalize_label
from prospect.data.pipeline import LoadedData, load_records
from prospect.data.readers import open_source
from prospect.data.records import PairedRecord, UnpairedRecord
from prospect.data.report import DataReport


def __getattr__(name: str) -> Any:  # datasets is imported only when the loaders are used
    if name in ("KTODataLoader", "DPODataLoader", "records_to_dataset"):
        from prospect.data import loader

        return getattr(loader, name)
    raise AttributeError(name)


__all__ = [
    "load_records",
    "LoadedData",
    "DataReport",
    "inspect_file",
    "render_report",
    "plot_lengths",
    "auto_kto_weights",
    "balance_unpaired",
    "normalize_label",
    "open_source",
    "UnpairedRecord",
    "PairedRecord",
    "RankingItem",
    "unpair_pair",
    "pair_unpaired",
    "ranking_to_pairs",
    "ranking_to_unpaired",
    "reorient_factual_pairs",
    "KTODataLoader",
    "DPODataLoader",
    "records_to_dataset",
]
