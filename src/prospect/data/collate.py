"""Tokenized rows -> model batches.

A batch describes N sequences laid out either padded (one row each, right-padded) or
packed (all in one row, position ids restarting per sequence, no padding). Either way
`seq_index[b, t]` says which sequence's *completion* the token at (b, t) belongs to
(-1 for prompt and padding tokens), so log-probs are summed per sequence the same way
in both layouts (`prospect.engine.logprobs.sequence_logps`).

KTO's mismatched pairs are built here, inside each batch as it is formed: prompt i is
paired with completion (i - 1) mod n, TRL's rotation (x1, yn), (x2, y1), ..., so the
sampler is free to group rows by length and any batch order gives valid pairs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch


def mismatched_order(n: int) -> list[int]:
    """Completion index paired with prompt i: (i - 1) mod n (TRL's KL pairing)."""
    return [(i - 1) % n for i in range(n)]


def cut_to_length(
    prompt: Sequence[int], completion: Sequence[int], max_length: int | None
) -> tuple[list[int], list[int]]:
    """(prompt, completion) as lists, the completion cut so that len(prompt) + len(completion) <= max_length."""
    p, c = list(prompt), list(completion)
    if max_length is not None and len(p) + len(c) > max_length:
        c = c[: max(max_length - len(p), 0)]
    return p, c


def eval_order(lengths: Sequence[int]) -> list[int]:
    """The order the evaluation loader takes rows in (one process): longest first, ties in file order.

    Fixed and seed-free, so the in-batch mismatched pairs of every eval batch are known before
    training (their reference log-probs are precomputed) and padding stays low.
    """
    return sorted(range(len(lengths)), key=lambda i: -lengths[i])


def eval_mismatched_pairs(
    prompts: Sequence[Sequence[int]],
    completions: Sequence[Sequence[int]],
    batch_size: int,
    max_length: int | None,
    order: Sequence[int],
) -> list[tuple[list[int], list[int]]]:
    """The mismatched (prompt, completion) pair of every row, in row order, when a loader takes the
    rows in `order`, `batch_size` at a time: in each batch the i-th row's prompt with the
    completion of row (i - 1) mod n, cut to `max_length` (`cut_to_length`, as `layout` cuts it)."""
    out: list[tuple[list[int], list[int]] | None] = [None] * len(prompts)
    for start in range(0, len(order), batch_size):
        rows = list(order[start : start + batch_size])
        for i, j in enumerate(mismatched_order(len(rows))):
            out[rows[i]] = cut_to_length(prompts[rows[i]], completions[rows[j]], max_length)
    return [pair for pair in out if pair is not None]


def layout(
    prompts: Sequence[Sequence[int]],
    completions: Sequence[Sequence[int]],
    *,
    pad_id: int,
    packed: bool = False,
    max_length: int | None = None,
) -> dict[str, torch.Tensor]:
    """Lay out prompt+completion sequences as model inputs.

    Returns input_ids (B, T) and seq_index (B, T); padded layouts add attention_mask (B, T),
    packed ones position_ids (1, T_total) instead (B = 1).
    """
    seqs, owners = [], []
    for i, (p, c) in enumerate(zip(prompts, completions)):
        p, c = cut_to_length(p, c, max_length)
        seqs.append(p + c)
        owners.append([-1] * len(p) + [i] * len(c))
    if packed:
        ids = [t for s in seqs for t in s]
        own = [o for ow in owners for o in ow]
        pos = [j for s in seqs for j in range(len(s))]
        return {
            "input_ids": torch.tensor([ids], dtype=torch.long),
            "position_ids": torch.tensor([pos], dtype=torch.long),
            "seq_index": torch.tensor([own], dtype=torch.long),
        }
    width = max(len(s) for s in seqs)
    input_ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(seqs), width), dtype=torch.long)
    seq_index = torch.full((len(seqs), width), -1, dtype=torch.long)
    for b, (s, ow) in enumerate(zip(seqs, owners)):
        input_ids[b, : len(s)] = torch.tensor(s, dtype=torch.long)
        attention_mask[b, : len(s)] = 1
        seq_index[b, : len(s)] = torch.tensor(ow, dtype=torch.long)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "seq_index": seq_index}


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
        self.share_prompt = share_prompt  # [prefix-sharing] layout of engine/prefix.py

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        prompts = [r["prompt_ids"] for r in rows]
        completions = [r["completion_ids"] for r in rows]
        if self.share_prompt:  # [prefix-sharing] prompts once (prefix_*), suffixes as the main and kl_ keys
            from prospect.engine.prefix import shared_layout

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
            batch["ref_kl_logps"] = torch.tensor([r["ref_kl_logps"] for r in rows], dtype=torch.float32)
        batch["n"] = len(rows)
        return batch


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
        self.share_prompt = share_prompt  # [prefix-sharing] layout of engine/prefix.py

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        prompts = [r["prompt_ids"] for r in rows]
        chosen = [r["chosen_ids"] for r in rows]
        rejected = [r["rejected_ids"] for r in rows]
        if self.share_prompt:  # [prefix-sharing] prompts once, 2B suffixes (chosen then rejected) on them
            from prospect.engine.prefix import shared_layout

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
