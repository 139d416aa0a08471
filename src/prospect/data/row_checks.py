"""Rows that are read but look wrong: counted as warnings in the data report, never dropped.

- `completion_only_user_message`: a completion (or chosen / rejected) whose only message has
  role `user`: the model would be trained to write the user's turn; usually a role mix-up.
- `chosen_score_not_above_rejected`: a pair whose chosen score (`score_chosen`, `chosen_score`,
  `chosen_rating`) is not above its rejected score (UltraFeedback-style rows): the pair may be
  reversed or a tie.

Each code is counted in the report's `notes` and explained, with its first rows, in `warnings`.
"""

from __future__ import annotations

from typing import Any

from prospect.data.records import Text

SCORE_PAIRS = (
    ("score_chosen", "score_rejected"),
    ("chosen_score", "rejected_score"),
    ("chosen_rating", "rejected_rating"),
)
TEXTS = {
    "completion_only_user_message": "have a completion whose only message has role 'user' (check the roles)",
    "chosen_score_not_above_rejected": "have a chosen score that is not above the rejected score (a reversed pair or a tie?)",
}
SHOWN_ROWS = 5


def only_user_message(text: Text) -> bool:
    return isinstance(text, list) and len(text) == 1 and text[0].get("role") == "user"


def scores_not_ordered(extra: dict[str, Any]) -> bool:
    return any(a in extra and b in extra and extra[a] <= extra[b] for a, b in SCORE_PAIRS)


class RowWarnings:
    """Rows per warning code (see module doc)."""

    def __init__(self) -> None:
        self.rows: dict[str, list[int]] = {}

    def add(self, code: str, row: int) -> None:
        self.rows.setdefault(code, []).append(row)

    def counts(self) -> dict[str, int]:
        return {code: len(rows) for code, rows in self.rows.items()}

    def lines(self) -> list[str]:
        out = []
        for code, rows in self.rows.items():
            shown = ", ".join(map(str, rows[:SHOWN_ROWS])) + (", ..." if len(rows) > SHOWN_ROWS else "")
            out.append(f"{len(rows)} accepted row{'s' if len(rows) != 1 else ''} {TEXTS[code]}: {code} (rows {shown})")
        return out
