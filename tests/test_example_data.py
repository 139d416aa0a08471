"""Checks on the bundled example datasets in examples/data/.

Only json, csv and the standard library are used: these tests check the files
against what their READMEs promise, independently of Prospect's own readers.
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

DATA = Path(__file__).resolve().parents[1] / "examples" / "data"
SEED = DATA / "seed_formats"
ARABIC = re.compile("[\u0600-\u06ff]")

# Seed 001's label words (its `_normalize_kto_label` and `arabic_label_mapping`).
POSITIVE_WORDS = {
    "good",
    "positive",
    "1",
    "true",
    "yes",
    "accept",
    "preferred",
    "high",
    "excellent",
    "great",
    "جيد",
    "ممتاز",
    "مقبول",
}
NEGATIVE_WORDS = {
    "bad",
    "negative",
    "0",
    "false",
    "no",
    "reject",
    "not_preferred",
    "low",
    "poor",
    "terrible",
    "سيء",
    "ضعيف",
    "مرفوض",
}
MAIN_FILES = ["kto_train.jsonl", "kto_validation.jsonl", "dpo_train.jsonl", "dpo_validation.jsonl"]


def _reject_constant(name: str) -> Any:
    # NaN / Infinity are not JSON; Python's json module accepts them unless told not to.
    raise ValueError(f"non-JSON constant {name}")


def strict_loads(line: str) -> Any:
    return json.loads(line, parse_constant=_reject_constant)


def jsonl_lines(path: Path) -> list[str]:
    """Non-blank lines of a JSON Lines file (blank lines are not rows)."""
    return [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def read_jsonl(path: Path) -> list[dict]:
    return [strict_loads(line) for line in jsonl_lines(path)]


def is_arabic(text: Any) -> bool:
    return bool(ARABIC.search(json.dumps(text, ensure_ascii=False)))


def word_label(value: Any) -> bool | None:
    """Seed 001's rule: bools as is, label words after strip/lower-case; None if unknown."""
    if isinstance(value, bool):
        return value
    if not isinstance(value, str):
        return None
    word = value.strip().lower()
    if word in POSITIVE_WORDS:
        return True
    if word in NEGATIVE_WORDS:
        return False
    return None


def readme_table(readme: str, heading: str) -> list[list[str]]:
    """Body rows of the first markdown table after `## heading`."""
    section = readme.split(f"## {heading}\n", 1)[1]
    rows, started = [], False
    for line in section.splitlines():
        if line.startswith("|"):
            started = True
            rows.append([c.strip() for c in line.strip().strip("|").split("|")])
        elif started:
            break
    return rows[2:]  # drop header and --- line


@pytest.fixture(scope="module")
def main() -> dict[str, list[dict]]:
    return {name: read_jsonl(DATA / name) for name in MAIN_FILES}


@pytest.fixture(scope="module")
def seed_readme() -> str:
    return (SEED / "README.md").read_text(encoding="utf-8")


# ---------------------------------------------------------------- parsing


def test_every_jsonl_line_parses_to_an_object():
    files = sorted(p for p in DATA.rglob("*.jsonl") if p.name != "bad_rows.jsonl")
    assert len(files) >= 4 + 8
    for path in files:
        for n, line in enumerate(jsonl_lines(path), start=1):
            try:
                obj = strict_loads(line)
            except ValueError as exc:  # pragma: no cover - failure path
                pytest.fail(f"{path.relative_to(DATA)} row {n}: {exc}")
            assert isinstance(obj, dict), f"{path.name} row {n} is not an object"


# ---------------------------------------------------------------- KTO files


@pytest.mark.parametrize("name,min_rows", [("kto_train.jsonl", 240), ("kto_validation.jsonl", 60)])
def test_kto_fields_types_and_ratio(main, name, min_rows):
    rows = main[name]
    assert len(rows) >= min_rows
    for n, row in enumerate(rows, start=1):
        assert {"prompt", "completion", "label"} <= set(row) <= {"prompt", "completion", "label", "system"}, n
        assert isinstance(row["label"], bool), f"{name} row {n}: label must be a JSON bool"
        for field in ("prompt", "completion"):
            assert isinstance(row[field], str) and row[field].strip(), f"{name} row {n}: empty {field}"
        if "system" in row:
            assert isinstance(row["system"], str) and row["system"].strip()
    desirable = sum(row["label"] for row in rows)
    undesirable = len(rows) - desirable
    assert undesirable > 0
    assert 2.5 <= desirable / undesirable <= 3.5


