"""Canonical record types (docs/architecture.md, "Data flow").

Every input format becomes one of these two types. A prompt or completion is either
a plain string (standard format) or a list of chat messages `{"role", "content"}`
(conversational format).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

Message = dict[str, str]
Text = str | list[Message]


@dataclass
class UnpairedRecord:
    """One completion with a binary label (KTO data).

    label: True = desirable, False = undesirable.
    weight: optional per-example weight (multiplies the example's loss).
    h: optional factuality/safety indicator (1 = non-factual/unsafe).
    source_row: 1-based row number in the source file (blank lines not counted).
    origin: how the record was made ("unpaired", "pair:chosen", "pair:rejected", "ranking", ...).
    tools: the row's tool (function) schemas, passed to the chat template with `tools=`.
    """

    prompt: Text
    completion: Text
    label: bool
    system: str | None = None
    weight: float | None = None
    h: int | None = None
    source_row: int | None = None
    origin: str = "unpaired"
    tools: list[dict[str, Any]] | None = None  # tool schemas for the chat template (data/tools.py)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class PairedRecord:
    """A preferred (chosen) and a dispreferred (rejected) completion of one prompt (DPO data).

    h_w / h_l: factuality indicators of chosen / rejected (1 = non-factual/unsafe).
    margin: optional per-pair target margin.
    """

    prompt: Text
    chosen: Text
    rejected: Text
    system: str | None = None
    h_w: int | None = None
    h_l: int | None = None
    margin: float | None = None
    source_row: int | None = None
    origin: str = "paired"
    extra: dict[str, Any] = field(default_factory=dict)
    tools: list[dict[str, Any]] | None = None  # tool schemas for the chat template (data/tools.py)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


Record = UnpairedRecord | PairedRecord
