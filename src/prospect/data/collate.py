"""Tokenized rows -> model batches (layouts in `prospect.data.layout`).

`UnpairedCollator` (KTO family) and `PairedCollator` (DPO family) turn a list of tokenized
rows into one batch dict: the sequences in the unshared or shared-prompt layout, the
in-batch mismatched pairs (kl_*) when the loss needs a reference point, labels, weights,
factuality indicators and precomputed reference log-probs.
"""

from __future__ import annotations

from typing import Any

import torch

from prospect.data.layout import layout, mismatched_order, shared_layout
from prospect.errors import TrainingError


def _prefixed(prefix: str, d: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {f"{prefix}{k}": v for k, v in d.items()}


class UnpairedCollator:
    """Collates KTO rows: the main sequences and the in-batch mismatched pairs.

    Output keys: input_ids/seq_index/(attention_mask|position_ids) for (x_i, y_i);
    kl_* for (x_i, y_{(i-1) mod n}); label (B,) bool; weight (B,); ref_logps (B,) and
    ref_kl_logps (B,) when precomputed; n (number of sequences).
    """

    def __init__(
        self,
        pad_id: int,
        packed: bool = False,
        max_length: int | None = None,
        build_mismatched: bool = True,
        share_prompt: bool = False,
    ) -> None:
        self.pad_id, self.packed, self.max_length = pad_id, packed, max_length
        self.build_mismatched = build_mismatched
        self.share_prompt = share_prompt  # prompts once, completions as suffixes (data.layout.shared_layout)

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        prompts = [r["prompt_ids"] for r in rows]
        completions = [r["completion_ids"] for r in rows]
        if self.share_prompt:  # prompts once (prefix_*), suffixes as the main and kl_ keys
            batch = shared_layout(
                prompts,
                [completions],
                pad_id=self.pad_id,
                max_length=self.max_length,
                mismatched=completions if self.build_mismatched else None,
            )
        else:
            batch = layout(prompts, completions, pad_id=self.pad_id, packed=self.packed)
        if self.build_mismatched and not self.share_prompt:
            order = mismatched_order(len(rows))
            batch.update(
                _prefixed(
                    "kl_",
                    layout(
                        prompts,
                        [completions[j] for j in order],
                        pad_id=self.pad_id,
                        packed=self.packed,
                        max_length=self.max_length,
                    ),
                )
            )
        batch["label"] = torch.tensor([bool(r["label"]) for r in rows], dtype=torch.bool)
        batch["weight"] = torch.tensor([float(r.get("weight", 1.0)) for r in rows], dtype=torch.float32)
        if "ref_logps" in rows[0]:
            batch["ref_logps"] = torch.tensor([r["ref_logps"] for r in rows], dtype=torch.float32)
        if "ref_kl_logps" in rows[0] and self.build_mismatched:
            check_planned_pairs(rows)
            batch["ref_kl_logps"] = torch.tensor([r["ref_kl_logps"] for r in rows], dtype=torch.float32)
        batch["n"] = len(rows)
        return batch


def check_planned_pairs(rows: list[dict[str, Any]]) -> None:
    """Refuse a batch whose in-batch mismatched pairs are not the ones their reference log-probs were
    precomputed for (`kl_row` / `kl_partner`, engine.reference.attach_reference): z0 would be wrong."""
    if "kl_partner" not in rows[0]:
        return
    order = mismatched_order(len(rows))
    if any(r["kl_partner"] != rows[j]["kl_row"] for r, j in zip(rows, order)):
        raise TrainingError(
            "the batch's mismatched pairs differ from those whose reference log-probs were precomputed "
            "(the loader's batches are not the planned ones); set kto.precompute_ref_log_probs: false"
        )


class PairedCollator:
    """Collates DPO pairs: chosen sequences 0..B-1 then rejected B..2B-1 in one layout.

    Output keys: input_ids/seq_index/(attention_mask|position_ids) for the 2B sequences;
    h_w, h_l (B,) long; margin (B,); ref_chosen_logps/ref_rejected_logps when precomputed;
    n (= B pairs). With build_mismatched (dpo_kto), kl_* holds (x_i, chosen_{(i-1) mod B}).
    """

    def __init__(
        self,
        pad_id: int,
        packed: bool = False,
        max_length: int | None = None,
        build_mismatched: bool = False,
        share_prompt: bool = False,
    ) -> None:
        self.pad_id, self.packed, self.max_length = pad_id, packed, max_length
        self.build_mismatched = build_mismatched
        self.share_prompt = share_prompt  # prompts once, completions as suffixes (data.layout.shared_layout)

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        prompts = [r["prompt_ids"] for r in rows]
        chosen = [r["chosen_ids"] for r in rows]
        rejected = [r["rejected_ids"] for r in rows]
        if self.share_prompt:  # prompts once, 2B suffixes (chosen then rejected) on them
            batch = shared_layout(
                prompts,
                [chosen, rejected],
                pad_id=self.pad_id,
                max_length=self.max_length,
                mismatched=chosen if self.build_mismatched else None,
            )
        else:
            batch = layout(prompts + prompts, chosen + rejected, pad_id=self.pad_id, packed=self.packed)
        if self.build_mismatched and not self.share_prompt:
            order = mismatched_order(len(rows))
            batch.update(
                _prefixed(
                    "kl_",
                    layout(
                        prompts,
                        [chosen[j] for j in order],
                        pad_id=self.pad_id,
                        packed=self.packed,
                        max_length=self.max_length,
                    ),
                )
            )
        batch["h_w"] = torch.tensor([int(r.get("h_w", 0)) for r in rows], dtype=torch.long)
        batch["h_l"] = torch.tensor([int(r.get("h_l", 0)) for r in rows], dtype=torch.long)
        batch["margin"] = torch.tensor([float(r.get("margin", 0.0)) for r in rows], dtype=torch.float32)
        if "ref_chosen_logps" in rows[0]:
            batch["ref_chosen_logps"] = torch.tensor([r["ref_chosen_logps"] for r in rows], dtype=torch.float32)
            batch["ref_rejected_logps"] = torch.tensor([r["ref_rejected_logps"] for r in rows], dtype=torch.float32)
        batch["n"] = len(rows)
        return batch
