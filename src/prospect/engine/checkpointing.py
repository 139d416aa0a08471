"""Gradient checkpointing: on, off, or as many decoder layers as a step's activation budget needs.

`optimization.use_gradient_checkpointing: auto` (the default) checkpoints the fewest decoder
layers that bring the activations a training step keeps for its backward pass within
`optimization.activation_budget_gb`; `true` checkpoints every layer, `false` none. The estimate
is for the largest batch the data can form (the `batch_size` longest rows):

    activation bytes ~= layers x tokens x (10 * hidden + 2 * intermediate) x bytes per value

`tokens` counts every token that runs with gradients (prompt + completion for unpaired rows;
prompt + chosen + rejected for pairs). The per-token figure was calibrated on SmolLM2-135M in
float32 (a 1024-token KTO step at batch 8 kept 8.5 GiB of activations; the formula gives 8.1 GiB).
A checkpointed layer keeps only its input (tokens x hidden values) and replays its forward in
the backward pass, so with L layers of which k are checkpointed:

    kept(k) = (L - k) * a + k * c,   a = per-layer activations, c = tokens x hidden x bytes
    k       = smallest k with kept(k) <= budget  (0 when everything fits, L when nothing does)

Each checkpointed layer costs one more forward of that layer, so checkpointing half the layers
costs half the recompute of checkpointing all of them. Checkpointing keeps prompt sharing
(`engine.prefix.keep_cache_under_checkpointing`): the prompt runs once forward and is recomputed
once in the backward pass of a checkpointed layer.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from prospect.engine.prefix import decoder_layers, keep_cache_under_checkpointing

log = logging.getLogger("prospect")

_GIB = 1024**3


def _dims(model: Any) -> tuple[int, int, int]:
    """(decoder layers, hidden size, intermediate size) of the model's text decoder (0 where unknown)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    cfg = base.config
    text = cfg.get_text_config(decoder=True) if hasattr(cfg, "get_text_config") else cfg
    hidden = int(getattr(text, "hidden_size", 0) or 0)
    inter = int(getattr(text, "intermediate_size", 0) or 4 * hidden)
    return int(getattr(text, "num_hidden_layers", 0) or 0), hidden, inter


def activation_bytes(model: Any, tokens: int) -> int:
    """Estimated bytes of activations kept for the backward pass of `tokens` tokens (module docstring)."""
    layers, hidden, inter = _dims(model)
    return layers * tokens * (10 * hidden + 2 * inter) * _bytes_per_value(model)


def _bytes_per_value(model: Any) -> int:
    param = next(model.parameters())
    return 4 if param.dtype.is_floating_point and param.element_size() >= 4 else 2


def largest_batch_tokens(train_ds: Any, batch_size: int, paired: bool) -> int:
    """Tokens with gradients in the batch of the `batch_size` longest rows (pairs: prompt + chosen + rejected)."""
    if paired:
        cols = train_ds.select_columns(["prompt_ids", "chosen_ids", "rejected_ids"])
        sizes = [len(r["prompt_ids"]) + len(r["chosen_ids"]) + len(r["rejected_ids"]) for r in cols]
    else:
        cols = train_ds.select_columns(["prompt_ids", "completion_ids"])
        sizes = [len(r["prompt_ids"]) + len(r["completion_ids"]) for r in cols]
    return sum(sorted(sizes, reverse=True)[:batch_size])


def checkpointed_layers_for(model: Any, tokens: int, budget_gb: float) -> int:
    """The fewest decoder layers to checkpoint so that `tokens` keep at most `budget_gb` (module docstring)."""
    layers, hidden, _ = _dims(model)
    if layers == 0:
        return 0
    per_layer = activation_bytes(model, tokens) / layers  # a
    kept_input = tokens * hidden * _bytes_per_value(model)  # c
    over = layers * per_layer - budget_gb * _GIB
    if over <= 0:
        return 0
    if per_layer <= kept_input:  # checkpointing saves nothing per layer: all of them is the best there is
        return layers
    return min(layers, math.ceil(over / (per_layer - kept_input)))


def choose_checkpointing(cfg: Any, model: Any, train_ds: Any, paired: bool) -> dict[str, Any]:
    """How many decoder layers this run checkpoints, and why (recorded in results.json)."""
    setting = cfg.optimization.use_gradient_checkpointing
    budget = cfg.optimization.activation_budget_gb
    tokens = largest_batch_tokens(train_ds, cfg.training.batch_size, paired)
    estimate = activation_bytes(model, tokens) / _GIB
    total = _dims(model)[0]
    if setting == "auto":
        layers = checkpointed_layers_for(model, tokens, budget)
    else:
        layers = total if setting else 0
    note = {
        "setting": setting,
        "enabled": layers > 0,
        "layers": layers,
        "of_layers": total,
        "estimated_activation_gb": round(estimate, 6),
        "budget_gb": budget if setting == "auto" else None,
        "largest_batch_tokens": tokens,
    }
    if setting == "auto":
        log.info(
            "gradient checkpointing on %d of %d layers: the largest batch (%d tokens) would keep ~%.2f GiB of "
            "activations; the budget is %.2f GiB (optimization.activation_budget_gb)",
            layers, total, tokens, estimate, budget,
        )  # fmt: skip
    return note


def enable_checkpointing(model: Any, *, share_prompt: bool, layers: int | None = None) -> None:
    """Non-reentrant activation checkpointing on the first `layers` decoder layers (None: all of them).

    Shared prompts keep their cache. The layers left out keep their activations and skip the replay.
    """
    if hasattr(model, "activation_checkpointing_enable"):  # transformers 5 (the old name warns)
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    base.config.use_cache = False
    if hasattr(model, "enable_input_require_grads"):
        # Frozen embeddings give checkpointed blocks inputs without grad; this restores them.
        model.enable_input_require_grads()
    if share_prompt:
        keep_cache_under_checkpointing(model)
    if layers is not None:
        for layer in decoder_layers(model)[layers:]:
            layer.gradient_checkpointing = False
