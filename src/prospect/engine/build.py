"""Assemble the Trainer of a run from what the loss says it needs.

The loss object decides (never the method's name):
- `loss.kind` -> which collator lays the rows out (unpaired rows or chosen/rejected pairs);
- `loss.needs_reference_point` -> a z0 estimator (`kto.reference_point`), hence the in-batch
  mismatched pairs (kl_*) unless the estimator is `zero`; with `window_mismatch` on unpaired
  rows, the trainer that builds them across the accumulation window;
- `loss.needs_reference` -> whether reference log-probs are computed at all.
Prompts run once (`training.share_prompt`) where that is exact: a full-attention decoder and
no packing (engine/prefix.py), with or without gradient checkpointing (engine/checkpointing.py).
"""

from __future__ import annotations

import logging
from typing import Any

from prospect.config.schema import RunConfig
from prospect.data.collate import PairedCollator, UnpairedCollator
from prospect.data.layout import eval_order, in_batches
from prospect.data.tokenize import row_groups, row_shapes
from prospect.engine.batch_plan import PaddedCost
from prospect.engine.checkpointing import enable_checkpointing
from prospect.engine.dist import distributed_mean, fsdp_requested, world_size
from prospect.engine.order import planned_train_batches
from prospect.engine.prefix import supports_prompt_sharing
from prospect.engine.trainer import PreferenceTrainer
from prospect.engine.window import WindowMismatchTrainer, WindowRowsCollator
from prospect.losses import build_reference_point

log = logging.getLogger("prospect")


def needs_reference(cfg: RunConfig, loss: Any) -> bool:
    """False when no reference log-probs are needed: `reference_free: true`, or a reference-free loss."""
    return bool(getattr(loss, "needs_reference", True)) and not cfg.method_section.reference_free


def builds_mismatched(cfg: RunConfig, loss: Any) -> bool:
    """True when batches carry mismatched (prompt_i, completion_j) pairs: the loss needs z0 and it is estimated."""
    if not getattr(loss, "needs_reference_point", False):
        return False  # e.g. kto.loss_type apo_zero_unpaired: no z0, no mismatched pass
    estimator = getattr(loss, "reference_point", None) or build_reference_point(cfg.kto.reference_point)
    return bool(estimator.needs_mismatched)


def padding_cost(cfg: RunConfig, loss: Any, model: Any) -> PaddedCost:
    """The padded compute of a training batch in this run's layout, which length-grouped batches are
    composed to minimise (`engine.batch_plan`): suffix rows per prompt as the loss needs them
    (pairs: chosen and rejected; the mismatched completion, forward only, counts half)."""
    suffixes = 2.0 if loss.kind == "paired" else 1.0
    if builds_mismatched(cfg, loss):
        suffixes += 0.5
    return PaddedCost(suffix_weight=suffixes, shared_prompt=share_prompt(cfg, model, quiet=True))


def planned_mismatched_batches(
    cfg: RunConfig, loss: Any, args: Any, kind: str, train: Any, validation: Any, cost: PaddedCost
) -> dict[str, list[list[int]]]:
    """{split: batches} of the unpaired splits whose loader batches, hence in-batch mismatched pairs,
    are known before training, so that their reference log-probs can be precomputed (with
    `precompute_ref_log_probs` on or off the training batches are the same).

    One process only (several shard and pad batches at run time). Validation: the fixed eval order
    (`data.layout.eval_order`) cut into eval batches. Training: the planned micro-batches
    (`engine.order.planned_train_batches`, composed for `cost`; the trainer then keeps their
    composition every epoch), unless z0 pairs rows across the accumulation window
    (`window_mismatch`, engine/window.py).
    """
    if kind != "unpaired" or not builds_mismatched(cfg, loss) or world_size() > 1:
        return {}
    out = {}
    if cfg.kto.reference_point != "window_mismatch":
        out["train"] = planned_train_batches(args, row_shapes(train), cost, row_groups(train))
    if validation is not None:
        # the order PreferenceTrainer._get_eval_sampler takes (validation rows carry `length`)
        out["validation"] = in_batches(eval_order(validation["length"]), args.per_device_eval_batch_size)
    return out


def share_prompt(cfg: RunConfig, model: Any, quiet: bool = False) -> bool:
    """Whether prompts run once per row (exact only where `supports_prompt_sharing` says so).

    Not under FSDP: the prompts' cached keys and values reach the loss without passing through
    the outputs of the sharded decoder layers, where FSDP-2 hooks the re-gathering of their weights
    for the backward pass, so the backward would meet freed weights.
    """
    wanted = cfg.training.share_prompt and not cfg.training.padding_free and supports_prompt_sharing(model)
    if wanted and fsdp_requested():
        if not quiet:
            log.info("training.share_prompt: off under FSDP (prompts run with each completion)")
        return False
    return wanted


def build_trainer(
    cfg: RunConfig,
    *,
    model: Any,
    ref_model: Any,
    tokenizer: Any,
    loss: Any,
    args: Any,
    train_dataset: Any,
    eval_dataset: Any,
    max_length: int,
    checkpointing: int = 0,
    train_batches: list[list[int]] | None = None,
) -> PreferenceTrainer:
    """The run's PreferenceTrainer (or WindowMismatchTrainer) with its collator and z0 estimator.

    checkpointing: how many decoder layers of `model` to checkpoint (`engine.checkpointing.choose_checkpointing`).
    train_batches: the planned micro-batches (`planned_mismatched_batches`), kept every epoch.
    """
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    mismatched = builds_mismatched(cfg, loss)
    shared = share_prompt(cfg, model)
    if checkpointing > 0:
        enable_checkpointing(model, share_prompt=shared, layers=checkpointing)
    collator_cls = UnpairedCollator if loss.kind == "unpaired" else PairedCollator
    collator: Any = collator_cls(
        pad_id=pad_id,
        packed=cfg.training.padding_free,
        max_length=max_length,
        build_mismatched=mismatched,
        share_prompt=shared,
    )
    z0_estimator = (
        build_reference_point(cfg.kto.reference_point, reduce=distributed_mean)
        if getattr(loss, "needs_reference_point", False)
        else None
    )
    trainer_cls: type[PreferenceTrainer] = PreferenceTrainer
    extra: dict[str, Any] = {}
    if loss.kind == "unpaired" and mismatched and cfg.kto.reference_point == "window_mismatch":
        # z0 from mismatched pairs across the accumulation window (engine/window.py)
        trainer_cls, collator = WindowMismatchTrainer, WindowRowsCollator(collator)
    elif train_batches is not None:
        extra["train_batches"] = train_batches
    extra["padding_cost"] = padding_cost(cfg, loss, model)
    return trainer_cls(
        model=model,
        args=args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        data_collator=collator,
        processing_class=tokenizer,
        loss_fn=loss,
        z0_estimator=z0_estimator,
        ref_model=ref_model,
        reference_free=not needs_reference(cfg, loss),
        max_nonfinite_steps=cfg.training.max_nonfinite_steps,
        **extra,
    )
