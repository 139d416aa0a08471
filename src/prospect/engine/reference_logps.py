"""Reference log-probs of many sequences, batched so that almost no padding is computed.

Two layouts, both under `torch.inference_mode` (a precompute: no gradients, no replay):

- `compute_reference_logps`: whole (prompt, completion) sequences sorted by length and cut into
  batches of at most ~`batch_tokens` padded tokens.
- `compute_prompt_shared_logps`: rows of one prompt and several completions (DPO: chosen and
  rejected; KTO: the row's completion and its mismatched one). Each prompt runs once. The
  prompts are sorted by length and cut into groups; within a group every completion is its own
  suffix row, gathering its prompt's keys and values, and the suffixes are sorted by length and
  cut where a new forward call costs less than the padding it saves (`suffix_batches`). Padding a
  row's completions to their common longest, as a training batch does, computed 1.5-1.6 times
  the real tokens on short rows; this layout computes ~1.1-1.25 times (docs/performance.md).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch

from prospect.data.layout import PREFIX, layout, prefix_layout, suffix_layout
from prospect.engine.logprobs import sequence_logps
from prospect.engine.prefix import prompt_states, suffix_logps

# A forward call's fixed cost (Python dispatch through every layer, small-matrix inefficiency), in
# tokens of work: one more call is worth it when it saves at least this much padding. Measured on
# SmolLM2-135M on CPU, where a call costs about as much as 32-64 tokens (docs/performance.md).
CALL_COST_TOKENS = 48


@contextmanager
def inference(model: Any) -> Iterator[Any]:
    """Eval mode and `torch.inference_mode` for the block; yields the model's device; restores train mode."""
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            yield next(model.parameters()).device
    finally:
        model.train(was_training)


