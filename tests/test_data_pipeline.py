"""load_records: conversions to the training kind, validation, strict mode, filters, reconciliation."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from prospect.config.schema import KTODataConfig
from prospect.data import inspect_file, load_records
from prospect.data.filters import kto_utility, response_quality
from prospect.errors import DPODataError, DPOLabelError, KTODataError, KTOLabelError


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text(
        "".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n" for r in rows), encoding="utf-8"
    )
    return path


def cfg_for(path: Path, **kw) -> KTODataConfig:
    kw.setdefault("validation_split_percentage", 0)
    return KTODataConfig(train_file=str(path), **kw)


UNPAIRED = [
    {"prompt": "P1", "completion": "d1", "label": True},
    {"prompt": "P1", "completion": "u1", "label": False},
    {"prompt": "P2", "completion": "d2", "label": True},
    {"prompt": "P1", "completion": "u2", "label": False},
    "{not json",
    {"prompt": "P3", "completion": "u3", "label": "bad"},
]


def test_unpaired_file_as_pairs_counts_unused(tmp_path):
    p = write_jsonl(tmp_path / "u.jsonl", UNPAIRED)
    loaded = load_records(cfg_for(p), kind="paired")
    # P1: d1 with u1; u2 has no partner; P2 and P3 have one label each -> 1 pair, 3 unused
    assert [(x.prompt, x.chosen, x.rejected) for x in loaded.train] == [("P1", "d1", "u1")]
    assert loaded.report.records["train"] == {"pairs": 1, "unused_unpaired_rows": 3}
    assert loaded.report.conversions["unpaired_to_pairs"] == {
        "rule": loaded.report.conversions["unpaired_to_pairs"]["rule"],
        "rows": 5,
        "pairs": 1,
        "unused": 3,
    }
    assert loaded.report.rows_read == 6 and loaded.report.accepted == 5 and len(loaded.report.rejected) == 1
    assert loaded.suggested_weights == {}
    json.dumps(loaded.report.to_dict())  # JSON-serialisable


def test_paired_file_for_kto_all_strategy(tmp_path):
    rows = [{"prompt": f"P{i}", "chosen": f"c{i}", "rejected": f"r{i}"} for i in range(5)]
    p = write_jsonl(tmp_path / "p.jsonl", rows)
    loaded = load_records(cfg_for(p), kind="unpaired")
    assert len(loaded.train) == 10
    assert loaded.report.records["train"] == {"rows": 10, "desirable": 5, "undesirable": 5}
    assert loaded.report.conversions["pairs_to_unpaired"] == {
        "strategy": "all",
        "converted": True,
        "pairs": 5,
        "desirable": 5,
        "undesirable": 5,
    }
    one = load_records(cfg_for(p, pairwise_sampling_strategy="balanced"), kind="unpaired")
    assert len(one.train) == 5 and {
        one.report.records["train"]["desirable"],
        one.report.records["train"]["undesirable"],
    } == {2, 3}


def test_ranking_file_both_kinds(tmp_path):
    rows = [{"prompt": "Q", "responses": ["a", "b", "c"], "rankings": [1, 2, 3]}]
    p = write_jsonl(tmp_path / "r.jsonl", rows)
    paired = load_records(cfg_for(p, ranking_strategy="adjacent"), kind="paired")
    assert [(x.chosen, x.rejected) for x in paired.train] == [("a", "b"), ("b", "c")]
    unpaired = load_records(cfg_for(p, min_samples_per_label=1), kind="unpaired")
    assert [(x.completion, x.label) for x in unpaired.train] == [("a", True), ("b", False), ("c", False)]


def test_split_and_validation_file(tmp_path):
    rows = [{"prompt": f"q{i}", "completion": "a", "label": i % 2 == 0} for i in range(20)]
    p = write_jsonl(tmp_path / "t.jsonl", rows)
    loaded = load_records(cfg_for(p, validation_split_percentage=0.2), kind="unpaired", seed=5)
    assert len(loaded.train) == 16 and len(loaded.validation) == 4
    assert loaded.report.split == {"source": "split", "fraction": 0.2, "seed": 5, "train": 16, "validation": 4}
    again = load_records(cfg_for(p, validation_split_percentage=10), kind="unpaired", seed=5)  # 10 means 10%
    assert len(again.validation) == 2

    v = write_jsonl(tmp_path / "v.jsonl", rows[:3] + ["oops"])
    loaded = load_records(cfg_for(p, validation_file=str(v)), kind="unpaired")
    assert len(loaded.train) == 20 and len(loaded.validation) == 3
    val = loaded.report.to_dict()["validation"]
    assert (val["rows_read"], val["accepted"], len(val["rejected"])) == (4, 3, 1)
    assert loaded.report.split["source"] == "validation_file"


def test_dataset_directory_validation_split_is_used(tmp_path):
    hf = tmp_path / "hf"
    (hf / "data").mkdir(parents=True)
    write_jsonl(
        hf / "data" / "train-00000-of-00001.jsonl",
        [{"prompt": "q", "completion": "a", "label": b} for b in (True, False)],
    )
    write_jsonl(hf / "data" / "validation-00000-of-00001.jsonl", [{"prompt": "v", "completion": "a", "label": True}])
    loaded = load_records(cfg_for(hf, validation_split_percentage=0.5), kind="unpaired")
    assert len(loaded.train) == 2 and [r.prompt for r in loaded.validation] == ["v"]
    assert loaded.report.split["source"] == "validation split"


def test_strict_mode_messages_and_classes(tmp_path):
    p = write_jsonl(
        tmp_path / "s.jsonl",
        [
            {"prompt": "q", "completion": "a", "label": True},
            "",
            "{bad",
            {"prompt": "q", "completion": "b", "label": "meh"},
        ],
    )
    with pytest.raises(KTODataError) as e:
        load_records(cfg_for(p, strict=True), kind="unpaired")
    assert type(e.value) is KTODataError
    assert str(e.value).startswith(f"{p}:2 (line 3): row: invalid JSON")
    p2 = write_jsonl(tmp_path / "s2.jsonl", [{"prompt": "q", "completion": "b", "label": "meh"}])
    with pytest.raises(KTOLabelError, match=r"s2.jsonl:1: label: unknown label 'meh'"):
        inspect_file(p2, strict=True)
    p3 = write_jsonl(tmp_path / "s3.jsonl", [{"prompt": "q", "chosen": "a", "rejected": "a"}])
    with pytest.raises(DPODataError, match=r"s3.jsonl:1: chosen: identical to rejected"):
        inspect_file(p3, strict=True)
    assert not issubclass(DPOLabelError, KTOLabelError)  # but both are KTODataError
    # policy filters never raise, even in strict mode
    p4 = write_jsonl(tmp_path / "s4.jsonl", [{"prompt": "q", "completion": "a", "label": 1}] * 2)
    rep = inspect_file(p4, strict=True)
    assert rep["rejected"][0]["code"] == "duplicate"


def test_max_samples_and_sanity_check(tmp_path):
    rows = [{"prompt": f"q{i}", "completion": "a", "label": i % 2 == 0} for i in range(10)]
    p = write_jsonl(tmp_path / "m.jsonl", rows)
    rep = inspect_file(p, KTODataConfig(max_samples=4))
    assert rep["rows_read"] == 4 and rep["stopped_at_max_samples"] is True
    rep = inspect_file(p, KTODataConfig(sanity_check=True, sanity_check_size=3))
    assert rep["rows_read"] == 3


def test_min_samples_per_label_and_no_pairs(tmp_path):
    p = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "q", "completion": f"a{i}", "label": True} for i in range(3)])
    with pytest.raises(KTOLabelError, match="undesirable rows: 0 .*min_samples_per_label=1"):
        load_records(cfg_for(p), kind="unpaired")
    assert len(load_records(cfg_for(p, min_samples_per_label=0), kind="unpaired").train) == 3
    with pytest.raises(DPODataError, match="no usable pairs"):
        load_records(cfg_for(p), kind="paired")


def test_length_and_duplicate_filters(tmp_path):
    rows = [
        {"prompt": "hi", "completion": "long enough", "label": True},  # prompt too short (min 3)
        {"prompt": "hello", "completion": "x" * 21, "label": True},  # completion too long (max 20)
        {"prompt": "hello" * 10, "completion": "fine", "label": True},  # prompt too long (max 30)
        {"prompt": "hello", "completion": "ok", "label": False},  # response too short (min 3)
        {"prompt": "hello", "completion": "fine", "label": False},
        {"prompt": "hello", "completion": "fine", "label": False},  # duplicate of row 5
    ]
    p = write_jsonl(tmp_path / "f.jsonl", rows)
    cfg = KTODataConfig(min_prompt_length=3, max_prompt_chars=30, min_response_length=3, max_response_chars=20)
    rep = inspect_file(p, cfg)
    assert [(r["row"], r["code"]) for r in rep["rejected"]] == [
        (1, "prompt_too_short"),
        (2, "response_too_long"),
        (3, "prompt_too_long"),
        (4, "response_too_short"),
        (6, "duplicate"),
    ]
    assert rep["filters"]["rejected"] == {
        "prompt_too_short": 1,
        "prompt_too_long": 1,
        "response_too_short": 1,
        "response_too_long": 1,
        "duplicate": 1,
        "utility_out_of_range": 0,
    }
    assert inspect_file(p, cfg.model_copy(update={"drop_duplicates": False}))["accepted"] == 2


def test_utility_heuristic_by_hand(tmp_path):
    # "Hello world. Bye now.": L = 21/100; S = 0.3 + 0.3 + 0.2 + 0.2 (16 letters of 18 non-space); I = 4/4
    q = response_quality("Hello world. Bye now.")
    assert q == pytest.approx((0.21 + 1.0 + 1.0) / 3)
    # "ok": L = 0.02, S = 0.3 (letters) + 0.2 (all letters), I = 1
    assert response_quality("ok") == pytest.approx((0.02 + 0.5 + 1.0) / 3)
    assert response_quality("مرحبا بكم. أهلاً وسهلاً") > response_quality("مرحبا")  # Arabic sentences and harakat count
    assert kto_utility(q, True) == pytest.approx(q**0.88)
    assert kto_utility(q, False) == pytest.approx(-2.25 * (1 - q) ** 0.88)
    rows = [
        {"prompt": "Q", "completion": "Hello world. Bye now.", "label": False},  # utility -0.695: kept
        {"prompt": "Q2", "completion": "ok", "label": False},  # utility -1.208: out of [-1, 1]
        {"prompt": "Q3", "completion": "ok", "label": True},  # utility 0.550: kept
    ]
    p = write_jsonl(tmp_path / "u.jsonl", rows)
    assert inspect_file(p)["accepted"] == 3  # off by default
    rep = inspect_file(p, KTODataConfig(filter_low_utility=True))
    assert [(r["row"], r["code"]) for r in rep["rejected"]] == [(2, "utility_out_of_range")]
    assert math.isclose(-2.25 * (1 - (0.02 + 0.5 + 1.0) / 3) ** 0.88, -1.2083, abs_tol=1e-3)


def test_factual_dpo_reorientation(tmp_path):
    rows = [
        {"prompt": "Q1", "chosen": "wrong fact", "rejected": "right fact", "h_w": 1, "h_l": 0},
        {"prompt": "Q2", "chosen": "right", "rejected": "wrong", "h_w": 0, "h_l": 1},
    ]
    p = write_jsonl(tmp_path / "f.jsonl", rows)
    loaded = load_records(cfg_for(p), kind="paired", method="factual_dpo", delta_reorient=True)
    assert [(x.chosen, x.h_w, x.h_l) for x in loaded.train] == [("right fact", 0, 1), ("right", 0, 1)]
    assert loaded.report.reoriented == 1 and loaded.report.to_dict()["reoriented"] == 1
    plain = load_records(cfg_for(p), kind="paired", method="dpo")
    assert plain.train[0].chosen == "wrong fact" and plain.report.reoriented is None


def test_inspect_and_load_agree(tmp_path):
    rows = [{"prompt": f"q{i % 7}", "completion": f"a{i}", "label": i % 3 != 0} for i in range(30)]
    rows += [{"prompt": f"p{i}", "chosen": f"c{i}", "rejected": f"r{i}"} for i in range(9)]
    rows += [{"prompt": "r", "responses": ["x", "y", "z"], "scores": [3, 2, 1]}, "[]"]
    p = write_jsonl(tmp_path / "mix.jsonl", rows)
    for strategy in ("all", "random", "balanced"):
        cfg = cfg_for(p, pairwise_sampling_strategy=strategy)
        rep = inspect_file(p, cfg)
        un = load_records(cfg, kind="unpaired")
        pa = load_records(cfg, kind="paired")
        assert rep["labels"] == {k: un.report.records["train"][k] for k in ("desirable", "undesirable")}
        assert rep["pairs"] == len(pa.train)
        assert rep["accepted"] + len(rep["rejected"]) == rep["rows_read"] == 41
        assert inspect_file(p, cfg, streaming=True)["labels"] == rep["labels"]


def test_a_row_missing_only_its_label_is_told_so(tmp_path):
    """In a KTO file, a row with prompt and completion but no label is a label error, not an unknown format;
    in a paired file a row without `rejected` names that field."""
    p = write_jsonl(tmp_path / "u.jsonl", UNPAIRED[:4] + [{"prompt": "P9", "completion": "c9"}])
    report = inspect_file(str(p), cfg_for(p))
    assert report["rejected"] == [
        {
            "row": 5,
            "field": "label",
            "code": "missing_label",
            "reason": "label: missing (no label, kto_tag, score, rating or preference column)",
        }
    ]
    with pytest.raises(KTOLabelError, match=r"u.jsonl:5: label: missing"):
        load_records(cfg_for(p, strict=True), kind="unpaired")
    pairs = [{"prompt": f"Q{i}", "chosen": "a", "rejected": "b"} for i in range(3)] + [{"prompt": "Q9", "chosen": "a"}]
    p2 = write_jsonl(tmp_path / "p.jsonl", pairs)
    rejected = inspect_file(str(p2), cfg_for(p2))["rejected"]
    assert [(r["row"], r["field"]) for r in rejected] == [(4, "rejected")]


MIXED = [
    {"prompt": "P1", "completion": "d1", "label": True},
    {"prompt": "P2", "chosen": "c2", "rejected": "r2"},
    {"prompt": "P3", "completion": "u3", "label": False},
    {"prompt": "P4", "chosen": "c4", "rejected": "r4"},
]


def test_convert_pairwise_to_binary_false_rejects_pairs_for_kto(tmp_path):
    p = write_jsonl(tmp_path / "mix.jsonl", MIXED)
    on = load_records(cfg_for(p), kind="unpaired")
    assert len(on.train) == 6 and not on.report.rejected  # default: 2 native rows + 2 rows per pair
    off = load_records(cfg_for(p, convert_pairwise_to_binary=False), kind="unpaired")
    assert [(r.completion, r.label) for r in off.train] == [("d1", True), ("u3", False)]
    rep = off.report
    assert [(r["row"], r["code"]) for r in rep.rejected] == [(2, "pair_not_converted"), (4, "pair_not_converted")]
    assert "data.convert_pairwise_to_binary is false" in rep.rejected[0]["reason"]
    assert rep.accepted + len(rep.rejected) == rep.rows_read == 4 and rep.reconciles
    assert rep.labels == {"desirable": 1, "undesirable": 1}
    assert rep.conversions["pairs_to_unpaired"]["pairs"] == 0
    # paired training reads the same pairs regardless of the flag
    assert len(load_records(cfg_for(p, convert_pairwise_to_binary=False), kind="paired").train) == 2
    # inspect for no particular method keeps the pairs but leaves them out of the unpaired view;
    # inspect for KTO (as `prospect data inspect --config` does) rejects them like training
    cfg = cfg_for(p, convert_pairwise_to_binary=False)
    neutral = inspect_file(p, cfg)
    assert neutral["accepted"] == 4 and neutral["labels"] == {"desirable": 1, "undesirable": 1}
    assert neutral["conversions"]["pairs_to_unpaired"]["converted"] is False
    assert inspect_file(p, cfg, kind="unpaired")["rejected_by_reason"] == {"pair_not_converted": 2}
    # the streaming loader and the validation file follow the same rule
    from prospect.data import KTODataLoader

    streamed = KTODataLoader(cfg.model_copy(update={"streaming": True}))
    assert [r["completion"] for r in streamed.load_dataset("train")] == ["d1", "u3"]
    assert streamed.report["rejected_by_reason"] == {"pair_not_converted": 2}
    v = write_jsonl(tmp_path / "v.jsonl", MIXED[1:3])
    with_val = load_records(cfg_for(p, convert_pairwise_to_binary=False, validation_file=str(v)), kind="unpaired")
    assert [r.completion for r in with_val.validation] == ["u3"]
    assert with_val.report.validation.rejected_by_reason == {"pair_not_converted": 1}


def test_a_pair_file_without_conversion_is_refused_naming_the_setting(tmp_path):
    p = write_jsonl(tmp_path / "pairs.jsonl", [{"prompt": f"P{i}", "chosen": "a", "rejected": "b"} for i in range(3)])
    with pytest.raises(KTODataError) as e:
        load_records(cfg_for(p, convert_pairwise_to_binary=False), kind="unpaired")
    msg = str(e.value)
    assert msg.startswith(f"{p}: all 3 rows were rejected") and "3 pair_not_converted (e.g. row 1: row: " in msg
    assert "data.convert_pairwise_to_binary is false" in msg


def test_all_rows_rejected_names_count_reasons_and_an_example(tmp_path):
    rows = [
        {"prompt": "q", "completion": "a", "label": "meh"},
        {"prompt": "q", "completion": "b", "label": "meh\nh"},
        "{oops",
        {"prompt": "q", "completion": "c", "label": "so-so"},
        {"prompt": "", "completion": "d", "label": 1},
    ]
    p = write_jsonl(tmp_path / "bad.jsonl", rows)
    with pytest.raises(KTODataError) as e:
        load_records(cfg_for(p), kind="unpaired")
    msg = str(e.value)
    assert type(e.value) is KTODataError and len(msg.splitlines()) == 1
    assert msg.startswith(f"{p}: all 5 rows were rejected, none is left to train on: ")
    # most common first, each with the first row that had it
    assert "3 unknown_label (e.g. row 1: label: unknown label 'meh'" in msg
    top = msg.split(": ", 2)[2]
    assert top.index("3 unknown_label") < top.index("1 empty_text") < top.index("1 invalid_json")
    assert "(e.g. row 3: row: invalid JSON" in msg and f"prospect data inspect {p}" in msg
    with pytest.raises(DPODataError, match=r"all 5 rows were rejected.*3 unknown_label"):
        load_records(cfg_for(p), kind="paired")
    # some rows accepted but one label short: the reasons are named too (was only "rejected rows: 2")
    q = write_jsonl(tmp_path / "short.jsonl", rows[:2] + [{"prompt": "q", "completion": "x", "label": True}])
    with pytest.raises(
        KTOLabelError, match=r"rejected rows: 2: 2 unknown_label \(e\.g\. row 1: label: unknown label 'meh'"
    ):
        load_records(cfg_for(q), kind="unpaired")


def test_one_line_escapes_every_line_break():
    from prospect.data.report import one_line

    text = one_line("a\nb\rc\x0bd\x0ce\x1cf\x85g\u2028h\u2029i")
    assert len(text.splitlines()) == 1 and text.startswith("a\\nb\\rc")
    assert one_line("plain, ünïcode: مرحبا") == "plain, ünïcode: مرحبا"


def test_streaming_load_records_keeps_indexes_on_disk_with_the_same_result(tmp_path):
    rows = [{"prompt": f"q{i % 5}", "completion": f"a{i % 40}", "label": i % 3 == 0} for i in range(120)]
    rows += [{"prompt": "p", "chosen": "c", "rejected": "r"}] * 2  # the second pair is a duplicate
    p = write_jsonl(tmp_path / "d.jsonl", rows)
    plain = load_records(cfg_for(p), kind="unpaired")
    streamed = load_records(cfg_for(p, streaming=True), kind="unpaired")
    assert streamed.report.streaming is True and plain.report.streaming is False
    assert streamed.train == plain.train and streamed.report.rejected == plain.report.rejected
    assert load_records(cfg_for(p, lazy_loading=True), kind="paired").report.streaming is True
