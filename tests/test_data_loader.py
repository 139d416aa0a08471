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
        {
            "prompt": [{"role": "user", "content": "hi"}],
            "completion": [{"role": "assistant", "content": "yo"}],
            "label": False,
        },
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
    rows = [{"prompt": "Q", "chosen": "A", "rejected": "B", "h_w": 1, "h_l": 0, "score_chosen": 5}] + [
        {"prompt": f"Q{i}", "chosen": f"A{i}", "rejected": f"B{i}"} for i in range(3)
    ]
    p = write_jsonl(tmp_path / "p.jsonl", rows)
    loader = DPODataLoader(
        KTODataConfig(train_file=str(p), validation_split_percentage=0), method="factual_dpo", delta_reorient=True
    )
    ds = loader.load_dataset("train")
    assert ds.column_names == [
        "prompt",
        "chosen",
        "rejected",
        "system",
        "h_w",
        "h_l",
        "margin",
        "source_row",
        "origin",
        "extra",
    ]
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


def test_constructor_cache_dir_is_the_disk_cache(tmp_path):
    p = write_jsonl(tmp_path / "t.jsonl", ROWS)
    cfg = KTODataConfig(train_file=str(p), validation_split_percentage=0.25)  # no data.cache_dir
    first = KTODataLoader(cfg, cache_dir=str(tmp_path / "mine")).load_dataset("train")
    entries = list((tmp_path / "mine" / "prospect-data").iterdir())
    assert len(entries) == 1 and (entries[0] / "train").is_dir()
    again = KTODataLoader(cfg, cache_dir=tmp_path / "mine")
    assert again.load_dataset("train").to_list() == first.to_list() and again._loaded is None  # from the cache
    # the constructor's directory wins over data.cache_dir
    both = KTODataLoader(cfg.model_copy(update={"cache_dir": str(tmp_path / "cfg")}), cache_dir=str(tmp_path / "ctor"))
    both.load_dataset("train")
    assert (tmp_path / "ctor" / "prospect-data").is_dir() and not (tmp_path / "cfg").exists()
    # enable_cache=False writes nothing, wherever the directory comes from
    KTODataLoader(cfg, enable_cache=False, cache_dir=str(tmp_path / "off")).load_dataset("train")
    assert not (tmp_path / "off").exists()


def test_seed001_caching_example_with_cache_compression(tmp_path, monkeypatch):
    """Seed 001's caching example as written; cache_compression is accepted and warns that it does nothing."""
    monkeypatch.chdir(tmp_path)
    write_jsonl(tmp_path / "t.jsonl", ROWS)
    config = KTOConfig()
    config.data.train_file = "t.jsonl"
    with pytest.warns(UserWarning, match=r"cache_compression=True\) has no effect"):
        loader = KTODataLoader(
            config=config.data, enable_cache=True, cache_dir=".cache/kto_data", cache_compression=True
        )
    train_dataset = loader.load_dataset("train")
    assert (tmp_path / ".cache" / "kto_data" / "prospect-data").is_dir()
    with pytest.warns(UserWarning):
        second = KTODataLoader(
            config=config.data, enable_cache=True, cache_dir=".cache/kto_data", cache_compression=True
        )
    assert second.load_dataset("train").to_list() == train_dataset.to_list() and second._loaded is None


def test_seed001_loader_examples(tmp_path, monkeypatch):
    """Seed 001's binary-feedback, pairwise, streaming and memory examples, with their data files."""
    import datasets

    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    fb = [{"prompt": f"q{i}", "completion": f"answer {i}", "feedback": "good" if i % 3 else "ضعيف"} for i in range(30)]
    write_jsonl(tmp_path / "data" / "kto_binary_train.jsonl", fb)
    write_jsonl(tmp_path / "data" / "kto_binary_val.jsonl", fb[:6])
    data_config = KTODataConfig(
        train_file="data/kto_binary_train.jsonl",
        validation_file="data/kto_binary_val.jsonl",
        label_column="feedback",
        response_column="completion",
        balance_labels=True,
        label_imbalance_tolerance=0.05,
    )
    train_dataset = KTODataLoader(config=data_config).load_dataset("train")
    labels = [sample["label"] for sample in train_dataset]
    # 20 good, 10 bad: balance_labels keeps int(10 * 1.05) = 10 of the majority
    assert (sum(labels), len(labels) - sum(labels)) == (10, 10)

    write_jsonl(
        tmp_path / "data" / "dpo_train.jsonl",
        [{"prompt": f"p{i}", "chosen": f"c{i}", "rejected": f"r{i}"} for i in range(10)],
    )
    data_config = KTODataConfig(
        train_file="data/dpo_train.jsonl",
        convert_pairwise_to_binary=True,
        pairwise_sampling_strategy="balanced",
        balance_labels=True,
        validation_split_percentage=0,
    )
    converted = KTODataLoader(config=data_config).load_dataset("train")
    assert len(converted) == 10 and set(converted["origin"]) == {"pair:chosen", "pair:rejected"}

    write_jsonl(tmp_path / "data" / "large_kto_train.jsonl", ROWS)
    with pytest.warns(UserWarning, match="buffer_size"):
        data_config = KTODataConfig(
            train_file="data/large_kto_train.jsonl",
            streaming=True,
            buffer_size=10000,
            balance_labels=True,
            preprocessing_num_workers=8,
        )
    streamed = KTODataLoader(config=data_config).load_dataset("train")
    assert isinstance(streamed, datasets.IterableDataset) and len(list(streamed)) > 0

    write_jsonl(tmp_path / "data" / "kto_train.jsonl", ROWS)
    with pytest.warns(UserWarning, match="max_samples_in_memory"):
        data_config = KTODataConfig(
            train_file="data/kto_train.jsonl",
            max_samples_in_memory=30000,
            streaming=True,
            lazy_loading=True,
            balance_labels=True,
            label_imbalance_tolerance=0.1,
        )
    lazy = KTODataLoader(config=data_config).load_dataset("train")
    assert isinstance(lazy, datasets.IterableDataset)
    assert [r["source_row"] for r in lazy] == [r["source_row"] for r in streamed]  # the same rows, in file order
