"""`prospect data inspect FILE`: one file's data report, for people (rich) or machines (JSON)."""

from __future__ import annotations

import json
from typing import Any

from prospect.config.loader import load_config
from prospect.config.methods import METHODS
from prospect.data.inspect import inspect_file, plot_lengths, render_records, render_report


def inspect_data(
    file: str,
    *,
    config_path: str | None = None,
    fmt: str | None = None,
    strict: bool = False,
    streaming: bool = False,
    as_json: bool = False,
    plot: str | None = None,
    records: int = 0,
) -> dict[str, Any]:
    """Read `file` as training would (with the run config's data settings if given), print the report, return it.

    Flags only ever switch a setting on; without them the config's (or the default) value stands.
    `records` > 0 prints (and puts under "records") the first canonical records as training sees them.
    """
    data_cfg, kind, run = None, None, None
    if config_path:
        run = load_config(config_path, [])
        data_cfg, kind = run.data, METHODS[run.method.name].kind
    report = inspect_file(
        file,
        data_config=data_cfg,
        fmt=fmt,
        strict=True if strict else None,
        streaming=True if streaming else None,
        kind=kind,
        records=records,
    )
    if plot:
        plot_lengths(report, plot)
    if as_json:
        print(json.dumps(report, ensure_ascii=False, indent=2, default=str))
    else:
        from rich.console import Console

        console = Console()
        render_report(report, console)
        if records > 0:
            render_records(report.get("records", []), console, run.method.name if config_path else None)
    return report
