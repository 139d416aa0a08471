"""Label normalisation: every way people write "good" or "bad" -> True / False.

Accepted values (seed 001 table, extended):
- booleans; numbers and numeric strings (desirable when >= the threshold: `score_threshold`
  for labels and scores, default 0.5, so 1/0 work; `rating_threshold` for ratings, default 4);
- words, compared after Unicode NFKC, removing bidi marks (RLM/LRM/ALM, embeddings,
  isolates), zero-width characters, Arabic tatweel and diacritics (harakat), case
  folding, and turning runs of spaces/hyphens into "_":
  desirable: good, positive, true, yes, y, t, 1, accept(ed), preferred, high, excellent,
  great, desirable, chosen, thumbs_up, and Arabic جيد، ممتاز، مقبول، جيد جدا، نعم;
  undesirable: bad, negative, false, no, n, f, 0, reject(ed), not_preferred, dispreferred,
  low, poor, terrible, undesirable, thumbs_down, and Arabic سيء (also سيئ، سئ)، ضعيف، مرفوض، لا;
- `data.label_mapping` entries, then `data.arabic_label_mapping` entries (seed 001; by default
  the six words جيد، ممتاز، مقبول -> good and سيء، ضعيف، مرفوض -> bad), both consulted before the
  built-in table; label_mapping wins over arabic_label_mapping. A mapping value is true/false,
  1/0 or a label word of the built-in table ("good", "bad", "نعم", ...): see `mapping_value`.

Where the label comes from (first present, non-null column wins): `label_column`,
`label`, `kto_tag` (LLaMA-Factory), `score_column`/`score`, `rating_column`/`rating`,
`preference`. A present but unusable value is rejected with its reason; it does not
fall through to the next column.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Mapping
from typing import Any

from prospect.config.labels import DESIRABLE_WORDS, INVISIBLE, UNDESIRABLE_WORDS, clean_label_text, mapping_value
from prospect.data.text import FieldError, show, type_name

_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")
_NON_FINITE = {"nan", "+nan", "-nan", "inf", "+inf", "-inf", "infinity", "+infinity", "-infinity"}


class CleanMapping(dict):
    """A user label mapping with cleaned keys and boolean values (built once per scan).

    Values go through `mapping_value`, so a raw mapping such as {"meh": "bad"} means
    undesirable (a plain `bool("bad")` would have said desirable).
    """

    def __init__(self, mapping: Mapping[str, Any]) -> None:
        super().__init__(
            (clean_label_text(str(k)), mapping_value(v, f"label mapping[{k!r}]")) for k, v in mapping.items()
        )


def user_mapping(cfg: Any) -> CleanMapping:
    """label_mapping over arabic_label_mapping, cleaned (configs without the Arabic field work too)."""
    merged: dict[str, Any] = {}
    merged.update(getattr(cfg, "arabic_label_mapping", None) or {})
    merged.update(cfg.label_mapping or {})
    return CleanMapping(merged)


def _number(value: float, field: str, threshold: float) -> bool:
    if not math.isfinite(value):
        raise FieldError(field, "nan", f"{'NaN' if math.isnan(value) else 'infinite'} value", label=True)
    return value >= threshold


def normalize_label(
    value: Any,
    *,
    field: str = "label",
    threshold: float = 0.5,
    mapping: Mapping[str, Any] | None = None,
) -> bool:
    """Map one label value to True (desirable) / False (undesirable), or raise FieldError(label=True).

    Numbers (and numeric strings) are desirable when >= `threshold`; NaN and infinities
    are rejected. `mapping` (word -> bool, 1/0 or a built-in label word) is consulted before the built-in words.
    """
    if value is None:
        raise FieldError(field, "null_label", "null label", label=True)
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        try:
            number = float(value)
        except OverflowError:  # an integer beyond float range
            number = math.inf if value > 0 else -math.inf
        return _number(number, field, threshold)
    if not isinstance(value, str):
        raise FieldError(
            field, "bad_label", f"expected a label word, boolean or number, got {type_name(value)}", label=True
        )
    raw = unicodedata.normalize("NFKC", value).translate(INVISIBLE).strip()
    if not raw:
        raise FieldError(field, "null_label", "empty label", label=True)
    word = clean_label_text(raw)
    if mapping:
        table = mapping if isinstance(mapping, CleanMapping) else CleanMapping(mapping)
        if word in table:
            return table[word]
    if word in DESIRABLE_WORDS:
        return True
    if word in UNDESIRABLE_WORDS:
        return False
    if _NUMBER.fullmatch(raw):
        return _number(float(raw), field, threshold)
    if raw.casefold() in _NON_FINITE:
        raise FieldError(field, "nan", f"{'NaN' if 'nan' in raw.casefold() else 'infinite'} value", label=True)
    raise FieldError(
        field,
        "unknown_label",
        f"unknown label {show(value)!r} (known: good/bad, desirable/undesirable, true/false, 1/0, ...; "
        "add it to data.label_mapping)",
        label=True,
    )


def label_sources(cfg: Any) -> list[tuple[str, float]]:
    """(column, threshold) in the order they are tried; duplicates removed."""
    seen: dict[str, float] = {}
    for col, thr in (
        (cfg.label_column, cfg.score_threshold),
        ("label", cfg.score_threshold),
        ("kto_tag", cfg.score_threshold),
        (cfg.score_column, cfg.score_threshold),
        ("score", cfg.score_threshold),
        (cfg.rating_column, cfg.rating_threshold),
        ("rating", cfg.rating_threshold),
        ("preference", cfg.score_threshold),
    ):
        seen.setdefault(col, thr)
    return list(seen.items())


class LabelReader:
    """Reads a row's label from the first present, non-null label source (see module doc)."""

    def __init__(self, cfg: Any) -> None:
        self.sources = label_sources(cfg)
        self.columns = frozenset(col for col, _ in self.sources)
        self.mapping = user_mapping(cfg)

    def __call__(self, row: Mapping[str, Any]) -> bool:
        return label_from_row(row, self)


def label_from_row(row: Mapping[str, Any], reader: Any) -> bool:
    """The row's label; `reader` is a LabelReader or a data config."""
    if not isinstance(reader, LabelReader):
        reader = LabelReader(reader)
    null_field = None
    for col, thr in reader.sources:
        if col not in row:
            continue
        value = row[col]
        if value is None or (isinstance(value, str) and not value.strip()):
            null_field = null_field or col
            continue
        return normalize_label(value, field=col, threshold=thr, mapping=reader.mapping)
    if null_field is not None:
        raise FieldError(null_field, "null_label", "null label", label=True)
    raise FieldError(
        "label", "missing_label", "missing (no label, kto_tag, score, rating or preference column)", label=True
    )
