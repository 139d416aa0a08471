"""The label vocabulary: the words that mean desirable or undesirable, and how a word is cleaned.

It sits in the config layer because the config checks `data.label_mapping` and
`data.arabic_label_mapping` values when it is validated (`mapping_value`), and the config may
not import `prospect.data` (the layer above it). `prospect.data.labels` reads labels of rows
with this same vocabulary; its module docstring lists the words.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any

from prospect.errors import show

INVISIBLE = dict.fromkeys(
    [
        0x200E,
        0x200F,
        0x061C,
        0x202A,
        0x202B,
        0x202C,
        0x202D,
        0x202E,
        0x2066,
        0x2067,
        0x2068,
        0x2069,
        0xFEFF,
        0x200B,
        0x200C,
        0x200D,
        0x0640,
    ]  # bidi marks, zero-width chars, Arabic tatweel
    + list(range(0x064B, 0x0660))
    + [0x0670],  # Arabic diacritics (harakat, superscript alef)
    None,
)
_SEPARATORS = re.compile(r"[\s\-]+")

DESIRABLE_WORDS = frozenset(
    {
        "good",
        "positive",
        "true",
        "yes",
        "y",
        "t",
        "accept",
        "accepted",
        "preferred",
        "high",
        "excellent",
        "great",
        "desirable",
        "chosen",
        "thumbs_up",
        "جيد",
        "ممتاز",
        "مقبول",
        "جيد_جدا",
        "نعم",
    }
)
UNDESIRABLE_WORDS = frozenset(
    {
        "bad",
        "negative",
        "false",
        "no",
        "n",
        "f",
        "reject",
        "rejected",
        "not_preferred",
        "dispreferred",
        "low",
        "poor",
        "terrible",
        "undesirable",
        "thumbs_down",
        "سيء",
        "سيئ",
        "سئ",
        "ضعيف",
        "مرفوض",
        "لا",
    }
)


def clean_label_text(text: str) -> str:
    """Normalise a label word for lookup (NFKC, no bidi/zero-width/tatweel/harakat, casefold, '_' separators)."""
    s = unicodedata.normalize("NFKC", text).translate(INVISIBLE).strip().casefold()
    return _SEPARATORS.sub("_", s).strip("_")


def mapping_value(value: Any, where: str = "label_mapping", *, key: Any = None) -> bool:
    """A label mapping's value as True/False: a boolean, 0/1, or a word of the built-in table.

    Words are resolved through the built-in table only (not through other mapping entries), so
    `{"ok": "good"}` means desirable and a chain of user words cannot loop. Raises ValueError
    naming `where` (pydantic turns it into a config error) for anything else, and for a `key`
    that is empty once cleaned (it could never match a label).
    """
    if key is not None and not clean_label_text(str(key)):
        raise ValueError(f"{where}: the key is empty once cleaned (spaces, marks), so it can never match a label")
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        word = clean_label_text(value)
        if word in DESIRABLE_WORDS or word == "1":
            return True
        if word in UNDESIRABLE_WORDS or word == "0":
            return False
    raise ValueError(
        f"{where}: {show(value)!r} is not a label: use true/false, 1/0 or a label word such as good/bad "
        "(desirable/undesirable, positive/negative, ...)"
    )
