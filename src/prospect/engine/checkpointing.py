"""Gradient checkpointing: on, off, or chosen from a step's estimated activation memory.

`optimization.use_gradient_checkpointing: auto` (the default) turns it on when the activations
a training step keeps for its backward pass would exceed `optimization.activation_budget_gb`.
The estimate is for the largest batch the data can form (the `batch_size` longest rows):

    activation bytes ~= layers x tokens x (10 * hidden + 2 * intermediate) x bytes per value

`tokens` counts every token that runs with gradients (prompt + completion for unpaired rows;
prompt + chosen + rejected for pairs). The per-token figure was calibrated on SmolLM2-135M in
float32 (a 1024-token KTO step at batch 8 kept 8.5 GiB of activations; the formula gives 8.1 GiB).
Checkpointing keeps prompt sharing (`engine.prefix.keep_cache_under_checkpointing`): the prompt
runs once forward and is recomputed once in the backward pass.
"""

from __future__ import annotations

import logging
from typing import Any

from prospect.engine.prefix import keep_cache_under_checkpointing

log = logging.getLogger("prospect")

_GIB = 1024**3


def _text_config(model: Any) -> Any:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    cfg = base.config
    return cfg.get_text_config(decoder=True) if hasattr(cfg, "get_text_config") else cfg


def activation_bytes(model: Any, tokens: int) -> int:
    """Estimated bytes of activations kept for the backward pass of `tokens` tokens (module docstring)."""
    text = _text_config(model)
    hidden = int(getattr(text, "hidden_size", 0) or 0)
    inter = int(getattr(text, "intermediate_size", 0) or 4 * hidden)
    layers = int(getattr(text, "num_hidden_layers", 0) or 0)
    param = next(model.parameters())
    per_value = 4 if param.dtype.is_floating_point and param.element_size() >= 4 else 2
    return layers * tokens * (10 * hidden + 2 * inter) * per_value


def largest_batch_tokens(train_ds: Any, batch_size: int, paired: bool) -> int:
    """Tokens with gradients in the batch of the `batch_size` longest rows (pairs: prompt + chosen + rejected)."""
    if paired:
        cols = train_ds.select_columns(["prompt_ids", "chosen_ids", "rejected_ids"])
        sizes = [len(r["prompt_ids"]) + len(r["chosen_ids"]) + len(r["rejected_ids"]) for r in cols]
    else:
        cols = train_ds.select_columns(["prompt_ids", "completion_ids"])
        sizes = [len(r["prompt_ids"]) + len(r["completion_ids"]) for r in cols]
    return sum(sorted(sizes, reverse=True)[:batch_size])


def choose_checkpointing(cfg: Any, model: Any, train_ds: Any, paired: bool) -> dict[str, Any]:
    """Whether this run checkpoints, and why (recorded in results.json)."""
    setting = cfg.optimization.use_gradient_checkpointing
    budget = cfg.optimization.activation_budget_gb
    tokens = largest_batch_tokens(train_ds, cfg.training.batch_size, paired)
    estimate = activation_bytes(model, tokens) / _GIB
    enabled = estimate > budget if setting == "auto" else bool(setting)
    note = {
        "setting": setting,
        "enabled": enabled,
        "estimated_activation_gb": round(estimate, 3),
        "budget_gb": budget if setting == "auto" else None,
        "largest_batch_tokens": tokens,
    }
    if setting == "auto":
        log.info(
            "gradient checkpointing %s: the largest batch (%d tokens) keeps ~%.2f GiB of activations, %s the "
            "%.2f GiB budget (optimization.activation_budget_gb)",
            "on" if enabled else "off", tokens, estimate, "over" if enabled else "within", budget,
        )  # fmt: skip
    return note


def enable_checkpointing(model: Any, *, share_prompt: bool) -> None:
    """Non-reentrant activation checkpointing on every decoder layer; shared prompts keep their cache."""
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