@pytest.mark.parametrize("name", ["kto_train.jsonl", "kto_validation.jsonl"])
def test_kto_lengths_are_short_and_realistic(main, name):
    for n, row in enumerate(main[name], start=1):
        assert 5 <= len(row["prompt"].split()) <= 25, f"{name} row {n}: prompt length"
        if row["label"]:
            assert 10 <= len(row["completion"].split()) <= 60, f"{name} row {n}: desirable completion length"


def test_kto_train_has_60_prompts_with_both_labels(main):
    labels: dict[str, set] = {}
    for row in main["kto_train.jsonl"]:
        labels.setdefault(row["prompt"], set()).add(row["label"])
    assert sum(1 for seen in labels.values() if seen == {True, False}) >= 60


def test_kto_train_has_a_few_system_rows(main):
    count = sum(1 for row in main["kto_train.jsonl"] if "system" in row)
    assert 3 <= count <= 40


@pytest.mark.parametrize("name", MAIN_FILES)
def test_both_languages_about_one_third_arabic(main, name):
    rows = main[name]
    arabic = sum(1 for row in rows if is_arabic(row["prompt"]))
    assert 0.2 <= arabic / len(rows) <= 0.45, f"{name}: {arabic}/{len(rows)} Arabic prompts"
    assert any(not is_arabic(row["prompt"]) for row in rows)


@pytest.mark.parametrize("name", MAIN_FILES)
def test_no_duplicate_rows(main, name):
    keys = Counter(json.dumps(row, sort_keys=True, ensure_ascii=False) for row in main[name])
    assert [k for k, c in keys.items() if c > 1] == []


@pytest.mark.parametrize(
    "train,validation",
    [
        ("kto_train.jsonl", "kto_validation.jsonl"),
        ("dpo_train.jsonl", "dpo_validation.jsonl"),
        # The DPO files reuse KTO prompts of the same split: no cross-split leak either.
        ("kto_train.jsonl", "dpo_validation.jsonl"),
        ("dpo_train.jsonl", "kto_validation.jsonl"),
    ],
)
def test_no_prompt_overlap_between_train_and_validation(main, train, validation):
    def norm(text: str) -> str:
        return " ".join(text.lower().split())

    overlap = {norm(r["prompt"]) for r in main[train]} & {norm(r["prompt"]) for r in main[validation]}
    assert overlap == set()


# ---------------------------------------------------------------- DPO files


@pytest.mark.parametrize("name,min_rows", [("dpo_train.jsonl", 120), ("dpo_validation.jsonl", 40)])
def test_dpo_fields(main, name, min_rows):
    rows = main[name]
    assert len(rows) >= min_rows
    for n, row in enumerate(rows, start=1):
        assert {"prompt", "chosen", "rejected", "h_w", "h_l"} <= set(row), n
        assert set(row) <= {"prompt", "chosen", "rejected", "h_w", "h_l", "system"}, n
        for field in ("prompt", "chosen", "rejected"):
            assert isinstance(row[field], str) and row[field].strip(), f"{name} row {n}: empty {field}"
        assert row["chosen"] != row["rejected"]
        for field in ("h_w", "h_l"):
            assert type(row[field]) is int and row[field] in (0, 1), f"{name} row {n}: {field} must be 0 or 1"


@pytest.mark.parametrize("name,low,high", [("dpo_train.jsonl", 8, 12), ("dpo_validation.jsonl", 2, 6)])
def test_dpo_has_pairs_for_factual_reorientation(main, name, low, high):
    counts = Counter((row["h_w"], row["h_l"]) for row in main[name])
    # Reorientation swaps exactly the pairs whose chosen is non-factual and rejected factual.
    assert low <= counts[(1, 0)] <= high
    # Most pairs are already oriented: chosen factual, rejected non-factual or both factual.
    assert counts[(0, 1)] + counts[(0, 0)] >= 0.85 * len(main[name])
    assert counts[(0, 1)] > 0 and counts[(0, 0)] > 0


# ---------------------------------------------------------------- seed formats

SEED_FILES = [
    "labels_words.jsonl",
    "scores.jsonl",
    "ratings.jsonl",
    "ranking.jsonl",
    "conversation.jsonl",
    "sharegpt.jsonl",
    "trl_conversational.jsonl",
    "hh.jsonl",
    "ultrafeedback.jsonl",
    "llamafactory_kto.json",
    "llamafactory_dpo.json",
    "kto.csv",
    "bad_rows.jsonl",
]


def _messages_ok(messages: Any, roles: set) -> bool:
    return (
        isinstance(messages, list)
        and messages
        and all(
            isinstance(m, dict)
            and m.get("role") in roles
            and isinstance(m.get("content"), str)
            and m["content"].strip()
            for m in messages
        )
    )


