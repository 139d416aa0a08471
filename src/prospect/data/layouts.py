"""Third-party layouts renamed into the usual columns before a row is parsed (formats.py).

Each layout is recognised by its own columns; `normalize(row)` returns `(row, shape)` with
the row in Prospect's usual columns and the shape to count (None: the parser names it), or
raises `FieldError`. `Skip` (a FieldError) marks a row that is well formed but carries
nothing to learn (a tie): it is rejected and counted, and strict mode does not stop on it.

| layout | columns | becomes |
| --- | --- | --- |
| AlpacaEval / pairwise judge (`paired:pairwise_judge`) | `instruction`, `output_1`, `output_2`, `preference` (1 = output_1 better, 2 = output_2; AlpacaEval 2's soft values in between: below 1.5 = output_1, above = output_2) | instruction -> prompt, the preferred output -> chosen; a tie (1.5, or 0) is skipped (`tie`) |
| Nectar (`ranking:nectar`) | `prompt` (an HH transcript ending in "Assistant:") + `answers: [{answer, model, rank}]` (rank 1 = best) | a ranking; the transcript split into turns (transcripts.hh_turns) |
| LLaMA-Factory messages (`paired:llamafactory_messages`) | `chosen_messages` / `rejected_messages` (whole conversations; content a string or `[{type: text, value}]` parts), optional `loss_weight` | chosen / rejected message lists (the shared leading messages are the prompt); the row's `loss_weight` -> `weight`; per-message `loss_weight` is not used (counted in notes) |
"""

from __future__ import annotations

import math
from typing import Any

from prospect.data.text import FieldError, show, type_name
from prospect.data.transcripts import HH_MARKER, hh_turns

JUDGE_COLUMNS = ("output_1", "output_2", "preference")


class Skip(FieldError):
    """A well-formed row with no preference in it (a tie): rejected and counted, never raised by strict mode."""


def _preference(value: Any) -> int:
    """1 or 2: which output the judge preferred (see module doc); Skip for a tie."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise FieldError("preference", "bad_value", f"expected 1 or 2, got {type_name(value)}")
    try:
        p = float(value)
    except ValueError:
        raise FieldError("preference", "bad_value", f"expected 1 or 2, got {show(value)!r}") from None
    if p == 0 or p == 1.5:
        raise Skip("preference", "tie", f"a tie (preference {show(value)}): no preference to learn")
    if not math.isfinite(p) or not 1 <= p <= 2:
        raise FieldError("preference", "bad_value", f"expected 1 or 2 (or a value between), got {show(value)}")
    return 1 if p < 1.5 else 2


def _pairwise_judge(row: dict[str, Any]) -> dict[str, Any]:
    first = _preference(row["preference"])
    out = {k: v for k, v in row.items() if k not in JUDGE_COLUMNS}
    out["chosen"], out["rejected"] = (
        (row["output_1"], row["output_2"]) if first == 1 else (row["output_2"], row["output_1"])
    )
    return out


def _nectar(row: dict[str, Any]) -> dict[str, Any]:
    answers = row["answers"]
    if not isinstance(answers, list) or not all(isinstance(a, dict) and "answer" in a and "rank" in a for a in answers):
        raise FieldError("answers", "bad_ranking", "expected a list of {answer, rank} objects")
    out = {k: v for k, v in row.items() if k != "answers"}
    out["responses"] = [a["answer"] for a in answers]
    out["rankings"] = [a["rank"] for a in answers]
    prompt = row.get("prompt")
    if isinstance(prompt, str) and "Human:" in prompt and prompt.rstrip().endswith(HH_MARKER):
        turns = hh_turns(prompt[: prompt.rstrip().rfind(HH_MARKER)])
        if turns:
            out["prompt"] = turns
    return out


def _llamafactory_messages(row: dict[str, Any], notes: dict[str, int]) -> dict[str, Any]:
    out = {k: v for k, v in row.items() if k not in ("chosen_messages", "rejected_messages", "loss_weight")}
    sides = [row["chosen_messages"], row["rejected_messages"]]
    if any(isinstance(msgs, list) and any(isinstance(m, dict) and "loss_weight" in m for m in msgs) for msgs in sides):
        notes["message_loss_weight_not_used"] = notes.get("message_loss_weight_not_used", 0) + 1  # rows
    out["chosen"], out["rejected"] = sides
    if row.get("loss_weight") is not None and out.get("weight") is None:
        out["weight"] = row["loss_weight"]
    return out


def normalize(row: dict[str, Any], notes: dict[str, int]) -> tuple[dict[str, Any], str | None]:
    """(row in the usual columns, shape or None); FieldError / Skip for a row that cannot be used."""
    if "chosen" not in row and "rejected" not in row:
        if all(k in row for k in JUDGE_COLUMNS):
            return _pairwise_judge(row), "paired:pairwise_judge"
        if "chosen_messages" in row and "rejected_messages" in row:
            return _llamafactory_messages(row, notes), "paired:llamafactory_messages"
    if "answers" in row and "responses" not in row and isinstance(row["answers"], list):
        return _nectar(row), "ranking:nectar"
    return row, None
