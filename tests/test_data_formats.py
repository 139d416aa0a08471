"""Every input format -> canonical records; detection, fallback and ambiguity."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from prospect.config.schema import KTODataConfig
from prospect.data import inspect_file
from prospect.data.formats import RankingItem
from prospect.data.pipeline import read_items
from prospect.data.records import PairedRecord, UnpairedRecord
from prospect.errors import KTODataError


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def read(tmp_path: Path, rows: list, **cfg) -> tuple[list, dict]:
    p = write_jsonl(tmp_path / "data.jsonl", rows)
    items, report = read_items(str(p), KTODataConfig(**cfg))
    return items, report.to_dict()


def U(role: str, content: str) -> dict:
    return {"role": role, "content": content}


# ---- unpaired ---------------------------------------------------------------
def test_trl_standard_and_conversational_unpaired(tmp_path):
    rows = [
        {"prompt": "The sky is", "completion": " blue.", "label": True},
        {"prompt": [U("user", "What color is the sky?")], "completion": [U("assistant", "Green.")], "label": False},
    ]
    items, rep = read(tmp_path, rows)
    assert items[0] == UnpairedRecord("The sky is", " blue.", True, source_row=1)
    assert items[1] == UnpairedRecord(
        [U("user", "What color is the sky?")], [U("assistant", "Green.")], False, source_row=2
    )
    assert rep["shapes"] == {"unpaired": 1, "unpaired:conversational": 1} and rep["format"] == "unpaired"


def test_mixed_string_and_messages_in_one_row_are_unified(tmp_path):
    items, _ = read(
        tmp_path, [{"prompt": [U("system", "Be brief."), U("user", "Hi")], "response": "Hello", "label": "good"}]
    )
    assert items[0].completion == [U("assistant", "Hello")]


def test_messages_without_response_llamafactory_kto_and_sharegpt(tmp_path):
    rows = [
        {"messages": [U("user", "Q1"), U("assistant", "A1"), U("user", "Q2"), U("assistant", "A2")], "label": True},
        {
            "conversations": [
                {"from": "system", "value": "S"},
                {"from": "human", "value": "Q"},
                {"from": "gpt", "value": "A"},
            ],
            "kto_tag": False,
        },
        {"messages": [U("user", "Q"), U("user", "Q again")], "label": True},  # no final assistant turn
    ]
    items, rep = read(tmp_path, rows)
    assert items[0].prompt == [U("user", "Q1"), U("assistant", "A1"), U("user", "Q2")]
    assert items[0].completion == [U("assistant", "A2")] and items[0].label is True
    assert items[1].prompt == [U("system", "S"), U("user", "Q")] and items[1].completion == [U("assistant", "A")]
    assert items[1].label is False
    assert rep["rejected"][0]["row"] == 3 and rep["rejected"][0]["field"] == "messages"


def test_alpaca_kto_layout(tmp_path):
    rows = [
        {"instruction": "Translate to French", "input": "hello", "output": "bonjour", "kto_tag": True},
        {"instruction": "Say hi", "input": "", "output": "hi", "kto_tag": False, "system": "You are polite."},
        {"instruction": "And now?", "input": "", "output": "bye", "kto_tag": True, "history": [["Say hi", "hi"]]},
    ]
    items, rep = read(tmp_path, rows)
    assert items[0].prompt == "Translate to French\nhello" and items[0].completion == "bonjour"
    assert items[1].prompt == "Say hi" and items[1].system == "You are polite." and items[1].label is False
    assert items[2].prompt == [U("user", "Say hi"), U("assistant", "hi"), U("user", "And now?")]
    assert rep["shapes"] == {"unpaired:alpaca": 3}


def test_configurable_column_names(tmp_path):
    rows = [{"question": "Q", "answer": "A", "thumbs": "up", "sys": "S"}]
    items, _ = read(
        tmp_path,
        rows,
        prompt_column="question",
        response_column="answer",
        label_column="thumbs",
        system_column="sys",
        label_mapping={"up": 1, "down": 0},
    )
    assert items[0] == UnpairedRecord("Q", "A", True, "S", source_row=1)


def test_unpaired_optional_fields_and_row_errors(tmp_path):
    rows = [
        {"prompt": "Q", "completion": "A", "label": 1, "weight": 2.5, "h": 1},
        {"prompt": "  ", "completion": "A", "label": 1},
        {"prompt": "Q", "completion": "\n\t ", "label": 1},
        {"prompt": "Q", "completion": "A", "label": "maybe"},
        {"prompt": "Q", "completion": "A", "score": float("nan")},
        {"prompt": "Q", "completion": 5, "label": 1},
        {"prompt": "Q", "completion": "A", "label": 1, "weight": -1},
        {"prompt": "Q", "completion": "A", "label": 1, "h": 3},
        {"prompt": "Q", "completion": [{"role": "assistant"}], "label": 1},
        {"completion": "A", "label": 1},
    ]
    items, rep = read(tmp_path, rows)
    assert items == [UnpairedRecord("Q", "A", True, weight=2.5, h=1, source_row=1)]
    got = [(r["row"], r["field"], r["code"]) for r in rep["rejected"]]
    assert got == [
        (2, "prompt", "empty_text"),
        (3, "completion", "empty_text"),
        (4, "label", "unknown_label"),
        (5, "score", "nan"),
        (6, "completion", "bad_type"),
        (7, "weight", "bad_value"),
        (8, "h", "bad_value"),
        (9, "completion[0]", "bad_message"),
        (10, "prompt", "missing_field"),
    ]


# ---- paired ---------------------------------------------------------------
def test_paired_strings_with_factuality_and_margin(tmp_path):
    rows = [{"prompt": "Q", "chosen": "good", "rejected": "bad", "system": "S", "h_w": 0, "h_l": 1, "margin": 0.5}]
    items, rep = read(tmp_path, rows)
    assert items[0] == PairedRecord("Q", "good", "bad", "S", 0, 1, 0.5, 1, "paired", {})
    assert rep["format"] == "paired" and rep["pairs"] == 1


def test_ultrafeedback_style_messages_with_scores(tmp_path):
    q = "What is 2+2?"
    rows = [
        {
            "prompt": q,
            "chosen": [U("user", q), U("assistant", "4")],
            "rejected": [U("user", q), U("assistant", "5")],
            "messages": [U("user", q), U("assistant", "4")],
            "score_chosen": 9.0,
            "score_rejected": 2.5,
        }
    ]
    items, rep = read(tmp_path, rows)
    p = items[0]
    # the prompt repeated inside chosen/rejected is taken once
    assert p.prompt == [U("user", q)] and p.chosen == [U("assistant", "4")] and p.rejected == [U("assistant", "5")]
    assert p.extra == {"score_chosen": 9.0, "score_rejected": 2.5}
    assert rep["shapes"] == {"paired:conversational": 1}


def test_implicit_prompt_agrees_with_trl_extract_prompt(tmp_path):
    from trl.data_utils import extract_prompt

    ex = {
        "chosen": [U("system", "S"), U("user", "What color is the sky?"), U("assistant", "It is blue.")],
        "rejected": [U("system", "S"), U("user", "What color is the sky?"), U("assistant", "It is green.")],
    }
    items, rep = read(tmp_path, [ex])
    oracle = extract_prompt(ex)
    assert (items[0].prompt, items[0].chosen, items[0].rejected) == (
        oracle["prompt"],
        oracle["chosen"],
        oracle["rejected"],
    )
    assert rep["shapes"] == {"paired:implicit_prompt": 1}


def test_anthropic_hh_transcripts_split_into_turns_as_trls_converter(tmp_path):
    """Issue 18.1. Expected values worked by hand from TRL's examples/datasets/hh-rlhf-helpful-base.py
    (split at "\\n\\nHuman: " / "\\n\\nAssistant: "; earlier turns = prompt, the rest = one assistant message)."""
    rows = [
        {
            "chosen": "\n\nHuman: Hi there\n\nAssistant: Hello! How can I help?",
            "rejected": "\n\nHuman: Hi there\n\nAssistant: Go away.",
        },
        {
            "chosen": "\n\nHuman: What is 2+2?\n\nAssistant: 4.\n\nHuman: And 3+3?\n\nAssistant: 6.",
            "rejected": "\n\nHuman: What is 2+2?\n\nAssistant: 4.\n\nHuman: And 3+3?\n\nAssistant: Nine.",
        },
    ]
    items, rep = read(tmp_path, rows, format="hh")
    assert (items[0].prompt, items[0].chosen, items[0].rejected) == (
        [U("user", "Hi there")],
        [U("assistant", "Hello! How can I help?")],
        [U("assistant", "Go away.")],
    )
    assert items[1].prompt == [U("user", "What is 2+2?"), U("assistant", "4."), U("user", "And 3+3?")]
    assert items[1].chosen == [U("assistant", "6.")] and items[1].rejected == [U("assistant", "Nine.")]
    assert rep["shapes"] == {"paired:hh": 2}
    # auto-detection gives the same
    items2, _ = read(tmp_path, rows)
    assert items2 == items


def test_llamafactory_dpo_sharegpt_and_alpaca(tmp_path):
    rows = [
        {
            "conversations": [{"from": "human", "value": "Q"}],
            "chosen": {"from": "gpt", "value": "A"},
            "rejected": {"from": "gpt", "value": "B"},
        },
        {"instruction": "Summarise", "input": "long text", "chosen": "short", "rejected": "long text again"},
    ]
    items, rep = read(tmp_path, rows)
    assert items[0].prompt == [U("user", "Q")] and items[0].chosen == [U("assistant", "A")]
    assert items[0].rejected == [U("assistant", "B")]
    assert items[1].prompt == "Summarise\nlong text" and items[1].chosen == "short"
    assert rep["shapes"] == {"paired:sharegpt": 1, "paired:alpaca": 1}


def test_paired_row_errors(tmp_path):
    rows = [
        {"prompt": "Q", "chosen": "same", "rejected": "same"},
        {"prompt": "Q", "chosen": "a", "rejected": "b", "h_w": 2},
        {"prompt": "Q", "chosen": "a", "rejected": "b", "margin": 10**400},  # beyond float range
        {"prompt": "Q", "chosen": "a", "rejected": "b", "score_chosen": "NaN"},
        {"chosen": "yes, a", "rejected": "no, b"},  # no prompt, not HH, no shared leading word
        {"prompt": "Q", "chosen": "a", "rejected": "   "},
        {"prompt": "Q", "chosen": "Q and more", "rejected": "Q and less"},  # prompt repeated: removed
    ]
    items, rep = read(tmp_path, rows)
    assert [(r["row"], r["field"], r["code"]) for r in rep["rejected"]] == [
        (1, "chosen", "identical_pair"),
        (2, "h_w", "bad_value"),
        (3, "margin", "nan"),
        (4, "score_chosen", "nan"),
        (5, "prompt", "missing_field"),
        (6, "rejected", "empty_text"),
    ]
    assert items == [PairedRecord("Q", " and more", " and less", source_row=7)]
    assert rep["notes"] == {"prompt_removed_from_completions": 1}


# ---- ranking ----------------------------------------------------------------
def test_rankings_and_scores(tmp_path):
    rows = [
        {"prompt": "Q", "responses": ["a", "b", "c"], "rankings": [2, 1, 3]},
        {"prompt": "Q2", "completions": ["x", "y"], "scores": [0.1, 0.9]},
        {"prompt": "Q3", "responses": ["x", "y"], "rankings": [1, 1]},
        {"prompt": "Q4", "responses": ["x", "y"], "rankings": [1]},
        {"prompt": "Q5", "responses": ["x"], "rankings": [1]},
    ]
    items, rep = read(tmp_path, rows)
    assert items[0] == RankingItem("Q", ["a", "b", "c"], [-2.0, -1.0, -3.0], None, 1, "rankings")
    assert items[1].quality == [0.1, 0.9] and items[1].by == "scores"
    assert [(r["row"], r["code"]) for r in rep["rejected"]] == [
        (3, "no_preference"),
        (4, "bad_ranking"),
        (5, "bad_ranking"),
    ]
    assert rep["format"] == "ranking"


# ---- detection ----------------------------------------------------------------
def test_mixed_file_per_row_fallback(tmp_path):
    rows = [
        {"prompt": "Q", "completion": "A", "label": True},
        {"prompt": "Q", "chosen": "A", "rejected": "B"},
        {"prompt": "Q", "responses": ["A", "B"], "rankings": [1, 2]},
        {"foo": "bar"},
    ]
    items, rep = read(tmp_path, rows)
    assert [type(i).__name__ for i in items] == ["UnpairedRecord", "PairedRecord", "RankingItem"]
    assert rep["format"] == "mixed"
    assert rep["rejected"][0]["code"] == "unknown_format" and "data.prompt_column" in rep["rejected"][0]["reason"]


def test_ambiguous_file_asks_for_data_format(tmp_path):
    both = {"prompt": "Q", "completion": "A", "label": True, "chosen": "A", "rejected": "B"}
    p = write_jsonl(tmp_path / "amb.jsonl", [both, both])
    with pytest.raises(KTODataError) as e:
        inspect_file(p)
    msg = str(e.value)
    assert "amb.jsonl:1" in msg and "data.format: unpaired" in msg and "--format" in msg
    # explicit format decides
    assert inspect_file(p, fmt="paired")["shapes"] == {"paired": 1}
    assert inspect_file(p, fmt="unpaired")["labels"] == {"desirable": 1, "undesirable": 0}
    # an ambiguous row in an otherwise unpaired file is read as unpaired
    p2 = write_jsonl(tmp_path / "mostly.jsonl", [{"prompt": "Q", "completion": "A", "label": False}, both])
    rep = inspect_file(p2)
    assert rep["format"] == "unpaired" and rep["accepted"] == 2


def test_forced_format_rejects_rows_of_another_family(tmp_path):
    p = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "Q", "completion": "A", "label": True}])
    rep = inspect_file(p, fmt="paired")
    assert rep["accepted"] == 0 and rep["rejected"][0]["field"] == "chosen"
    with pytest.raises(KTODataError, match="unknown data format 'bogus'; valid formats: auto, unpaired, "):
        inspect_file(p, fmt="bogus")