def read_csv_rows(path: Path) -> list[dict]:
    with path.open(encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


def test_seed_readme_describes_every_file(seed_readme):
    present = {p.name for p in SEED.iterdir() if p.name != "README.md"}
    assert present == set(SEED_FILES)
    for name in SEED_FILES:
        assert f"`{name}`" in seed_readme


@pytest.mark.parametrize("name", [n for n in SEED_FILES if n != "bad_rows.jsonl"])
def test_seed_files_have_10_to_20_rows_and_both_languages(name):
    path = SEED / name
    if name.endswith(".jsonl"):
        rows: list = read_jsonl(path)
    elif name.endswith(".json"):
        rows = json.loads(path.read_text(encoding="utf-8"))
        assert isinstance(rows, list)
    else:
        rows = read_csv_rows(path)
    assert 10 <= len(rows) <= 20
    assert any(is_arabic(r) for r in rows) and any(not is_arabic(r) for r in rows)


def test_labels_words_match_readme(seed_readme):
    rows = read_jsonl(SEED / "labels_words.jsonl")
    expected = {int(r[0]): r[-1] for r in readme_table(seed_readme, "labels_words.jsonl")}
    assert len(expected) == len(rows)
    arabic_words = set()
    for n, row in enumerate(rows, start=1):
        assert set(row) == {"prompt", "response", "label"}
        label = word_label(row["label"])
        assert label is not None, f"row {n}: {row['label']!r} is not a seed label word"
        assert expected[n] == ("desirable" if label else "undesirable"), n
        if is_arabic(row["label"]):
            arabic_words.add(row["label"])
    assert arabic_words == {"جيد", "ممتاز", "مقبول", "سيء", "ضعيف", "مرفوض"}


@pytest.mark.parametrize(
    "name,field,low,high,threshold",
    [
        ("scores.jsonl", "score", 0.0, 1.0, 0.5),
        ("ratings.jsonl", "rating", 1, 5, 4),
    ],
)
def test_numeric_labels_match_readme(seed_readme, name, field, low, high, threshold):
    rows = read_jsonl(SEED / name)
    expected = {int(r[0]): r[-1] for r in readme_table(seed_readme, name)}
    assert len(expected) == len(rows)
    for n, row in enumerate(rows, start=1):
        assert set(row) == {"prompt", "completion", field}
        value = row[field]
        assert isinstance(value, (int, float)) and not isinstance(value, bool) and low <= value <= high
        if field == "rating":
            assert isinstance(value, int)
        assert expected[n] == ("desirable" if value >= threshold else "undesirable"), n
    outcomes = set(expected.values())
    assert outcomes == {"desirable", "undesirable"}


def test_ranking_rows_are_permutations(seed_readme):
    rows = read_jsonl(SEED / "ranking.jsonl")
    table = {int(r[0]): r for r in readme_table(seed_readme, "ranking.jsonl")}
    for n, row in enumerate(rows, start=1):
        assert set(row) == {"prompt", "responses", "rankings"}
        responses, ranks = row["responses"], row["rankings"]
        assert len(responses) >= 3 and len(responses) == len(ranks)
        assert sorted(ranks) == list(range(1, len(ranks) + 1))
        assert int(table[n][2]) == ranks.index(1) and int(table[n][3]) == ranks.index(len(ranks))


def test_conversation_rows():
    for n, row in enumerate(read_jsonl(SEED / "conversation.jsonl"), start=1):
        assert set(row) == {"conversation", "response", "label"}
        assert _messages_ok(row["conversation"], {"system", "user", "assistant"}), n
        assert isinstance(row["response"], str) and row["response"].strip()
        assert word_label(row["label"]) is not None, n


def test_sharegpt_rows_end_with_gpt_turn():
    labels = []
    for n, row in enumerate(read_jsonl(SEED / "sharegpt.jsonl"), start=1):
        turns = row["conversations"]
        assert all(set(t) == {"from", "value"} and t["from"] in {"system", "human", "gpt"} for t in turns), n
        assert turns[-1]["from"] == "gpt" and any(t["from"] == "human" for t in turns), n
        assert isinstance(row["label"], bool)
        labels.append(row["label"])
    assert set(labels) == {True, False}


def test_trl_conversational_rows():
    labels = []
    for n, row in enumerate(read_jsonl(SEED / "trl_conversational.jsonl"), start=1):
        assert set(row) == {"prompt", "completion", "label"}
        assert _messages_ok(row["prompt"], {"system", "user"}) and row["prompt"][-1]["role"] == "user", n
        assert _messages_ok(row["completion"], {"assistant"}), n
        assert isinstance(row["label"], bool)
        labels.append(row["label"])
    assert set(labels) == {True, False}


def test_hh_transcripts_share_a_prompt():
    for n, row in enumerate(read_jsonl(SEED / "hh.jsonl"), start=1):
        chosen, rejected = row["chosen"], row["rejected"]
        for text in (chosen, rejected):
            assert text.startswith("\n\nHuman: ") and "\n\nAssistant: " in text, n
        cut = "\n\nAssistant: "
        prompt_c = chosen[: chosen.rindex(cut) + len(cut)]
        prompt_r = rejected[: rejected.rindex(cut) + len(cut)]
        assert prompt_c == prompt_r and chosen != rejected, n


def test_ultrafeedback_rows():
    for n, row in enumerate(read_jsonl(SEED / "ultrafeedback.jsonl"), start=1):
        assert {"prompt", "chosen", "rejected", "score_chosen", "score_rejected"} <= set(row)
        for side in ("chosen", "rejected"):
            msgs = row[side]
            assert _messages_ok(msgs, {"user", "assistant"}) and msgs[-1]["role"] == "assistant", n
            assert msgs[0] == {"role": "user", "content": row["prompt"]}, n
        assert 1 <= row["score_rejected"] < row["score_chosen"] <= 10, n


def test_llamafactory_files():
    kto = json.loads((SEED / "llamafactory_kto.json").read_text(encoding="utf-8"))
    for n, row in enumerate(kto, start=1):
        assert set(row) == {"instruction", "input", "output", "kto_tag"} and isinstance(row["kto_tag"], bool), n
        assert row["instruction"].strip() and row["output"].strip() and isinstance(row["input"], str)
    assert {r["kto_tag"] for r in kto} == {True, False}
    assert any(r["input"] for r in kto) and any(not r["input"] for r in kto)
    dpo = json.loads((SEED / "llamafactory_dpo.json").read_text(encoding="utf-8"))
    for n, row in enumerate(dpo, start=1):
        assert set(row) == {"conversations", "chosen", "rejected"}, n
        assert row["conversations"][-1]["from"] == "human", n
        assert row["chosen"]["from"] == row["rejected"]["from"] == "gpt"
        assert row["chosen"]["value"] != row["rejected"]["value"]


def test_csv_parses_with_quoting_and_matches_readme(seed_readme):
    rows = read_csv_rows(SEED / "kto.csv")
    expected = {int(r[0]): r[-1] for r in readme_table(seed_readme, "kto.csv")}
    assert len(expected) == len(rows)
    assert list(rows[0]) == ["prompt", "completion", "label"]
    assert any("," in r["completion"] for r in rows) and any('"' in r["prompt"] for r in rows)
    assert any("\n" in r["completion"] for r in rows)
    for n, row in enumerate(rows, start=1):
        label = word_label(row["label"])
        assert label is not None
        assert expected[n] == ("desirable" if label else "undesirable"), n


# ---------------------------------------------------------------- bad rows


def row_problem(line: str) -> str | None:
    """Why a row of bad_rows.jsonl cannot become a training row (None if it can)."""
    try:
        obj = strict_loads(line)
    except ValueError:
        return "json"
    if not isinstance(obj, dict):
        return "not an object"
    for field in ("prompt", "completion"):
        if not isinstance(obj.get(field), str) or not obj[field].strip():
            return f"empty {field}"
    if "label" in obj:
        return None if word_label(obj["label"]) is not None else "label"
    score = obj.get("score")
    if isinstance(score, (int, float)) and not isinstance(score, bool) and math.isfinite(score) and 0 <= score <= 1:
        return None
    return "score"


def test_bad_rows_are_exactly_the_documented_ones(seed_readme):
    text = (SEED / "bad_rows.jsonl").read_text(encoding="utf-8")
    physical = text.splitlines()
    assert any(not line.strip() for line in physical), "the file should include blank lines"
    lines = jsonl_lines(SEED / "bad_rows.jsonl")
    table = readme_table(seed_readme, "bad_rows.jsonl")
    assert len(table) == len(lines)
    documented_bad = set()
    for row_no, phys, status, _problem in table:
        row_no, phys = int(row_no), int(phys)
        # Row numbers skip blank lines; the physical line number points at the same text.
        assert physical[phys - 1] == lines[row_no - 1]
        if status == "bad":
            documented_bad.add(row_no)
    actual_bad = {n for n, line in enumerate(lines, start=1) if row_problem(line) is not None}
    assert actual_bad == documented_bad
    assert len(documented_bad) == 7 and len(lines) - len(documented_bad) == 6
    # Each kind of damage the README promises occurs once.
    problems = Counter(row_problem(lines[n - 1]) for n in documented_bad)
    assert problems == Counter({"json": 2, "not an object": 1, "label": 2, "empty prompt": 1, "empty completion": 1})
    nan_line = next(line for line in lines if "NaN" in line)
    assert math.isnan(json.loads(nan_line)["score"])  # lenient parsers read it; strict ones must reject it
