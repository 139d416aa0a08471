"""`prospect data inspect`: JSON keys, rich rendering, length plot, streaming mode, CLI flags and errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import get_args

import pytest
from rich.console import Console

from prospect.cli import main
from prospect.config.schema import KTODataConfig
from prospect.data import inspect_file, plot_lengths, render_report
from prospect.errors import KTODataError

FIXTURES = Path(__file__).parent / "fixtures" / "data"


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text(
        "".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n" for r in rows), encoding="utf-8"
    )
    return path


def test_report_keys_and_numbers(tmp_path):
    rows = [{"prompt": "abc", "completion": "x" * n, "label": n % 2 == 0} for n in (1, 2, 3, 4)] + ["nope"]
    rep = inspect_file(write_jsonl(tmp_path / "d.jsonl", rows))
    for key in (
        "format",
        "rows_read",
        "accepted",
        "rejected",
        "labels",
        "pairs",
        "suggested_weights",
        "lengths",
        "conversions",
        "filters",
    ):
        assert key in rep
    assert rep["format"] == "unpaired" and rep["rows_read"] == 5 and rep["accepted"] == 4
    assert rep["rejected"] == [
        {"row": 5, "field": "row", "code": "invalid_json", "reason": "row: invalid JSON: Expecting value (column 1)"}
    ]
    assert rep["labels"] == {"desirable": 2, "undesirable": 2} and rep["pairs"] == 2  # one prompt: zip 2 with 2
    comp = rep["lengths"]["completion"]
    # lengths 1, 2, 3, 4: median 2.5, mean 2.5, p90 by linear interpolation = 1 + 0.9 * 3 = 3.7
    assert (comp["count"], comp["min"], comp["max"], comp["mean"], comp["p50"]) == (4, 1, 4, 2.5, 2.5)
    assert abs(comp["p90"] - 3.7) < 1e-9 and sum(comp["histogram"]["counts"]) == 4
    assert rep["lengths"]["prompt"]["mean"] == 3
    json.dumps(rep)


def test_suggested_weights_seed002_numbers(tmp_path):
    rows = [{"prompt": f"q{i}", "completion": "a", "label": i < 746} for i in range(1000)]
    rep = inspect_file(write_jsonl(tmp_path / "d.jsonl", rows))
    assert rep["labels"] == {"desirable": 746, "undesirable": 254}
    assert rep["suggested_weights"] == {"desirable_weight": 1.0, "undesirable_weight": 2.937}  # 746/254


def test_render_and_plot(tmp_path):
    rep = inspect_file(FIXTURES / "seed001_examples.jsonl")
    console = Console(record=True, width=140)
    render_report(rep, console)
    text = console.export_text()
    assert "Rows" in text and "Labels and pairs" in text and "Lengths (characters)" in text
    assert "exact duplicate of row 2" in text and "pairs_to_unpaired" in text
    png = tmp_path / "plots" / "lengths.png"
    plot_lengths(rep, png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_streaming_mode_gives_the_same_report(tmp_path):
    rows = [{"prompt": f"q{i % 5}", "completion": f"a{i % 40}", "label": i % 3 == 0} for i in range(120)] + ["{"]
    p = write_jsonl(tmp_path / "d.jsonl", rows)
    a = inspect_file(p)
    b = inspect_file(p, KTODataConfig(streaming=True))
    assert b["streaming"] is True
    for key in ("rows_read", "accepted", "rejected", "labels", "pairs", "suggested_weights", "conversions"):
        assert a[key] == b[key], key
    # rows i, i+40, i+80 share prompt and completion; 40 = 1 (mod 3) so exactly one of them has
    # i % 3 == 0 (desirable) and the other two are identical undesirable rows: 40 duplicates
    assert a["accepted"] == 80 and a["rejected_by_reason"] == {"duplicate": 40, "invalid_json": 1}


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    rc = main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


def test_cli_streaming_flag_reads_with_bounded_memory(tmp_path, capsys):
    rows = [{"prompt": f"q{i % 5}", "completion": f"a{i % 7}", "label": i % 2 == 0} for i in range(30)] + ["{"]
    p = write_jsonl(tmp_path / "d.jsonl", rows)
    rc, out, _ = run_cli(["data", "inspect", str(p), "--json"], capsys)
    plain = json.loads(out)
    rc2, out2, _ = run_cli(["data", "inspect", str(p), "--json", "--streaming"], capsys)
    streamed = json.loads(out2)
    assert rc == rc2 == 0 and plain["streaming"] is False and streamed["streaming"] is True
    for key in ("rows_read", "accepted", "rejected", "labels", "pairs", "suggested_weights"):
        assert plain[key] == streamed[key], key


def test_cli_unknown_format_is_one_line_listing_the_valid_formats(tmp_path, capsys):
    p = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "q", "completion": "a", "label": True}])
    rc, out, err = run_cli(["data", "inspect", str(p), "--format", "foo"], capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc == 1 and out == "" and len(lines) == 1
    valid = get_args(KTODataConfig.model_fields["format"].annotation)
    assert lines[0] == f"prospect: error: unknown data format 'foo'; valid formats: {', '.join(valid)}"
    # any other invalid override is one line too
    with pytest.raises(KTODataError) as e:
        inspect_file(p, streaming="sometimes")
    assert len(str(e.value).splitlines()) == 1 and str(e.value).startswith("invalid data setting: streaming: ")


def test_cli_config_reads_the_file_for_the_runs_method(tmp_path, capsys):
    p = write_jsonl(
        tmp_path / "mix.jsonl",
        [{"prompt": "P1", "completion": "d1", "label": True}, {"prompt": "P2", "chosen": "c2", "rejected": "r2"}],
    )
    cfg = tmp_path / "run.yaml"
    cfg.write_text("method: kto\ndata:\n  convert_pairwise_to_binary: false\n", encoding="utf-8")
    rc, out, _ = run_cli(["data", "inspect", str(p), "--json", "--config", str(cfg)], capsys)
    rep = json.loads(out)
    assert rc == 0 and rep["rejected_by_reason"] == {"pair_not_converted": 1} and rep["accepted"] == 1
    cfg.write_text("method: dpo\ndata:\n  convert_pairwise_to_binary: false\n", encoding="utf-8")
    rc, out, _ = run_cli(["data", "inspect", str(p), "--json", "--config", str(cfg), "--strict"], capsys)
    assert rc == 0 and json.loads(out)["rejected"] == []


# ---- issue 18, point 10: exit 1 when nothing is accepted; --records N -----------------------
def test_cli_exits_1_when_every_row_is_rejected(tmp_path, capsys):
    p = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "q", "completion": "a", "label": "meh"}, "nope"])
    rc, out, err = run_cli(["data", "inspect", str(p), "--json"], capsys)
    rep = json.loads(out)  # the report is still printed
    assert rc == 1 and rep["accepted"] == 0 and rep["rows_read"] == 2
    assert err.strip() == (
        f"prospect: error: {p}: all 2 rows were rejected (1 invalid_json, 1 unknown_label); nothing is left to train on"
    )
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n", encoding="utf-8")
    rc, _, err = run_cli(["data", "inspect", str(empty)], capsys)
    assert rc == 1 and "no rows (the source is empty)" in err
    good = write_jsonl(
        tmp_path / "good.jsonl",
        [{"prompt": "q", "completion": "a", "label": "meh"}, {"prompt": "q", "completion": "b", "label": 1}],
    )
    assert run_cli(["data", "inspect", str(good)], capsys)[0] == 0


def test_cli_records_shows_the_first_records_after_conversion(tmp_path, capsys):
    rows = [
        {"prompt": "P1", "chosen": "c1", "rejected": "r1"},
        {
            "prompt": [{"role": "user", "content": "P2"}],
            "completion": [{"role": "assistant", "content": "d2"}],
            "label": 1,
        },
        {"prompt": "P3", "chosen": "c3", "rejected": "r3"},
    ]
    p = write_jsonl(tmp_path / "mix.jsonl", rows)
    cfg = tmp_path / "run.yaml"
    cfg.write_text("method: kto\n", encoding="utf-8")
    rc, out, _ = run_cli(["data", "inspect", str(p), "--json", "--config", str(cfg), "--records", "3"], capsys)
    recs = json.loads(out)["records"]
    # KTO, pairwise_sampling_strategy all: pair 1 -> (c1, True), (r1, False); then row 2; every text as messages
    # because row 2 is conversational (TRL: one format per dataset)
    assert rc == 0 and [(r["completion"], r["label"], r["origin"], r["source_row"]) for r in recs] == [
        ([{"role": "assistant", "content": "c1"}], True, "pair:chosen", 1),
        ([{"role": "assistant", "content": "r1"}], False, "pair:rejected", 1),
        ([{"role": "assistant", "content": "d2"}], True, "unpaired", 2),
    ]
    assert recs[0]["prompt"] == [{"role": "user", "content": "P1"}]
    cfg.write_text("method: dpo\n", encoding="utf-8")
    rc, out, _ = run_cli(["data", "inspect", str(p), "--config", str(cfg), "--records", "1"], capsys)
    assert rc == 0 and "First 1 records as training sees them (for dpo)" in out and '"chosen": "c1"' in out
    rc, out, _ = run_cli(["data", "inspect", str(p), "--json"], capsys)
    assert "records" not in json.loads(out)  # only on request
