"""Shared pieces of the row formats (formats.py): family names, column spellings, RankingItem
and the small helpers that read one value of a row (a number, a 0/1 indicator, a column
among several spellings) (transcripts.py reads prompts implicit in the completions).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from prospect.data.records import PairedRecord, Text, UnpairedRecord
from prospect.data.text import FieldError, show, type_name

FAMILIES = ("unpaired", "paired", "ranking")
FORMAT_FAMILY = {
    "unpaired": "unpaired",
    "binary": "unpaired",
    "score": "unpaired",
    "conversation": "unpaired",
    "paired": "paired",
    "pairwise": "paired",
    "hh": "paired",
    "ranking": "ranking",
}
CONVERSATION_KEYS = ("conversation", "messages", "conversations")
RESPONSES_KEYS = ("responses", "completions", "candidates")
RANK_KEYS = ("rankings", "ranking", "ranks")
SCORES_KEYS = ("scores",)
PAIR_SCORE_KEYS = (
    "score_chosen",
    "score_rejected",
    "chosen_score",
    "rejected_score",
    "chosen_rating",
    "rejected_rating",
)
DETECT_ROWS = 100


@dataclass
class RankingItem:
    """A prompt with several responses ordered by quality (higher `quality` = better).

    quality is -rank for rankings (1 = best) and the score itself for scores.
    """

    prompt: Text
    responses: list[Text]
    quality: list[float]
    system: str | None = None
    source_row: int | None = None
    by: str = "rankings"
    extra: dict[str, Any] = field(default_factory=dict)
    tools: list[dict[str, Any]] | None = None  # tool schemas, passed on to the records made from it


Item = UnpairedRecord | PairedRecord | RankingItem


def family_of(item: Item) -> str:
    """'unpaired', 'paired' or 'ranking'."""
    if isinstance(item, UnpairedRecord):
        return "unpaired"
    if isinstance(item, PairedRecord):
        return "paired"
    return "ranking"


def _uniq(*names: str | None) -> tuple[str, ...]:
    return tuple(dict.fromkeys(n for n in names if n))


def _present(row: dict[str, Any], keys: frozenset[str]) -> bool:
    for k in keys.intersection(row):  # C-level set intersection: rows have few columns
        if row[k] is not None:
            return True
    return False


def _has_key(row: dict[str, Any], keys: frozenset[str]) -> bool:
    return not keys.isdisjoint(row)


def _get(row: dict[str, Any], keys: tuple[str, ...]) -> tuple[str | None, Any]:
    for k in keys:
        v = row.get(k)
        if v is not None:
            return k, v
    return None, None


def _float(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise FieldError(name, "bad_value", f"expected a number, got {type_name(value)}")
    try:
        x = float(value)
    except OverflowError:  # an integer beyond float range
        raise FieldError(name, "nan", "infinite value") from None
    except ValueError:
        raise FieldError(name, "bad_value", f"expected a number, got {show(value)!r}") from None
    if not math.isfinite(x):
        raise FieldError(name, "nan", f"{'NaN' if math.isnan(x) else 'infinite'} value")
    return x


def _indicator(row: dict[str, Any], name: str) -> int | None:
    """0/1 factuality indicator (h, h_w, h_l); None when absent."""
    v = row.get(name)
    if v is None or (isinstance(v, str) and not v.strip()):
        return None
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, str) and v.strip().lower() in ("true", "false"):
        return int(v.strip().lower() == "true")
    x = _float(v, name)
    if x not in (0.0, 1.0):
        raise FieldError(name, "bad_value", f"must be 0 or 1, got {show(v)}")
    return int(x)


def _common_prefix_messages(a: list[dict], b: list[dict]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n
