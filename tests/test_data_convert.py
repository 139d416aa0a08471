"""Conversions (worked by hand, and against TRL's unpair_preference_dataset) and balancing."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from prospect.config.schema import KTODataConfig
from prospect.data import auto_kto_weights, balance_unpaired, load_records
from prospect.data.convert import (
    pair_unpaired,
    ranking_to_pairs,
    ranking_to_unpaired,
    reorient_factual_pairs,
    unpair_pair,
)
from prospect.data.formats import RankingItem
from prospect.data.records import PairedRecord, UnpairedRecord
from prospect.data.split import split_records, validation_count


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def pairs(n: int) -> list[PairedRecord]:
    return [PairedRecord(f"p{i}", f"c{i}", f"r{i}", source_row=i + 1) for i in range(n)]


# ---- pairs -> unpaired ---------------------------------------------------------
def test_unpair_all_matches_trl():
    import datasets
    from trl.data_utils import unpair_preference_dataset

    ps = pairs(3)
    ours = [r for i, p in enumerate(ps) for r in unpair_pair(p, i, "all")]
    trl = unpair_preference_dataset(
        datasets.Dataset.from_list([{"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected} for p in ps])
    )
    key = lambda r: (r["prompt"], r["completion"], r["label"])  # noqa: E731
    assert sorted(key(r.to_dict()) for r in ours) == sorted(key(r) for r in trl)


def test_unpair_random_and_balanced():
    ps = pairs(101)
    rand = [unpair_pair(p, i, "random", seed=7) for i, p in enumerate(ps)]
    assert all(len(x) == 1 for x in rand)
    n_d = sum(x[0].label for x in rand)
    assert 30 < n_d < 71  # a fair coin: 101 draws land here with probability > 0.999
    assert rand == [unpair_pair(p, i, "random", seed=7) for i, p in enumerate(ps)]  # deterministic
    assert rand != [unpair_pair(p, i, "random", seed=8) for i, p in enumerate(ps)]
    bal = [unpair_pair(p, i, "balanced", seed=7)[0] for i, p in enumerate(ps)]
    n_d = sum(r.label for r in bal)
    assert {n_d, 101 - n_d} == {50, 51}
    # alternating: consecutive pairs give opposite labels
    assert all(a.label != b.label for a, b in zip(bal, bal[1:]))


def test_unpair_carries_factuality_and_system():
    p = PairedRecord("Q", "A", "B", system="S", h_w=0, h_l=1, source_row=4)
    c, r = unpair_pair(p, 0)
    assert (c.label, c.h, c.system, c.source_row, c.origin) == (True, 0, "S", 4, "pair:chosen")
    assert (r.label, r.h, r.origin) == (False, 1, "pair:rejected")


# ---- unpaired -> pairs -----------------------------------------------------------
def test_pair_unpaired_rule_by_hand():
    recs = [
        UnpairedRecord("P1", "d1", True, source_row=1),
        UnpairedRecord("P1", "u1", False, source_row=2),
        UnpairedRecord("P1", "d2", True, source_row=3),
        UnpairedRecord("P2", "d3", True, source_row=4),
        UnpairedRecord("P1", "u2", False, source_row=5),
        UnpairedRecord("P1", "u3", False, source_row=6),
        UnpairedRecord("P1", "x", False, system="other", source_row=7),  # another system: another group
    ]
    made, unused = pair_unpaired(recs)
    # P1: desirable [d1, d2], undesirable [u1, u2, u3] -> (d1,u1), (d2,u2); u3 unused. P2: d3 unused.
    assert [(p.chosen, p.rejected, p.source_row, p.extra["rejected_source_row"]) for p in made] == [
        ("d1", "u1", 1, 2),
        ("d2", "u2", 3, 5),
    ]
    assert [r.source_row for r in unused] == [4, 6, 7]


# ---- rankings -----------------------------------------------------------------
RANK = RankingItem("Q", ["a", "b", "c", "d"], [-2.0, -1.0, -3.0, -3.0], source_row=1)  # ranks 2, 1, 3, 3


@pytest.mark.parametrize(
    "strategy,expected",
    [
        ("best_vs_rest", [("b", "a"), ("b", "c"), ("b", "d")]),
        ("best_worst", [("b", "c"), ("b", "d")]),  # worst level is {c, d}: both pair (issue 18.4)
        ("adjacent", [("b", "a"), ("a", "c"), ("a", "d")]),
        ("all_pairs", [("b", "a"), ("b", "c"), ("b", "d"), ("a", "c"), ("a", "d")]),  # c, d tie: no pair
    ],
)
def test_ranking_to_pairs(strategy, expected):
    assert [(p.chosen, p.rejected) for p in ranking_to_pairs(RANK, strategy)] == expected


def test_ranking_to_unpaired():
    recs, unused = ranking_to_unpaired(RANK, "best_vs_rest")
    assert [(r.completion, r.label) for r in recs] == [
        ("a", False),
        ("b", True),
        ("c", False),
        ("d", False),
    ] and unused == 0
    recs, unused = ranking_to_unpaired(RANK, "best_worst")
    assert [(r.completion, r.label) for r in recs] == [("b", True), ("c", False), ("d", False)] and unused == 1


def test_reorient_factual_pairs():
    ps = [
        PairedRecord("Q", "A", "B", h_w=1, h_l=0),
        PairedRecord("Q", "A", "B", h_w=0, h_l=1),
        PairedRecord("Q", "A", "B", h_w=1, h_l=1),
        PairedRecord("Q", "A", "B"),
    ]
    out, n = reorient_factual_pairs(ps)
    assert n == 1
    assert (out[0].chosen, out[0].rejected, out[0].h_w, out[0].h_l, out[0].extra) == (
        "B",
        "A",
        0,
        1,
        {"reoriented": True},
    )
    assert out[1:] == ps[1:]


# ---- weights and balancing ---------------------------------------------------
@pytest.mark.parametrize(
    "n_d,n_u,expected",
    [
        (746, 254, (1.0, 746 / 254)),  # seed 002: upweight the undesirable minority to 2.94
        (100, 100, (1.0, 1.0)),
        (133, 100, (1.0, 1.0)),  # ratio 1.33 <= 4/3: already in range
        (134, 100, (1.0, 1.34)),  # ratio 1.34 > 4/3: upweight undesirable to ratio 1
        (100, 150, (1.5, 1.0)),  # desirable minority
        (99, 100, (100 / 99, 1.0)),  # ratio 0.99 < 1: out of range
        (0, 10, (1.0, 1.0)),
    ],
)
def test_auto_kto_weights(n_d, n_u, expected):
    w_d, w_u = auto_kto_weights(n_d, n_u)
    assert (w_d, w_u) == pytest.approx(expected)
    if n_d and n_u:
        assert 1.0 <= w_d * n_d / (w_u * n_u) <= 4 / 3 + 1e-12
        assert min(w_d, w_u) == 1.0


def labelled(n_d: int, n_u: int) -> list[UnpairedRecord]:
    return [UnpairedRecord("p", f"d{i}", True, source_row=i) for i in range(n_d)] + [
        UnpairedRecord("p", f"u{i}", False, source_row=n_d + i) for i in range(n_u)
    ]


def test_downsample_to_min_times_tolerance():
    recs = labelled(100, 20)
    out, info = balance_unpaired(recs, strategy="downsample", tolerance=0.1, seed=1)
    # target = int(20 * 1.1) = 22 desirable kept, all 20 undesirable
    assert info["target"] == 22 and info["after"] == {"desirable": 22, "undesirable": 20} and info["dropped"] == 78
    assert [r.source_row for r in out] == sorted(r.source_row for r in out)  # file order kept
    again, _ = balance_unpaired(recs, strategy="downsample", tolerance=0.1, seed=1)
    assert again == out
    other, _ = balance_unpaired(recs, strategy="downsample", tolerance=0.1, seed=2)
    assert other != out


def test_upsample_and_auto():
    out, info = balance_unpaired(labelled(10, 3), strategy="upsample", seed=0)
    # 3 undesirable -> 10: two whole extra copies (6) + 1 sampled
    assert info["after"] == {"desirable": 10, "undesirable": 10} and info["added"] == 7
    assert Counter(r.completion for r in out if not r.label).most_common(1)[0][1] <= 4
    out, info = balance_unpaired(labelled(10, 3), strategy="auto")
    assert len(out) == 13 and info["dropped"] == info["added"] == 0


def test_balance_labels_true_means_downsample_in_load_records(tmp_path):
    rows = [{"prompt": f"q{i}", "completion": "a", "label": i < 30} for i in range(40)]  # 30 desirable, 10 undesirable
    p = write_jsonl(tmp_path / "d.jsonl", rows)
    cfg = KTODataConfig(
        train_file=str(p), validation_split_percentage=0, balance_labels=True, label_imbalance_tolerance=0.2
    )
    loaded = load_records(cfg, kind="unpaired")
    assert loaded.report.balancing["strategy"] == "downsample"
    assert loaded.report.balancing["after"] == {"desirable": 12, "undesirable": 10}  # int(10 * 1.2)
    assert loaded.suggested_weights == {"desirable_weight": 1.0, "undesirable_weight": 1.0}  # 12/10 in [1, 4/3]
    auto = load_records(cfg.model_copy(update={"balance_labels": False}), kind="unpaired")
    assert len(auto.train) == 40 and auto.suggested_weights == {"desirable_weight": 1.0, "undesirable_weight": 3.0}


# ---- split --------------------------------------------------------------------
def test_validation_split_counts_and_grouping():
    assert [validation_count(n, 0.1) for n in (0, 1, 2, 9, 10, 25, 100)] == [0, 0, 1, 1, 1, 2, 10]
    assert validation_count(10, 0.0) == 0
    recs = [r for i, p in enumerate(pairs(20)) for r in unpair_pair(p, i)]  # 40 rows, 20 groups
    train, val = split_records(recs, 0.25, seed=3)
    assert len(val) == 10 and len(train) == 30  # 5 groups of 2
    assert {r.source_row for r in train}.isdisjoint({r.source_row for r in val})
    assert split_records(recs, 0.25, seed=3) == (train, val)
    assert split_records(recs, 0.25, seed=4) != (train, val)


@pytest.mark.parametrize(
    "strategy,expected_pairs,unused",
    [
        ("best_vs_rest", [("a", "c"), ("a", "d"), ("b", "c"), ("b", "d")], 0),
        ("best_worst", [("a", "d"), ("b", "d")], 1),  # c (the middle level) is in no pair
        ("adjacent", [("a", "c"), ("b", "c"), ("c", "d")], 0),
        ("all_pairs", [("a", "c"), ("a", "d"), ("b", "c"), ("b", "d"), ("c", "d")], 0),
    ],
)
def test_ranking_ties_for_best_all_pair_and_counts_reconcile(tmp_path, strategy, expected_pairs, unused):
    """Issue 18.4: two responses tied for best (scores 5, 5, 3, 1, the shape of a scored-completions
    file such as UltraFeedback's per-completion ratings) both pair; used + unused == responses."""
    from prospect.data import inspect_file

    row = {"prompt": "Q", "responses": ["a", "b", "c", "d"], "scores": [5, 5, 3, 1]}
    p = tmp_path / "ranked.jsonl"
    p.write_text(json.dumps(row) + "\n", encoding="utf-8")
    cfg = KTODataConfig(train_file=str(p), ranking_strategy=strategy, validation_split_percentage=0)
    pairs = load_records(cfg, kind="paired").train
    assert [(x.chosen, x.rejected) for x in pairs] == expected_pairs
    conv = inspect_file(p, cfg)["conversions"]["ranking_to_pairs"]
    assert (conv["responses"], conv["pairs"], conv["used"], conv["unused"]) == (
        4,
        len(expected_pairs),
        4 - unused,
        unused,
    )
    unpaired = inspect_file(p, cfg)["conversions"]["ranking_to_unpaired"]
    assert unpaired["desirable"] == 2  # both co-best responses are desirable in the unpaired view
    assert unpaired["desirable"] + unpaired["undesirable"] + unpaired["unused"] == unpaired["responses"] == 4
