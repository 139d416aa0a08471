"""Shared prompts: run each prompt once, then its completions on top of its keys and values.

A sequence (x, y) is split as prefix = x[:-1] and suffix = x[-1:] + y. The prefix runs once,
left-padded (attention mask + explicit position ids), with `use_cache=True`; its per-layer
keys and values (which keep their autograd graph when gradients are on) are then reused by
every suffix that shares the prompt:

- KTO: the main pass (x_i, y_i) with gradients, and the mismatched pass (x_i, y_{(i-1) mod n})
  on the same prefix, detached, without gradients: only suffix tokens are computed.
- DPO: the prefix once, its keys and values repeated for the 2B suffixes (chosen then rejected),
  so the prompt's forward and backward run once per pair instead of twice.

The last prompt token goes with the suffix so that every position whose logits predict a
completion token is in the suffix forward (LM head on completion positions only, through
`logits_to_keep`), and the prefix forward needs no LM head at all. Suffix position ids
continue from the prompt's length, and the suffix's attention mask is the prefix mask
followed by its own, so each token attends to exactly the tokens it attends to in the
unshared layout: log-probs and gradients equal `sequence_logps` on `data.layout.layout` up to
float rounding (tests/test_prefix_sharing.py).

Needs a decoder whose cache is a plain `DynamicCache` of full-attention layers (Llama,
Qwen2, Mistral without a sliding window, ...) and no gradient checkpointing (transformers
drops the cache inside checkpointed layers); `supports_prompt_sharing` says whether a model
qualifies, and the trainer falls back to the unshared path otherwise.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from prospect.data.layout import PREFIX
from prospect.engine.logprobs import token_logps


def supports_prompt_sharing(model: Any) -> bool:
    """True for decoders whose cache is full attention everywhere and that are not gradient-checkpointed."""
    base = model
    for attr in ("get_base_model",):
        if hasattr(base, attr):
            base = getattr(base, attr)()
    # transformers 5 renamed is_gradient_checkpointing (deprecated, warns) to is_activation_checkpointing
    checkpointing = (
        base.is_activation_checkpointing
        if hasattr(type(base), "is_activation_checkpointing")
        else getattr(base, "is_gradient_checkpointing", False)
    )
    if checkpointing:
        return False
    cfg = getattr(base, "config", None)
    if cfg is None or getattr(cfg, "is_encoder_decoder", False):
        return False
    text = cfg.get_text_config(decoder=True) if hasattr(cfg, "get_text_config") else cfg
    types = getattr(text, "layer_types", None)
    if types is not None and any(t != "full_attention" for t in types):
        return False
    if getattr(text, "sliding_window", None) and getattr(text, "use_sliding_window", True):
        return False
    return True


def prompt_states(model: Any, batch: dict[str, Any]) -> list[tuple[Tensor, Tensor]]:
    """Per-layer (keys, values), each (B, heads, P, head_dim), of the batch's prefixes.

    Keeps the autograd graph when gradients are enabled. An empty prefix (every prompt one
    token long) gives an empty list.
    """
    ids: Tensor = batch[PREFIX + "input_ids"]
    if ids.shape[1] == 0:
        return []
    from transformers import DynamicCache

    cache = DynamicCache()
    # logits_to_keep=1: the LM head runs on one position per row (no mask selects zero rows).
    model(
        input_ids=ids,
        attention_mask=batch[PREFIX + "attention_mask"],
        position_ids=batch[PREFIX + "position_ids"],
        past_key_values=cache,
        use_cache=True,
        logits_to_keep=1,
    )
    return [(layer.keys, layer.values) for layer in cache.layers]


def suffix_logps(
    model: Any,
    batch: dict[str, Any],
    states: list[tuple[Tensor, Tensor]],
    prefix: str,
    n: int,
    *,
    repeats: int = 1,
    detach: bool = False,
) -> tuple[Tensor, Tensor]:
    """Summed completion log-probs and lengths of the suffixes batch[prefix + ...] on the shared prompt states.

    Suffix row r continues prompt row r % B (states repeated `repeats` times along the batch:
    DPO's chosen then rejected). detach=True cuts the graph to the prompt (KTO's mismatched pass).
    Returns (logps (n,), lengths (n,)) like `sequence_logps`.
    """
    from transformers import DynamicCache

    input_ids: Tensor = batch[prefix + "input_ids"]
    seq_index: Tensor = batch[prefix + "seq_index"]
    prompt_mask: Tensor = batch[PREFIX + "attention_mask"]
    kv = []
    for k, v in states:
        if detach:
            k, v = k.detach(), v.detach()
        if repeats > 1:
            k, v = k.repeat(repeats, 1, 1, 1), v.repeat(repeats, 1, 1, 1)
        kv.append((k, v))
    # A fresh cache per use: DynamicCache.update concatenates in place of its own attributes,
    # so the shared tensors themselves are never modified.
    cache = DynamicCache(ddp_cache_data=kv) if kv else None
    mask = torch.cat([prompt_mask.repeat(repeats, 1), batch[prefix + "attention_mask"]], dim=1)
    target_owner = seq_index[:, 1:]
    is_target = target_owner >= 0
    keep = torch.zeros_like(seq_index, dtype=torch.bool)
    keep[:, :-1] = is_target
    out = model(
        input_ids=input_ids,
        attention_mask=mask,
        position_ids=batch[prefix + "position_ids"],
        past_key_values=cache,
        use_cache=cache is not None,
        logits_to_keep=keep,
    )
    logits = out.logits
    if logits.dim() == 3:  # a model that ignores a boolean logits_to_keep
        logits = logits[keep]
    tok = token_logps(logits, input_ids[:, 1:][is_target])
    owners = target_owner[is_target]
    logps = torch.zeros(n, dtype=tok.dtype, device=tok.device).index_add(0, owners, tok)
    return logps, torch.bincount(owners, minlength=n)
