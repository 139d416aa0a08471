"""Readers: every input kind, row numbering, and robustness to messy bytes."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import pytest

from prospect.data import inspect_file
from prospect.data.readers import open_source
from prospect.errors import KTODataError

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROWS = [
    {"prompt": "What is 2+2?", "completion": "4", "label": True},
    {"prompt": "What is 2+2?", "completion": "5", "label": False},
    {"prompt": "Capital of France?", "completion": "Paris", "label": "good"},
]


def write_jsonl(path: Path, rows: list, newline: str = "\n") -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + newline for r in rows), encoding="utf-8", newline="")
    return path


def raw_rows(path) -> list:
    return list(open_source(path).rows())


def test_jsonl_bom_crlf_blank_lines_numbering(tmp_path):
    body = (
        "\ufeff"
        + json.dumps(ROWS[0])
        + "\r\n\r\n   \r\n"
        + json.dumps(ROWS[1])
        + "\r\n{broken\r\n"
        + json.dumps(ROWS[2])
    )
    p = tmp_path / "messy.jsonl"
    p.write_bytes(body.encode("utf-8"))
    rows = raw_rows(p)
    # blank lines are not rows; rows count non-blank lines, `line` is the physical line
    assert [(r.row, r.line) for r in rows] == [(1, 1), (2, 4), (3, 5), (4, 6)]
    assert rows[0].data == ROWS[0]
    assert rows[2].data is None and rows[2].error[1] == "invalid_json"
    rep = inspect_file(p)
    assert rep["rows_read"] == 4 and rep["accepted"] == 3
    assert rep["rejected"] == [
        {
            "row": 3,
            "field": "row",
            "code": "invalid_json",
            "line": 5,
            "reason": "row: invalid JSON: Expecting property name enclosed in double quotes (column 2)",
        }
    ]


def test_jsonl_rtl_emoji_long_rows_invalid_utf8(tmp_path):
    long_text = "نص طويل 😀 " * 50_000  # ~550k characters in one row
    rows = [
        {"prompt": "\u200fما هي عاصمة فرنسا؟\u200f", "completion": "باريس 🇫🇷", "label": "\u200fجيد"},
        {"prompt": "long", "completion": long_text, "label": 1},
    ]
    p = write_jsonl(tmp_path / "a.jsonl", rows)
    with open(p, "ab") as fh:
        fh.write(b'{"prompt": "x", "completion": "\xff\xfe", "label": 1}\n')
        fh.write(b'"just a string"\n42\nnull\n[1, 2]\n')
    rep = inspect_file(p)
    assert rep["rows_read"] == 7 and rep["accepted"] == 2
    codes = [r["code"] for r in rep["rejected"]]
    assert codes == ["invalid_utf8", "not_an_object", "not_an_object", "not_an_object", "not_an_object"]
    assert rep["lengths"]["completion"]["max"] == len(long_text)
    # the RTL marks stay in the text (only label words are cleaned)
    rec = raw_rows(p)[0].data
    assert rec["prompt"].startswith("\u200f")


def test_json_array_and_columns_and_single_object(tmp_path):
    arr = tmp_path / "arr.json"
    arr.write_text(json.dumps(ROWS + ["not an object"]), encoding="utf-8")
    rep = inspect_file(arr)
    assert (rep["rows_read"], rep["accepted"], rep["reader"]) == (4, 3, "json")
    assert rep["rejected"][0]["row"] == 4 and rep["rejected"][0]["code"] == "not_an_object"

    cols = tmp_path / "cols.json"
    cols.write_text(json.dumps({k: [r[k] for r in ROWS] for k in ROWS[0]}), encoding="utf-8")
    assert inspect_file(cols)["accepted"] == 3

    one = tmp_path / "one.json"
    one.write_text(json.dumps(ROWS[0]), encoding="utf-8")
    assert inspect_file(one)["accepted"] == 1


def test_json_file_holding_json_lines_is_read_as_lines(tmp_path):
    p = write_jsonl(tmp_path / "lines.json", ROWS)
    rep = inspect_file(p)
    assert rep["accepted"] == 3 and rep["reader"] == "json (read as JSON lines)"


def test_csv_and_tsv(tmp_path):
    p = tmp_path / "d.csv"
    messages = json.dumps([{"role": "user", "content": "hi, there"}])
    p.write_text(
        "\ufeffprompt,completion,label,system\r\n"
        '"What is 2+2?","4, obviously",true,\r\n'
        '"multi\nline prompt",5,0,be terse\r\n'
        f'"{messages.replace(chr(34), chr(34) * 2)}",hello,1,\r\n'
        ",,,\r\n"  # blank record: not a row
        "too,many,fields,x,y\r\n"
        "no label,text,,\r\n",
        encoding="utf-8",
    )
    rep = inspect_file(p)
    assert rep["rows_read"] == 5 and rep["accepted"] == 3
    assert [(r["row"], r["code"]) for r in rep["rejected"]] == [(4, "invalid_csv"), (5, "null_label")]
    rows = [r.data for r in raw_rows(p)]
    assert rows[0]["system"] is None and rows[1]["prompt"] == "multi\nline prompt"
    # a JSON message list in a CSV cell becomes a conversational prompt
    assert rep["shapes"] == {"unpaired": 2, "unpaired:conversational": 1}

    t = tmp_path / "d.tsv"
    t.write_text("prompt\tresponse\tlabel\nq\ta\tgood\n", encoding="utf-8")
    assert inspect_file(t)["accepted"] == 1


def test_parquet_and_gzip(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    p = tmp_path / "d.parquet"
    pq.write_table(pa.Table.from_pylist(ROWS[:2] + [{"prompt": "q", "completion": "a", "label": None}]), p)
    rep = inspect_file(p)
    assert (rep["rows_read"], rep["accepted"], rep["reader"]) == (3, 2, "parquet")
    assert rep["rejected"][0]["code"] == "null_label"

    g = tmp_path / "d.jsonl.gz"
    with gzip.open(g, "wt", encoding="utf-8") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in ROWS)
    assert inspect_file(g)["accepted"] == 3

    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"not parquet at all")
    with pytest.raises(KTODataError, match="Parquet"):
        inspect_file(bad)


def test_saved_datasets_and_hf_directory(tmp_path):
    import datasets

    ds = datasets.Dataset.from_list(
        [
            {"prompt": r["prompt"], "completion": r["completion"], "label": bool(r["label"] in (True, "good"))}
            for r in ROWS
        ]
    )
    ds.save_to_disk(str(tmp_path / "saved"))
    rep = inspect_file(tmp_path / "saved")
    assert rep["accepted"] == 3 and rep["labels"] == {"desirable": 2, "undesirable": 1}

    datasets.DatasetDict({"train": ds, "validation": ds.select([0])}).save_to_disk(str(tmp_path / "dd"))
    assert inspect_file(tmp_path / "dd")["accepted"] == 3
    assert open_source(tmp_path / "dd").splits() == ["train", "validation"]

    hf = tmp_path / "hfdir"
    (hf / "data").mkdir(parents=True)
    write_jsonl(hf / "data" / "train-00000-of-00002.jsonl", ROWS[:2])
    write_jsonl(hf / "data" / "train-00001-of-00002.jsonl", [ROWS[2], {"prompt": "x"}])
    write_jsonl(hf / "data" / "validation-00000-of-00001.jsonl", ROWS[:1])
    rep = inspect_file(hf)
    assert rep["rows_read"] == 4 and rep["accepted"] == 3 and rep["reader"] == "hf-dir"
    # the row within its file is printed with the file (issue 18.5); source_row runs across the files
    assert rep["rejected"][0]["row"] == 2 and rep["rejected"][0]["file"] == "train-00001-of-00002.jsonl"
    assert rep["rejected"][0]["source_row"] == 4
    assert set(open_source(hf).splits()) == {"train", "validation"}


def test_missing_file_unknown_suffix_and_hub_name(tmp_path, monkeypatch):
    with pytest.raises(KTODataError, match="not found"):
        inspect_file(tmp_path / "nope.jsonl")
    odd = tmp_path / "data.xyz"
    odd.write_text("hello", encoding="utf-8")
    with pytest.raises(KTODataError, match="unknown file type"):
        inspect_file(odd)
    sniffed = write_jsonl(tmp_path / "data.txt", ROWS)  # unknown suffix, JSON-lines content
    assert inspect_file(sniffed)["accepted"] == 3
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(KTODataError, match="cannot load dataset 'someone/not-here'"):
        inspect_file("someone/not-here")


def test_utf16_file_rows_are_rejected_with_a_hint(tmp_path):
    p = tmp_path / "u16.jsonl"
    p.write_bytes(("\ufeff" + json.dumps(ROWS[0]) + "\n").encode("utf-16-le"))
    rep = inspect_file(p)
    assert rep["accepted"] == 0 and "looks UTF-16" in rep["rejected"][0]["reason"]


def test_empty_file(tmp_path):
    p = tmp_path / "empty.jsonl"
    p.write_bytes(b"\n\n  \r\n")
    rep = inspect_file(p)
    assert rep["rows_read"] == 0 and rep["accepted"] == 0 and rep["rejected"] == []


def test_directory_rows_are_numbered_within_their_file(tmp_path):
    """Issue 18.5: a Hugging Face dataset directory with two shards (the `data/train-0000N-of-0000M`
    layout `push_to_hub` writes); errors, duplicates and strict mode name file and row within it."""
    from prospect.config.schema import KTODataConfig

    hf = tmp_path / "hfdir"
    (hf / "data").mkdir(parents=True)
    a, b = "train-00000-of-00002.jsonl", "train-00001-of-00002.jsonl"
    write_jsonl(hf / "data" / a, [ROWS[0], ROWS[1], ROWS[2]])
    write_jsonl(hf / "data" / b, [{"prompt": "x"}, ROWS[1], ROWS[0] | {"prompt": "new"}])
    rep = inspect_file(hf)
    assert rep["rows_read"] == 6 and rep["accepted"] + len(rep["rejected"]) == 6
    missing, dup = rep["rejected"]
    assert (missing["file"], missing["row"], missing["source_row"]) == (b, 1, 4)
    assert (dup["file"], dup["row"], dup["code"]) == (b, 2, "duplicate")
    assert dup["reason"] == f"row: exact duplicate of {a} row 2"
    with pytest.raises(KTODataError) as e:
        inspect_file(hf, KTODataConfig(strict=True))
    assert f": {b}:1: " in str(e.value)


def test_parquet_gz_is_read(tmp_path):
    """Issue 18.6: the README says Parquet also reads as .gz; a gzip-compressed Parquet file
    (as `gzip file.parquet` leaves it) reads like the plain file; a broken one is one error line."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    plain = tmp_path / "d.parquet"
    rows = [{**r, "label": str(r["label"])} for r in ROWS] + [{"prompt": "x", "completion": None, "label": "True"}]
    pq.write_table(pa.Table.from_pylist(rows), plain)
    packed = tmp_path / "d.parquet.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    a, b = inspect_file(plain), inspect_file(packed)
    assert b["reader"] == "parquet" and b["rows_read"] == 4 and b["accepted"] == 3
    for key in ("rows_read", "accepted", "rejected", "labels", "pairs"):
        assert a[key] == b[key], key
    bad = tmp_path / "bad.parquet.gz"
    bad.write_bytes(b"not gzip at all")
    with pytest.raises(KTODataError, match="bad.parquet.gz: not a readable gzip file"):
        inspect_file(bad)
    half = tmp_path / "half.parquet.gz"
    half.write_bytes(gzip.compress(plain.read_bytes())[:40])
    with pytest.raises(KTODataError, match="half.parquet.gz: not a readable"):
        inspect_file(half)
