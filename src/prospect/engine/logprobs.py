"""Per-sequence completion log-probs: sum over completion tokens of log pi(y_t | x, y_<t).

Only completion positions go through the LM head (transformers' `logits_to_keep` with a
boolean mask), and log-softmax is taken in chunks of rows, so a 49k-token vocabulary
never materialises logits for prompt or padding positions.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

LOGSOFTMAX_CHUNK = 1024  # rows of logits per log-softmax chunk


def token_logps(logits: Tensor, targets: Tensor) -> Tensor:
    """log softmax(logits)[target] per row, in float32, chunked over rows. logits (K, V), targets (K,)."""
    out = []
    for start in range(0, logits.shape[0], LOGSOFTMAX_CHUNK):
        chunk = logits[start : start + LOGSOFTMAX_CHUNK].float()
        tgt = targets[start : start + LOGSOFTMAX_CHUNK]
        out.append(chunk.gather(-1, tgt[:, None]).squeeze(-1) - torch.logsumexp(chunk, dim=-1))
    return torch.cat(out) if out else logits.new_zeros(0, dtype=torch.float32)


def sequence_logps(model: Any, batch: dict[str, Any], prefix: str = "", n: int | None = None) -> tuple[Tensor, Tensor]:
    """Summed completion log-probs and completion lengths per sequence.

    batch[prefix + "input_ids"]: (B, T); batch[prefix + "seq_index"]: (B, T), the sequence a
    completion token belongs to, -1 elsewhere; plus attention_mask (padded) or position_ids (packed).
    Returns (logps (n,), lengths (n,)).
    """
    input_ids: Tensor = batch[prefix + "input_ids"]
    seq_index: Tensor = batch[prefix + "seq_index"]
    n = int(n if n is not None else int(seq_index.max().item()) + 1)
    target_owner = seq_index[:, 1:]  # (B, T-1): owner of the token predicted at each position
    is_target = target_owner >= 0
    # Positions whose logits predict a completion token: t where token t+1 is a completion token.
    keep = torch.zeros_like(seq_index, dtype=torch.bool)
    keep[:, :-1] = is_target
    kwargs: dict[str, Any] = {"input_ids": input_ids, "use_cache": False, "logits_to_keep": keep}
    if prefix + "attention_mask" in batch:
        kwargs["attention_mask"] = batch[prefix + "attention_mask"]
    if prefix + "position_ids" in batch:
        kwargs["position_ids"] = batch[prefix + "position_ids"]
    logits = model(**kwargs).logits  # (K, V): K completion tokens, row-major order
    if logits.dim() == 3:  # a model that ignores a boolean logits_to_keep returns (B, T, V)
        logits = logits[keep]
    targets = input_ids[:, 1:][is_target]  # (K,)
    owners = target_owner[is_target]  # (K,)
    tok = token_logps(logits, targets)
    logps = torch.zeros(n, dtype=tok.dtype, device=tok.device).index_add(0, owners, tok)
    lengths = torch.bincount(owners, minlength=n)
    return logps, lengths
