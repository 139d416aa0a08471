"""Shared prompts: run each prompt once, then its completions on top of its keys and values.

A sequence (x, y) is split as prefix = x[:-1] and suffix = x[-1:] + y. The prefix runs once,
left-padded (attention mask + explicit position ids), into a cache passed explicitly; its per-layer
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

Gradient checkpointing keeps prompt sharing. transformers drops the cache inside a
checkpointed layer, because the backward pass replays the layer's forward and a
`DynamicCache` would be appended to a second time. The caches here are replay-safe instead:
the prompt pass *records* each layer's keys and values (a replay overwrites them with equal
tensors), and the suffix pass *reads* them (each call returns prompt + suffix keys without
storing anything). With those, `enable_checkpointing` lets each decoder layer keep its cache
under checkpointing (transformers' `_can_checkpoint_with_cache`): the prompt runs once in the
forward pass and is recomputed at most once in the backward pass.

Needs a decoder whose cache is a `DynamicCache` of full-attention layers (Llama, Qwen2,
Mistral without a sliding window, ...); `supports_prompt_sharing` says whether a model
qualifies, and the trainer falls back to the unshared path otherwise.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from transformers import DynamicCache
from transformers.cache_utils import Cache, DynamicLayer

from prospect.data.layout import PREFIX
from prospect.engine.logprobs import token_logps


class _PromptLayer(DynamicLayer):
    """Records one layer's prompt keys/values; a replay (checkpoint recompute) overwrites them with equal ones."""

    def update(self, key_states: Tensor, value_states: Tensor, *args: Any, **kwargs: Any) -> tuple[Tensor, Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        self.keys, self.values = key_states, value_states
        return key_states, value_states


class _SharedPromptLayer(DynamicLayer):
    """Holds one layer's prompt keys/values; `update` returns prompt + new states and stores nothing."""

    def __init__(self, keys: Tensor, values: Tensor) -> None:
        super().__init__()
        self.lazy_initialization(keys, values)
        self.keys, self.values = keys, values

    def update(self, key_states: Tensor, value_states: Tensor, *args: Any, **kwargs: Any) -> tuple[Tensor, Tensor]:
        return torch.cat([self.keys, key_states], dim=-2), torch.cat([self.values, value_states], dim=-2)


class ReplaySafeCache(DynamicCache):
    """A DynamicCache whose updates give the same result however often a layer's forward runs."""

    def __init__(self, states: list[tuple[Tensor, Tensor]] | None = None) -> None:
        if states is None:  # the prompt pass: one recording layer per decoder layer, made on first use
            Cache.__init__(self, layer_class_to_replicate=_PromptLayer)
        else:  # the suffix pass: the prompt's states, read-only
            Cache.__init__(self, layers=[_SharedPromptLayer(k, v) for k, v in states])


def decoder_layers(model: Any) -> list[Any]:
    """The model's checkpointable decoder layers, first to last."""
    from transformers.modeling_layers import GradientCheckpointingLayer

    return [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer)]


def keep_cache_under_checkpointing(model: Any) -> None:
    """Let every checkpointed decoder layer keep the (replay-safe) cache the shared-prompt path passes it."""
    for layer in decoder_layers(model):
        layer._can_checkpoint_with_cache = True


def supports_prompt_sharing(model: Any) -> bool:
    """True for decoders whose cache is full attention everywhere (with or without gradient checkpointing)."""
    base = model
    for attr in ("get_base_model",):
        if hasattr(base, attr):
            base = getattr(base, attr)()
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
    cache = ReplaySafeCache()
    # logits_to_keep=1: the LM head runs on one position per row (no mask selects zero rows).
    model(
        input_ids=ids,
        attention_mask=batch[PREFIX + "attention_mask"],
        position_ids=batch[PREFIX + "position_ids"],
        past_key_values=cache,
        use_cache=False,  # the layers write into the cache we pass; False: no model-built cache, no warning
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
    # Read-only: the shared tensors are never modified, and a checkpointed layer may replay its forward.
    cache = ReplaySafeCache(kv) if kv else None
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
        use_cache=False,  # the layers read the cache we pass
        logits_to_keep=keep,
    )
    logits = out.logits
    if logits.dim() == 3:  # a model that ignores a boolean logits_to_keep
        logits = logits[keep]
    tok = token_logps(logits, input_ids[:, 1:][is_target])
    owners = target_owner[is_target]
    logps = torch.zeros(n, dtype=tok.dtype, device=tok.device).index_add(0, owners, tok)
    return logps, torch.bincount(owners, minlength=n)