def length_batches(lengths: Sequence[int], batch_tokens: int) -> list[list[int]]:
    """Indices sorted by length, cut into batches of at most ~`batch_tokens` padded tokens (n * longest)."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches: list[list[int]] = []
    for i in order:  # ascending: row i is the longest of its batch so far
        if batches and (len(batches[-1]) + 1) * lengths[i] <= batch_tokens:
            batches[-1].append(i)
        else:
            batches.append([i])
    return batches


def suffix_batches(widths: Sequence[int], batch_tokens: int, call_cost: int | None = None) -> list[list[int]]:
    """Indices of `widths` sorted by width and cut into contiguous runs of least total cost.

    A run of n suffixes whose widest is w costs n * w padded tokens plus `call_cost` (default
    `CALL_COST_TOKENS`); runs stay
    within `batch_tokens` padded tokens (a single wider suffix runs alone). Exact minimum over
    contiguous cuts of the sorted order, by dynamic programming: best[j] = min over i of
    best[i] + (j - i) * w[j - 1] + call_cost.
    """
    call_cost = CALL_COST_TOKENS if call_cost is None else call_cost
    order = sorted(range(len(widths)), key=lambda i: widths[i])
    w = [widths[i] for i in order]
    best = [0] + [0] * len(w)
    cut = [0] * (len(w) + 1)
    for j in range(1, len(w) + 1):
        best[j], cut[j] = best[j - 1] + w[j - 1] + call_cost, j - 1
        i = j - 2
        while i >= 0 and (j - i) * w[j - 1] <= batch_tokens:
            cost = best[i] + (j - i) * w[j - 1] + call_cost
            if cost < best[j]:
                best[j], cut[j] = cost, i
            i -= 1
    runs: list[list[int]] = []
    j = len(w)
    while j > 0:
        runs.append(order[cut[j] : j])
        j = cut[j]
    return runs[::-1]


def prompt_groups(prompt_lengths: Sequence[int], suffix_tokens: Sequence[int], batch_tokens: int) -> list[list[int]]:
    """Row indices sorted by prompt length, cut so that a group's padded prompts plus its suffix
    tokens stay within ~`batch_tokens` (a single larger row forms its own group)."""
    order = sorted(range(len(prompt_lengths)), key=lambda i: prompt_lengths[i])
    groups: list[list[int]] = []
    cur: list[int] = []
    suffix = 0
    for i in order:  # ascending: row i has the group's longest prompt so far
        if cur and (len(cur) + 1) * prompt_lengths[i] + suffix + suffix_tokens[i] > batch_tokens:
            groups.append(cur)
            cur, suffix = [], 0
        cur.append(i)
        suffix += suffix_tokens[i]
    if cur:
        groups.append(cur)
    return groups


def compute_reference_logps(
    ref_model: Any,
    sequences: list[tuple[list[int], list[int]]],
    *,
    pad_id: int,
    batch_tokens: int = 4096,
    desc: str = "Reference log-probs",
) -> torch.Tensor:
    """Summed completion log-probs of each (prompt_ids, completion_ids) under `ref_model`.

    Sequences are sorted by length and batched up to ~`batch_tokens` padded tokens, so
    almost no padding is computed.
    """
    from tqdm.auto import tqdm

    batches = length_batches([len(p) + len(c) for p, c in sequences], batch_tokens)
    out = torch.zeros(len(sequences), dtype=torch.float32)
    with inference(ref_model) as device:
        for idx in tqdm(batches, desc=desc, unit="batch"):
            b = layout([sequences[i][0] for i in idx], [sequences[i][1] for i in idx], pad_id=pad_id)
            b = {k: v.to(device) for k, v in b.items()}
            logps, _ = sequence_logps(ref_model, b, "", len(idx))
            out[torch.tensor(idx)] = logps.float().cpu()
    return out


def compute_prompt_shared_logps(
    ref_model: Any,
    rows: list[tuple[list[int], list[list[int]]]],
    *,
    pad_id: int,
    batch_tokens: int = 4096,
    desc: str = "Reference log-probs",
) -> list[torch.Tensor]:
    """Summed log-probs of every (prompt, [completion_0, ..., completion_{k-1}]) row's completions,
    each prompt run once (`engine.prefix`: equal to whole-sequence log-probs up to float rounding).

    Returns k tensors (n,): out[j][i] = log p(completion_j of row i | prompt of row i).
    """
    from tqdm.auto import tqdm

    k = len(rows[0][1]) if rows else 0
    out = [torch.zeros(len(rows), dtype=torch.float32) for _ in range(k)]
    # A suffix is the prompt's last token followed by the completion (`data.layout.suffix_layout`).
    groups = prompt_groups(
        [max(len(p) - 1, 0) for p, _ in rows], [sum(1 + len(c) for c in cs) for _, cs in rows], batch_tokens
    )
    with inference(ref_model) as device:
        for group in tqdm(groups, desc=desc, unit="batch"):
            prompts = [rows[i][0] for i in group]
            prefix = {key: v.to(device) for key, v in prefix_layout(prompts, pad_id=pad_id).items()}
            states = prompt_states(ref_model, prefix)  # per layer (G, kv_heads, P, head_dim)
            items = [(g, j) for g in range(len(group)) for j in range(k)]  # (row in group, completion)
            widths = [1 + len(rows[group[g]][1][j]) for g, j in items]
            for run in suffix_batches(widths, batch_tokens):
                owner = [items[r][0] for r in run]
                b = suffix_layout(
                    [prompts[g] for g in owner],
                    [rows[group[g]][1][j] for g, j in (items[r] for r in run)],
                    pad_id=pad_id,
                )
                b = {key: v.to(device) for key, v in b.items()}
                at = torch.tensor(owner, device=device)
                b[PREFIX + "attention_mask"] = prefix[PREFIX + "attention_mask"].index_select(0, at)
                gathered = [(keys.index_select(0, at), values.index_select(0, at)) for keys, values in states]
                logps, _ = suffix_logps(ref_model, b, gathered, "", len(run))
                for r, value in zip(run, logps.float().cpu().tolist()):
                    g, j = items[r]
                    out[j][group[g]] = value
    return out


def compute_paired_reference_logps(
    ref_model: Any,
    pairs: list[tuple[list[int], list[int], list[int]]],
    *,
    pad_id: int,
    batch_tokens: int = 4096,
    desc: str = "Reference log-probs",
) -> tuple[torch.Tensor, torch.Tensor]:
    """(first, second) summed completion log-probs of each (prompt, first, second), prompts run once:
    DPO's (prompt, chosen, rejected), KTO's (prompt, completion, mismatched completion)."""
    first, second = compute_prompt_shared_logps(
        ref_model, [(p, [a, b]) for p, a, b in pairs], pad_id=pad_id, batch_tokens=batch_tokens, desc=desc
    )
    return first, second
