"""Label normalisation (seed 001 table incl. Arabic, thresholds, mapping) and the seed examples."""

from __future__ import annotations

from pathlib import Path

import pytest

from prospect.config.schema import KTODataConfig
from prospect.data import load_records
from prospect.data.labels import clean_label_text, label_from_row, normalize_label
from prospect.data.text import FieldError

FIXTURES = Path(__file__).parent / "fixtures" / "data"

# Seed 001's positive/negative label tables, verbatim.
SEED_POSITIVE = [
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
]
SEED_NEGATIVE = [
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
]


@pytest.mark.parametrize("word", SEED_POSITIVE + ["Good", " GOOD ", "Desirable", "True"])
def test_seed_positive_words(word):
    assert normalize_label(word) is True


@pytest.mark.parametrize("word", SEED_NEGATIVE + ["Bad", "UNDESIRABLE", "not preferred", "not-preferred"])
def test_seed_negative_words(word):
    assert normalize_label(word) is False


def test_arabic_with_marks_and_diacritics():
    # RTL mark, tatweel and harakat must not change the word.
    assert normalize_label("\u200fجيد\u200f") is True
    assert normalize_label("جـيـد") is True
    assert normalize_label("جَيِّد") is True
    assert normalize_label("جيد جداً") is True  # seed 001's custom example
    assert normalize_label("سيئ") is False  # hamza-on-ya spelling of سيء
    assert clean_label_text("\u202bممتاز\u202c") == "ممتاز"


def test_booleans_and_numbers():
    assert normalize_label(True) is True and normalize_label(False) is False
    assert normalize_label(1) is True and normalize_label(0) is False
    assert normalize_label(0.5) is True and normalize_label(0.49) is False  # seed threshold 0.5
    assert normalize_label("-1") is False
    assert normalize_label(4, threshold=4.0) is True and normalize_label(3.9, threshold=4.0) is False


@pytest.mark.parametrize(
    "value,code",
    [
        (None, "null_label"),
        ("", "null_label"),
        ("   ", "null_label"),
        (float("nan"), "nan"),
        ("NaN", "nan"),
        (float("inf"), "nan"),
        (10**400, "nan"),
        ("1e999", "nan"),
        ("maybe", "unknown_label"),
        ([1], "bad_label"),
        ({"a": 1}, "bad_label"),
    ],
)
def test_bad_labels_are_field_errors(value, code):
    with pytest.raises(FieldError) as e:
        normalize_label(value, field="label")
    assert e.value.code == code and e.value.label and e.value.field == "label"


def test_user_mapping_takes_precedence():
    # seed 001's custom loader maps مقبول (acceptable) to bad; the user can do the same.
    assert normalize_label("مقبول") is True
    assert normalize_label("مقبول", mapping={"مقبول": 0}) is False
    assert normalize_label("meh", mapping={"Meh": 1}) is True


def test_label_source_order_and_thresholds():
    cfg = KTODataConfig(rating_threshold=4, score_threshold=0.7)
    assert label_from_row({"score": 0.69}, cfg) is False
    assert label_from_row({"score": 0.7}, cfg) is True
    assert label_from_row({"rating": 4}, cfg) is True and label_from_row({"rating": "3"}, cfg) is False
    assert label_from_row({"kto_tag": True}, cfg) is True  # LLaMA-Factory
    # the label column wins over score; a null label falls through to the score
    assert label_from_row({"label": "bad", "score": 0.9}, cfg) is False
    assert label_from_row({"label": None, "score": 0.9}, cfg) is True
    cfg2 = KTODataConfig(label_column="feedback")
    assert label_from_row({"feedback": "thumbs_up"}, cfg2) is True
    with pytest.raises(FieldError) as e:
        label_from_row({"label": None}, cfg)
    assert e.value.code == "null_label"
    with pytest.raises(FieldError) as e:
        label_from_row({"other": 1}, cfg)
    assert e.value.code == "missing_label"


def test_seed_examples_give_the_seed_labels():
    """Every example of seeds 001/000 gets the label the seed states (worked from the seed text)."""
    cfg = KTODataConfig(
        train_file=str(FIXTURES / "seed001_examples.jsonl"), validation_split_percentage=0, min_samples_per_label=0
    )
    loaded = load_records(cfg, kind="unpaired")
    got = [(r.source_row, r.label) for r in loaded.train]
    expected = [
        (1, True),
        (2, False),
        (3, True),  # binary good/bad
        (4, True),
        (5, False),
        (6, True),  # score 0.8 / 0.3, rating 4 (>= 4)
        (7, True),
        (8, False),
        (9, True),
        (10, False),  # preference positive/negative, ممتاز, ضعيف
        (11, True),
        (11, False),  # pairwise -> good + bad
        (12, True),  # conversation, good
        (13, True),  # seed 000: desirable (row 14 duplicates row 2)
        (15, True),
        (16, False),
        (17, True),
        (18, False),
    ]
    assert got == expected
    assert [r.origin for r in loaded.train if r.source_row == 11] == ["pair:chosen", "pair:rejected"]
    rep = loaded.report
    assert rep.rows_read == 18 and rep.accepted == 17
    assert rep.rejected == [{"row": 14, "field": "row", "code": "duplicate", "reason": "row: exact duplicate of row 2"}]
    # conversation row: prompt is the conversation up to the user turn; the response is the completion
    conv = next(r for r in loaded.train if r.source_row == 12)
    assert [m["role"] for m in conv.prompt] == ["system", "user"]
    assert conv.completion == [
        {
            "role": "assistant",
            "content": "القراءة لها فوائد عديدة منها تحسين المفردات وتطوير التفكير النقدي وتقليل التوتر.",
        }
    ]
    assert rep.notes == {"trailing_assistant_turns_dropped": 1}
