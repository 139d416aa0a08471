"""Token ids -> tensor layouts: every arrangement of (prompt, completion) sequences the engine runs.

Two families, both pure functions of token-id lists:

- unshared (`layout`): each sequence prompt + completion on its own row, right-padded, or all
  packed into one row (position ids restarting per sequence, no padding). `seq_index[b, t]`
  says which sequence's *completion* the token at (b, t) belongs to (-1 for prompt and
  padding), so log-probs are summed per sequence the same way in both layouts
  (`prospect.engine.logprobs.sequence_logps`).
- shared prompts (`prefix_layout`, `suffix_layout`, `shared_layout`): each prompt once (its
  last token excluded, left-padded) and the completions as suffixes on top of its keys and
  values; `prospect.engine.prefix` runs them.

KTO's mismatched pairs pair prompt i with completion (i - 1) mod n, TRL's rotation
(x1, yn), (x2, y1), ... (`mismatched_order`), applied to whatever rows a batch holds, so the
sampler is free to group rows by length.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

PREFIX = "prefix_"  # batch keys of the shared prompts: prefix_input_ids, prefix_attention_mask, prefix_position_ids


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


def in_batches(order: Sequence[int], batch_size: int) -> list[list[int]]:
    """`order` cut into consecutive batches of `batch_size` rows (the last may be shorter), as a loader takes it."""
    return [list(order[i : i + batch_size]) for i in range(0, len(order), batch_size)]


def mismatched_partners(batches: Sequence[Sequence[int]], n_rows: int) -> list[int]:
    """For each row (in row order), the row whose completion a batch pairs with its prompt:
    in each batch the i-th row gets the completion of row (i - 1) mod len(batch). Rows in no
    batch (a dropped last batch) get -1."""
    partner = [-1] * n_rows
    for rows in batches:
        for i, j in enumerate(mismatched_order(len(rows))):
            partner[rows[i]] = rows[j]
    return partner


def mismatched_pairs(
    prompts: Sequence[Sequence[int]],
    completions: Sequence[Sequence[int]],
    batches: Sequence[Sequence[int]],
    max_length: int | None,
) -> list[tuple[list[int], list[int]]]:
    """The mismatched (prompt, completion) pair of every row, in row order, when a loader takes the
    rows in `batches` (every row in exactly one): in each batch the i-th row's prompt with the
    completion of row (i - 1) mod n, cut to `max_length` (`cut_to_length`, as `layout` cuts it)."""
    partner = mismatched_partners(batches, len(prompts))
    if -1 in partner:
        raise ValueError("mismatched_pairs: every row must be in a batch")
    return [cut_to_length(prompts[i], completions[j], max_length) for i, j in enumerate(partner)]


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


def prefix_layout(prompts: Sequence[Sequence[int]], *, pad_id: int) -> dict[str, Tensor]:
    """Left-padded prompts without their last token: prefix_{input_ids, attention_mask, position_ids} (B, P)."""
    heads = [list(p)[:-1] for p in prompts]
    width = max((len(h) for h in heads), default=0)
    ids = torch.full((len(heads), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(heads), width), dtype=torch.long)
    for b, h in enumerate(heads):
        if h:
            ids[b, width - len(h) :] = torch.tensor(h, dtype=torch.long)
            mask[b, width - len(h) :] = 1
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    return {PREFIX + "input_ids": ids, PREFIX + "attention_mask": mask, PREFIX + "position_ids": pos}


def suffix_layout(
    prompts: Sequence[Sequence[int]],
    completions: Sequence[Sequence[int]],
    *,
    pad_id: int,
    max_length: int | None = None,
    first_index: int = 0,
) -> dict[str, Tensor]:
    """Right-padded suffixes x[-1:] + y: input_ids, attention_mask, position_ids, seq_index (B, S).

    Position ids continue from len(x) - 1; seq_index marks completion tokens with their
    sequence number (first_index + b), -1 elsewhere. With max_length, a completion is cut so
    that len(x) + len(y) <= max_length (as `layout`).
    """
    rows = [cut_to_length(p, c, max_length) for p, c in zip(prompts, completions)]
    width = max(1 + len(c) for _, c in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    pos = torch.zeros((len(rows), width), dtype=torch.long)
    own = torch.full((len(rows), width), -1, dtype=torch.long)
    for b, (p, c) in enumerate(rows):
        s = p[-1:] + c
        ids[b, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[b, : len(s)] = 1
        pos[b, : len(s)] = torch.arange(len(p) - 1, len(p) - 1 + len(s))
        own[b, 1 : len(s)] = first_index + b
    return {"input_ids": ids, "attention_mask": mask, "position_ids": pos, "seq_index": own}


def shared_layout(
    prompts: Sequence[Sequence[int]],
    completion_sets: Sequence[Sequence[Sequence[int]]],
    *,
    pad_id: int,
    max_length: int | None = None,
    mismatched: Sequence[Sequence[int]] | None = None,
) -> dict[str, Tensor]:
    """A collated batch for the shared-prompt path.

    prefix_* (B, P): the prompts once. Main keys (input_ids, attention_mask, position_ids,
    seq_index): the suffixes of every completion set in turn (KTO: [completions], B rows; DPO:
    [chosen, rejected], 2B rows numbered 0..2B-1). kl_* (B rows): prompt i with
    mismatched[(i - 1) mod B] (TRL's rotation), cut to max_length as `layout` does.
    """
    batch = prefix_layout(prompts, pad_id=pad_id)
    k = len(completion_sets)
    batch.update(suffix_layout(list(prompts) * k, [c for cs in completion_sets for c in cs], pad_id=pad_id))
    if mismatched is not None:
        rotated = [mismatched[j] for j in mismatched_order(len(prompts))]
        batch.update(
            {"kl_" + key: v for key, v in suffix_layout(prompts, rotated, pad_id=pad_id, max_length=max_length).items()}
        )
    return batch
