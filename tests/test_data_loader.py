"""Seed 001's KTODataLoader / DPODataLoader: datasets out, caching, streaming."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from prospect import KTODataLoader as TopLevelLoader
from prospect.config.schema import KTOConfig, KTODataConfig
from prospect.data import DPODataLoader, KTODataLoader
from prospect.errors import KTODataError


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


ROWS = [{"prompt": f"q{i % 4}", "completion": f"answer {i}", "label": i % 3 != 0} for i in range(20)]


def test_kto_loader_train_validation_test(tmp_path):
    p = write_jsonl(tmp_path / "t.jsonl", ROWS)
    t = write_jsonl(tmp_path / "test.jsonl", ROWS[:5])
    cfg = KTODataConfig(train_file=str(p), test_file=str(t), validation_split_percentage=0.25)
    loader = KTODataLoader(cfg)
    train, val = loader.load_dataset("train"), loader.load_dataset("validation")
    assert TopLevelLoader is KTODataLoader
    assert (len(train), len(val)) == (15, 5)
    assert train.column_names == ["prompt", "completion", "label", "system", "weight", "h", "source_row", "origin"]
    assert train.features["prompt"].dtype == "string" and isinstance(train[0]["label"], bool)
    assert sorted(list(train["source_row"]) + list(val["source_row"])) == list(range(1, 21))
    assert loader.report["accepted"] == 20 and loader.suggested_weights["undesirable_weight"] > 1
    assert len(loader.load_dataset("test")) == 5
    with pytest.raises(KTODataError, match="unknown split"):
        loader.load_dataset("dev")
    with pytest.raises(KTODataError, match="test_file"):
        KTODataLoader(KTODataConfig(train_file=str(p))).load_dataset("test")


def test_run_config_and_conversational_columns(tmp_path):
    rows = [
        {"prompt": "plain", "completion": "text", "label": True},
        {"prompt": [{"role": "user", "content": "hi"}], "completion": [{"role": "assistant", "content": "yo"}], "label": False},
    ]
    p = write_jsonl(tmp_path / "c.jsonl", rows)
    run = KTOConfig()
    run.data.train_file = str(p)
    run.data.validation_split_percentage = 0
    ds = KTODataLoader(run).load_dataset("train")
    # one conversational row makes every row conversational (TRL's format); strings are promoted
    assert ds[0]["prompt"] == [{"role": "user", "content": "plain"}]
    assert ds[0]["completion"] == [{"role": "assistant", "content": "text"}]


def test_dpo_loader(tmp_path):
    rows = [{"prompt": "Q", "chosen": "A", "rejected": "B", "h_w": 1, "h_l": 0, "score_chosen": 5}] + \
           [{"prompt": f"Q{i}", "chosen": f"A{i}", "rejected": f"B{i}"} for i in range(3)]
    p = write_jsonl(tmp_path / "p.jsonl", rows)
    loader = DPODataLoader(KTODataConfig(train_file=str(p), validation_split_percentage=0), method="factual_dpo", delta_reorient=True)
    ds = loader.load_dataset("train")
    assert ds.column_names == ["prompt", "chosen", "rejected", "system", "h_w", "h_l", "margin", "source_row", "origin", "extra"]
    assert (ds[0]["chosen"], ds[0]["h_w"], ds[0]["h_l"]) == ("B", 0, 1)  # re-oriented
    assert json.loads(ds[0]["extra"]) == {"score_chosen": 5.0, "reoriented": True}
    assert loader.report["reoriented"] == 1 and loader.suggested_weights == {}
    assert len(loader.load_dataset("validation")) == 0


def test_disk_cache_round_trip(tmp_path):
    p = write_jsonl(tmp_path / "t.jsonl", ROWS)
    cfg = KTODataConfig(train_file=str(p), cache_dir=str(tmp_path / "cache"), validation_split_percentage=0.25)
    first = KTODataLoader(cfg).load_dataset("train")
    saved = list((tmp_path / "cache" / "prospect-data").iterdir())
    assert len(saved) == 1 and (saved[0] / "train").is_dir() and (saved[0] / "data_report.json").is_file()
    second_loader = KTODataLoader(cfg)
    second = second_loader.load_dataset("train")
    assert second.to_list() == first.to_list()
    assert second_loader._loaded is None and second_loader.report["accepted"] == 20  # served from the cache
    write_jsonl(p, ROWS[:10])  # the file changed: a new key
    assert len(KTODataLoader(cfg).load_dataset("train")) < len(first)


def test_damaged_disk_cache_is_rebuilt(tmp_path):
    p = write_jsonl(tmp_path / "t.jsonl", ROWS)
    cfg = KTODataConfig(train_file=str(p), cache_dir=str(tmp_path / "cache"), validation_split_percentage=0.25)
    first = KTODataLoader(cfg).load_dataset("train").to_list()
    entry = next((tmp_path / "cache" / "prospect-data").iterdir()) / "train"
    arrow = next(entry.glob("*.arrow"))
    data = bytearray(arrow.read_bytes())
    data[data.index(first[0]["completion"].encode()[:8])] ^= 0x01  # one changed character; the file still loads
    arrow.write_bytes(bytes(data))
    loader = KTODataLoader(cfg)
    assert loader.load_dataset("train").to_list() == first
    assert loader._loaded is not None  # read from the file again, not from the damaged cache
    assert KTODataLoader(cfg).load_dataset("train").to_list() == first


def test_streaming_iterable_dataset(tmp_path):
    p = write_jsonl(tmp_path / "t.jsonl", ROWS + [{"prompt": "Q", "chosen": "A", "rejected": "B"}])
    cfg = KTODataConfig(train_file=str(p), streaming=True, validation_split_percentage=0.3)
    loader = KTODataLoader(cfg)
    train = list(loader.load_dataset("train"))
    assert loader.report["rows_read"] == 21 and loader.report["accepted"] == 21  # one full pass, counted once
    val = list(loader.load_dataset("validation"))
    # every accepted row lands in exactly one split (the pair gives two rows in the same split)
    assert len(train) + len(val) == 22
    assert sorted({r["source_row"] for r in train} | {r["source_row"] for r in val}) == list(range(1, 22))
    assert not {r["source_row"] for r in train} & {r["source_row"] for r in val}
    assert list(loader.load_dataset("train")) == train  # deterministic
