"""Config -> the settings objects of the libraries a run uses.

- `training_args`: `transformers.TrainingArguments` of a run (optimizer, schedule,
  checkpointing, evaluation, trackers, precision, data-parallel on CPU). Settings only
  transformers can judge (an unknown optimizer or scheduler) are refused here, as a one-line
  `ConfigError`, before any model loads.
- `tokenize_settings`: the `TokenizeSettings` training (and `prospect eval`) tokenize with,
  max_length capped at the model's context.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from prospect.config.schema import RunConfig
from prospect.data.tokenize import TokenizeSettings
from prospect.engine import dist
from prospect.engine.rundir import safe_name
from prospect.errors import ConfigError

log = logging.getLogger("prospect")


def tokenize_settings(cfg: RunConfig, model: Any = None) -> TokenizeSettings:
    """Length and template settings of `cfg`; max_length capped at `model`'s context (with a warning)."""
    sec = cfg.method_section
    max_len = cfg.effective_max_length
    ctx = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    if isinstance(ctx, int) and 0 < ctx < max_len:
        log.warning(
            "max_length %d exceeds the model's context of %d tokens; sequences are capped at %d", max_len, ctx, ctx
        )
        max_len = ctx
    use_chat = cfg.data.conversation_template != "none" and cfg.data.apply_chat_template is not False
    return TokenizeSettings(
        max_length=max_len,
        max_prompt_length=min(sec.max_prompt_length, max_len),
        max_completion_length=sec.max_target_length,
        truncation_mode=sec.truncation_mode,
        use_chat_template=use_chat,
        add_special_tokens=cfg.data.add_special_tokens,
    )


def tracker_environment(cfg: RunConfig, run_dir: Path) -> list[str]:
    """The trackers to report to; sets their environment (W&B offline, MLflow local store) unless already set."""
    lg = cfg.logging
    report_to = list(dict.fromkeys(lg.report_to + (["wandb"] if lg.use_wandb else [])))
    if "wandb" in report_to:
        os.environ.setdefault("WANDB_MODE", lg.wandb_mode)
        if lg.wandb_project:
            os.environ.setdefault("WANDB_PROJECT", lg.wandb_project)
        if lg.entity:
            os.environ.setdefault("WANDB_ENTITY", lg.entity)
        os.environ.setdefault("WANDB_DIR", str(run_dir))
    if "mlflow" in report_to:
        uri = os.environ.setdefault(
            "MLFLOW_TRACKING_URI", lg.mlflow_tracking_uri or (run_dir.parent / "mlruns").as_uri()
        )
        if uri.startswith("file:") or "://" not in uri:
            # MLflow >= 3.x refuses a plain directory store unless asked; it is the one store that
            # needs no server and no SQL driver (mlflow-skinny has none), so it is our default.
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    return report_to


def _evaluation_kwargs(cfg: RunConfig, has_eval: bool) -> dict[str, Any]:
    """Evaluation, checkpointing and best-model settings (they depend on one another)."""
    t, ev = cfg.training, cfg.evaluation
    eval_steps = t.eval_steps or ev.eval_interval
    load_best = bool(ev.save_best_only and has_eval and eval_steps)
    save_steps = t.save_steps
    if load_best and save_steps % eval_steps:
        # Keeping the best checkpoint needs one saved at every evaluation (Trainer refuses otherwise).
        log.info(
            "evaluation.save_best_only: checkpointing at every evaluation (every %d steps, not %d)",
            eval_steps,
            save_steps,
        )
        save_steps = eval_steps
    selects = has_eval and eval_steps and (ev.save_best_only or t.early_stopping_patience)
    return dict(
        save_strategy="steps",
        save_steps=save_steps,
        save_total_limit=1 if ev.save_best_only else t.save_total_limit,
        eval_strategy="steps" if (has_eval and eval_steps) else "no",
        eval_steps=eval_steps,
        load_best_model_at_end=load_best,
        metric_for_best_model=ev.metric_for_best_model if selects else None,
        greater_is_better=ev.greater_is_better,
    )


def training_args(cfg: RunConfig, run_dir: Path, has_eval: bool) -> Any:
    """The run's `TrainingArguments`; ConfigError when transformers refuses a setting."""
    import torch
    from transformers import TrainingArguments

    t, o = cfg.training, cfg.optimization
    bf16 = o.bf16 and (not torch.cuda.is_available() or torch.cuda.is_bf16_supported())
    if o.bf16 and not bf16:
        log.warning("bf16 requested but not supported on this device; training in float32")
    kwargs: dict[str, Any] = dict(
        output_dir=str(run_dir / "checkpoints"),
        per_device_train_batch_size=t.batch_size,
        per_device_eval_batch_size=t.eval_batch_size or t.batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        learning_rate=t.learning_rate,
        num_train_epochs=t.num_epochs,
        max_steps=t.max_steps,
        warmup_steps=t.warmup_steps if t.warmup_steps > 0 else t.warmup_ratio,
        lr_scheduler_type=t.lr_scheduler_type,
        weight_decay=t.weight_decay,
        max_grad_norm=t.max_grad_norm,
        optim=t.optim,
        seed=t.seed,
        data_seed=t.seed,
        logging_steps=t.logging_steps,
        report_to=tracker_environment(cfg, run_dir) or "none",
        run_name=safe_name("_".join(x for x in [cfg.logging.run_prefix, run_dir.name] if x)),
        remove_unused_columns=False,
        # training.shuffle: false keeps the file order (and overrides group_by_length)
        train_sampling_strategy=(
            "sequential" if not t.shuffle else "group_by_length" if t.group_by_length else "random"
        ),
        length_column_name="length",
        bf16=bf16,
        fp16=o.fp16 and torch.cuda.is_available(),
        dataloader_num_workers=t.dataloader_num_workers,
        dataloader_pin_memory=torch.cuda.is_available(),
        deepspeed=o.deepspeed_config,
        disable_tqdm=False,
        log_level="warning",
        **_evaluation_kwargs(cfg, has_eval),
    )
    if dist.world_size() > 1 and not dist.has_accelerator():
        # Several processes and no GPU (`accelerate launch --multi_gpu` or `torchrun` on a CPU
        # machine): data-parallel over gloo; without use_cpu, transformers would run each process alone.
        kwargs["use_cpu"] = True
        if os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true":
            os.environ.setdefault("DS_ACCELERATOR", "cpu")  # DeepSpeed over gloo, the Trainer's optimizer
    try:
        return TrainingArguments(**kwargs)
    except ValueError as e:
        reason = " ".join(str(e).split())
        raise ConfigError(f"training settings refused by transformers.TrainingArguments: {reason}") from None
