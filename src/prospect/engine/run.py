"""One training run, end to end: config -> records -> tokens -> reference -> Trainer -> run directory.

Run directory (DESIGN.md, "User surface"):
    config.yaml        fully resolved config (secrets redacted)
    data_report.json   every row accepted or rejected, conversions, weights, tokenization check
    metrics.jsonl      one JSON object per log step (train and eval)
    checkpoints/       Trainer checkpoints (resume from the last one)
    final/             adapter or full model + tokenizer, loadable by from_pretrained / PEFT
    results.json       final metrics, steps, wall time
    plots/             PNG curves of loss, rewards, margins, KL
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prospect.config.schema import RunConfig
from prospect.engine.rundir import config_changes, finished_step, mixing_changes, saved_config
from prospect.errors import ConfigError, KTODataError
from prospect.io import atomic_write_json, replace_directory

log = logging.getLogger("prospect")

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(name: str) -> str:
    """A run/sweep name that cannot escape its parent directory ('../x' -> 'x', '/' -> '-')."""
    s = _SAFE.sub("-", name).strip(".-")
    s = re.sub(r"\.{2,}", ".", s)
    return s[:120] or "run"


def model_short_name(model_name: str) -> str:
    base = model_name.rstrip("/").split("/")[-1]
    base = re.sub(r"\.gguf$", "", base, flags=re.I)
    base = re.sub(r"\.(Q\d\w*|F16|F32|BF16)$", "", base, flags=re.I)
    return safe_name(base.lower())


def run_directory(cfg: RunConfig) -> Path:
    root = Path(cfg.training.output_dir).resolve()
    name = safe_name(cfg.training.run_name or f"{model_short_name(cfg.model.name)}_{cfg.method.name}")
    path = (root / name).resolve()
    if root not in path.parents:
        raise ConfigError(f"training.run_name: '{cfg.training.run_name}' would leave the output directory {root}")
    return path


@dataclass
class RunResult:
    run_dir: Path
    metrics: dict[str, Any]
    global_step: int


def _settings(cfg: RunConfig, max_len: int) -> TokenizeSettings:  # noqa: F821
    from prospect.data.tokenize import TokenizeSettings

    sec = cfg.method_section
    use_chat = cfg.data.conversation_template != "none" and cfg.data.apply_chat_template is not False
    return TokenizeSettings(
        max_length=max_len,
        max_prompt_length=min(sec.max_prompt_length, max_len),
        max_completion_length=sec.max_target_length,
        truncation_mode=sec.truncation_mode,
        use_chat_template=use_chat,
        add_special_tokens=cfg.data.add_special_tokens,
    )


def _check_data(cfg: RunConfig, n_train: int, labels: dict[str, int] | None) -> None:
    """Clear messages before the model loads: empty data, one-class KTO data, a batch larger than the data."""
    if n_train == 0:
        raise KTODataError(
            f"{cfg.data.train_file}: no usable training rows after reading and filtering "
            "(see data_report.json in the run directory)"
        )
    if labels is not None and cfg.method.name == "kto":
        if labels.get("desirable", 0) == 0 or labels.get("undesirable", 0) == 0:
            raise KTODataError(
                f"{cfg.data.train_file}: KTO needs both desirable and undesirable rows, "
                f"got {labels.get('desirable', 0)} desirable and {labels.get('undesirable', 0)} undesirable"
            )
    per_step = cfg.training.batch_size * cfg.training.gradient_accumulation_steps
    if per_step > n_train:
        log.warning(
            "training.batch_size x gradient_accumulation_steps = %d is larger than the %d training rows; "
            "each optimizer step uses all %d rows",
            per_step,
            n_train,
            n_train,
        )


def _check_factuality(cfg: RunConfig, pairs: list[Any]) -> dict[str, Any]:
    """factual_dpo reads h_w / h_l: refuse data that has none (delta would silently do nothing).

    Pairs where either indicator is missing count as factual (0) and are reported; a file
    where no pair carries them trains plain DPO, which with delta > 0 is never what was asked.
    """
    missing = sum(1 for r in pairs if r.h_w is None or r.h_l is None)
    delta = cfg.method.delta
    if pairs and missing == len(pairs) and delta > 0:
        from prospect.errors import DPODataError

        raise DPODataError(
            f"{cfg.data.train_file}: method factual_dpo with delta={delta:g} needs the factuality indicators "
            f"h_w and h_l (1 = non-factual) on each pair, and none of the {len(pairs)} pairs has them; "
            "add the columns, or use method dpo (factual_dpo with delta 0 is plain DPO)"
        )
    if missing:
        log.warning("factual_dpo: %d of %d pairs have no h_w/h_l; they count as factual (0)", missing, len(pairs))
    return {"delta": delta, "pairs_without_indicators": missing, "treated_as": "factual (0)" if missing else None}


def _resolve_kto_weights(cfg: RunConfig, records: list[Any]) -> tuple[RunConfig, dict[str, Any]]:
    """lambda_D / lambda_U for this data, logged; returns the config with numbers in place of `auto`.

    `auto` (either weight) follows the KTO paper's rule (prospect.losses.weights). With
    `data.balance_strategy: auto` (the default) neutral weights (both 1.0) on data whose
    label ratio lies outside [1, 4/3] are chosen by the rule too: the default keeps every
    row and weights the minority. `balance_strategy: none` keeps the weights as written.
    """
    from prospect.data.balance import effective_strategy
    from prospect.losses.weights import auto_kto_weights, resolve_kto_weights

    n_d = sum(1 for r in records if r.label)
    n_u = len(records) - n_d
    d, u = cfg.kto.desirable_weight, cfg.kto.undesirable_weight
    by_default = effective_strategy(cfg.data) == "auto" and d == 1.0 and u == 1.0
    if by_default:
        d = u = "auto"
    w = resolve_kto_weights(d, u, n_d, n_u)
    if w.auto:
        cfg = cfg.model_copy(
            update={
                "kto": cfg.kto.model_copy(
                    update={"desirable_weight": w.desirable_weight, "undesirable_weight": w.undesirable_weight}
                )
            }
        )
    suggested = auto_kto_weights(n_d, n_u)
    note = {
        "n_desirable": n_d,
        "n_undesirable": n_u,
        "desirable_weight": w.desirable_weight,
        "undesirable_weight": w.undesirable_weight,
        "weighted_ratio": round(w.ratio, 4),
        "chosen_by": ("rule (data.balance_strategy: auto)" if by_default else "rule (auto)" if w.auto else "config"),
        "rule": "lambda_D*n_D/(lambda_U*n_U) in [1, 4/3] (KTO paper)",
        "suggested": {"desirable_weight": suggested[0], "undesirable_weight": suggested[1]},
    }
    log.info(
        "KTO weights: desirable_weight=%.4g undesirable_weight=%.4g for %d desirable / %d undesirable rows "
        "(lambda_D*n_D/(lambda_U*n_U) = %.3f; %s)",
        w.desirable_weight,
        w.undesirable_weight,
        n_d,
        n_u,
        w.ratio,
        note["chosen_by"],
    )
    if not w.in_range:
        log.warning(
            "KTO weights give lambda_D*n_D/(lambda_U*n_U) = %.3f, outside [1, 4/3]; suggested "
            "desirable_weight=%.3f undesirable_weight=%.3f (or set them to auto)",
            w.ratio,
            *suggested[:2],
        )
    return cfg, note


def _check_previous_run(
    run_dir: Path, cfg: RunConfig, previous: dict[str, Any] | None, last: str | None
) -> RunResult | None:
    """Resuming in a run directory that holds a run: a RunResult if it finished (nothing to
    train), None to go on; ConfigError if it was trained with other settings."""
    done = finished_step(run_dir)
    if last is None and done is None:
        return None  # nothing trained here yet (or only a config.yaml from a run that failed early)
    changes = config_changes(previous, cfg)
    mixing = mixing_changes(changes)
    if mixing:
        shown = ", ".join(mixing[:5]) + (f" and {len(mixing) - 5} more" if len(mixing) > 5 else "")
        raise ConfigError(
            f"{run_dir} holds a run trained with other settings ({shown}); resuming it would mix two runs. "
            "Use another training.run_name, or --no-resume to train this directory again from step 0"
        )
    extended = {"training.max_steps", "training.num_epochs"} & set(changes)
    if done is not None and (not extended or 0 < cfg.training.max_steps <= done):
        results = json.loads((run_dir / "results.json").read_text(encoding="utf-8"))
        log.info(
            "%s finished earlier (step %d); nothing to train. --no-resume trains it again from step 0", run_dir, done
        )
        return RunResult(run_dir=run_dir, metrics=results.get("metrics", {}), global_step=done)
    return None


def _context_cap(cfg: RunConfig, model: Any) -> int:
    """The max_length tokenization uses: the configured one, capped at the model's context (with a warning)."""
    max_len = cfg.effective_max_length
    ctx = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    if isinstance(ctx, int) and 0 < ctx < max_len:
        log.warning(
            "max_length %d exceeds the model's context of %d tokens; sequences are capped at %d", max_len, ctx, ctx
        )
        return ctx
    return max_len


def last_complete_checkpoint(ckpt_dir: Path) -> str | None:
    """The newest checkpoint that was written to the end, or None.

    Trainer writes `trainer_state.json` last, after weights, optimizer, scheduler and RNG
    state, so a checkpoint whose state file is missing, unreadable or names another step was
    cut short (the process was killed while saving) and is never resumed from. Such partial
    checkpoints newer than the one chosen are removed, so later rotation cannot keep them
    in place of a complete one.
    """
    import shutil

    if not ckpt_dir.is_dir():
        return None
    found = []
    for d in ckpt_dir.iterdir():
        m = re.fullmatch(r"checkpoint-(\d+)", d.name)
        if m and d.is_dir():
            found.append((int(m.group(1)), d))
    for step, d in sorted(found, reverse=True):
        try:
            state = json.loads((d / "trainer_state.json").read_text(encoding="utf-8"))
            if int(state.get("global_step", -1)) == step:
                return str(d)
        except (OSError, ValueError, TypeError, AttributeError):
            pass
        log.warning("checkpoint %s is incomplete (the run was stopped while saving it); removing it", d)
        shutil.rmtree(d, ignore_errors=True)
    return None


def _save_final(trainer: Any, tokenizer: Any, final_dir: Path) -> None:
    """Write final/ atomically: save into a temporary directory, then swap it into place.

    A run killed while saving leaves the previous final/ (or none), never half a model.
    Trainer also writes training_args.bin (a pickle) beside the weights; final/ is what users
    share and load, so it holds safetensors and JSON only (the settings are in config.yaml).
    """
    import shutil

    # One name on every process (sharded saves write from several ranks); the main process
    # first clears what a run killed while saving left, then everyone saves.
    tmp = final_dir.with_name(f".{final_dir.name}.tmp")
    if trainer.args.should_save:
        for stale in [tmp, *final_dir.parent.glob(f".{final_dir.name}.old-*")]:
            shutil.rmtree(stale, ignore_errors=True)
    trainer.accelerator.wait_for_everyone()
    try:
        trainer.save_model(str(tmp))
        if not trainer.args.should_save:  # not the main process: it has nothing to move
            return
        tokenizer.save_pretrained(str(tmp))
    except BaseException:
        if trainer.args.should_save:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    (tmp / "training_args.bin").unlink(missing_ok=True)
    replace_directory(tmp, final_dir)


def train(cfg: RunConfig, *, resume: bool | None = None, quiet: bool = False) -> RunResult:
    """Train one run described by `cfg`; returns the run directory and final metrics."""
    import torch
    from transformers import TrainingArguments, set_seed

    from prospect.data import load_records
    from prospect.data.collate import PairedCollator, UnpairedCollator
    from prospect.data.tokenize import tokenize_records, tokenizer_fingerprint
    from prospect.engine.callbacks import MetricsFileCallback, RichProgressCallback
    from prospect.engine.model import load_policy_and_reference
    from prospect.engine.signals import StopOnSignalCallback, TrainingInterrupted, stop_on_signals
    from prospect.engine.trainer import PreferenceTrainer, distributed_mean
    from prospect.eval.plots import plot_run
    from prospect.losses import build_loss, build_reference_point

    t_start = time.time()
    set_seed(cfg.training.seed)
    # [window] batch 1: z0 across the accumulation window (engine/window.py); files from the main process only
    from prospect.engine.window import resolve_reference_point

    cfg = resolve_reference_point(cfg)
    is_main = int(os.environ.get("RANK", "0") or 0) == 0
    run_dir = run_directory(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    previous_config = saved_config(run_dir)  # read before this run writes its own
    if is_main and previous_config is None:  # a new directory: the settings are on record even if the data fails
        cfg.to_yaml(str(run_dir / "config.yaml"))
    kind = "unpaired" if cfg.is_unpaired else "paired"

    # 1. Records and the account of every row; KTO class weights (they depend on the labels only).
    loaded = load_records(
        cfg.data,
        kind=kind,
        seed=cfg.training.seed,
        method=cfg.method.name,
        delta_reorient=cfg.method.name == "factual_dpo",
    )
    report = loaded.report.to_dict()

    _check_data(cfg, len(loaded.train), report.get("labels") if kind == "unpaired" else None)
    if cfg.method.name == "factual_dpo":
        report["factuality"] = _check_factuality(cfg, loaded.train)
    weights_note: dict[str, Any] = {}
    if kind == "unpaired":
        cfg, weights_note = _resolve_kto_weights(cfg, loaded.train)
        report["kto_weights"] = weights_note

    # A run directory that already holds a run: finished -> nothing to do; other settings -> refused.
    ckpt_dir = run_dir / "checkpoints"
    want_resume = cfg.training.resume if resume is None else resume
    last = last_complete_checkpoint(ckpt_dir) if want_resume else None
    if want_resume:
        finished = _check_previous_run(run_dir, cfg, previous_config, last)
        if finished is not None:
            return finished
    if is_main:  # [window]
        cfg.to_yaml(str(run_dir / "config.yaml"))
    from prospect.data.curriculum import apply_curriculum, check_curriculum  # [curriculum]

    check_curriculum(cfg)  # [curriculum] refuse an unusable curriculum before the model loads
    from prospect.eval.metrics import check_metric_names

    check_metric_names(cfg.evaluation.metrics)
    # Settings only transformers can judge (optimizer and scheduler names, step arithmetic),
    # refused before the model loads rather than with a traceback after the reference pass.
    try:
        args = _training_args(cfg, run_dir, bool(loaded.validation), TrainingArguments, torch)
    except ValueError as e:
        reason = " ".join(str(e).split())
        raise ConfigError(f"training settings refused by transformers.TrainingArguments: {reason}") from None

    # 2. Model, tokenizer, reference.
    model, ref_model, tokenizer = load_policy_and_reference(cfg)
    max_len = _context_cap(cfg, model)

    # 3. Tokens (cached) and the tokenization check.
    settings = _settings(cfg, max_len)
    tok_key = tokenizer_fingerprint(tokenizer)
    train_ds, tok_stats = tokenize_records(
        loaded.train, tokenizer, settings, kind=kind, tokenizer_key=tok_key, desc="Tokenizing train"
    )
    eval_ds, eval_tok_stats = (
        tokenize_records(
            loaded.validation, tokenizer, settings, kind=kind, tokenizer_key=tok_key, desc="Tokenizing validation"
        )
        if loaded.validation
        else (None, None)
    )
    report["tokenization"] = {"train": tok_stats, "validation": eval_tok_stats}

    # 4. The loss.
    loss_fn = build_loss(
        cfg, n_desirable=weights_note.get("n_desirable"), n_undesirable=weights_note.get("n_undesirable")
    )
    z0_estimator = (
        build_reference_point(cfg.kto.reference_point, reduce=distributed_mean)
        if (kind == "unpaired" or cfg.method.name == "dpo_kto")
        else None
    )
    if is_main:  # [window]
        atomic_write_json(run_dir / "data_report.json", report)

    # 5. Reference log-probs, once, cached across runs that share the base model and data.
    sec = cfg.method_section
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    ref_note: dict[str, Any] = {
        "mode": "reference_free"
        if sec.reference_free
        else ("precomputed" if sec.precompute_ref_log_probs else "on_the_fly")
    }
    eval_ds = _with_length(eval_ds) if eval_ds is not None else None
    if sec.precompute_ref_log_probs and not sec.reference_free:
        # The eval loader's order is fixed (collate.eval_order), so its in-batch mismatched pairs are
        # known now: their reference log-probs are precomputed too (one process only: several pad
        # the last batch).
        eval_pairs_batch = (
            args.per_device_eval_batch_size
            if kind == "unpaired"
            and z0_estimator is not None
            and cfg.kto.reference_point != "zero"
            and _world_size() == 1
            else None
        )
        train_ds, eval_ds, ref_note["cache"] = _attach_reference(
            cfg, model, ref_model, tokenizer, tok_key, settings, train_ds, eval_ds, kind, pad_id, eval_pairs_batch
        )

    # [curriculum] seed 003 track A: pairs easy-to-hard (data/curriculum.py), sampled in that order.
    train_ds, curriculum_note = apply_curriculum(train_ds, cfg)

    # 6. The Trainer.
    train_ds = _with_length(train_ds)
    if curriculum_note is not None:  # [curriculum] keep the easy-to-hard order
        args.train_sampling_strategy = "sequential"
    build_mismatched = z0_estimator is not None and cfg.kto.reference_point != "zero"
    collator_cls = UnpairedCollator if kind == "unpaired" else PairedCollator
    # [prefix-sharing] prompts run once where exact and possible (engine/prefix.py)
    from prospect.engine.prefix import supports_prompt_sharing

    share_prompt = (
        cfg.training.share_prompt
        and not cfg.training.padding_free
        and not cfg.optimization.use_gradient_checkpointing
        and supports_prompt_sharing(model)
    )
    collator = collator_cls(
        pad_id=pad_id,
        packed=cfg.training.padding_free,
        max_length=max_len,
        build_mismatched=build_mismatched,
        share_prompt=share_prompt,
    )
    # [window] window_mismatch: z0 from mismatched pairs across the accumulation window
    trainer_cls: Any = PreferenceTrainer
    if kind == "unpaired" and z0_estimator is not None and cfg.kto.reference_point == "window_mismatch":
        from prospect.engine.window import WindowMismatchTrainer, WindowRowsCollator

        trainer_cls, collator = WindowMismatchTrainer, WindowRowsCollator(collator)
    trainer = trainer_cls(
        model=model,
        args=args,
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        data_collator=collator,
        processing_class=tokenizer,
        loss_fn=loss_fn,
        z0_estimator=z0_estimator,
        ref_model=ref_model,
        reference_free=sec.reference_free,
        max_nonfinite_steps=cfg.training.max_nonfinite_steps,
    )
    metrics_cb = MetricsFileCallback(run_dir / "metrics.jsonl")
    trainer.add_callback(metrics_cb)
    if cfg.data.generate_during_eval and eval_ds is not None:
        from prospect.engine.callbacks import SamplesAtEvaluation

        trainer.add_callback(
            SamplesAtEvaluation(
                trainer,
                lambda step: _generation_samples(
                    cfg,
                    trainer,
                    ref_model,
                    tokenizer,
                    loaded.validation,
                    run_dir / "generations" / f"step-{step}.jsonl",
                ),
            )
        )
    if not quiet:
        from transformers.trainer_callback import ProgressCallback

        trainer.remove_callback(ProgressCallback)
        trainer.add_callback(RichProgressCallback())
    if cfg.training.early_stopping_patience and eval_ds is not None:
        from transformers import EarlyStoppingCallback

        trainer.add_callback(EarlyStoppingCallback(early_stopping_patience=cfg.training.early_stopping_patience))

    if last:
        log.info("resuming from %s", last)
    elif want_resume is True:
        log.warning("resume requested but %s holds no complete checkpoint; starting from step 0", ckpt_dir)
    # SIGTERM / Ctrl-C: finish the step, checkpoint, stop (prospect.engine.signals).
    with stop_on_signals() as stop:
        trainer.add_callback(StopOnSignalCallback(stop))
        train_out = trainer.train(resume_from_checkpoint=last)
    if stop.stopped_at_step is not None and trainer.state.global_step < trainer.state.max_steps:
        raise TrainingInterrupted(
            f"stopped by {stop.name} at step {trainer.state.global_step} of {trainer.state.max_steps}; checkpoint "
            f"saved in {ckpt_dir / f'checkpoint-{trainer.state.global_step}'}; run the same command to resume",
            stop.signum,
        )

    # 7. Final model, evaluation, results.
    final_metrics: dict[str, Any] = dict(train_out.metrics)
    if eval_ds is not None:
        final_metrics.update(_final_eval(trainer))
    final_dir = run_dir / "final"
    _save_final(trainer, tokenizer, final_dir)
    if is_main and loaded.validation:
        final_metrics.update(
            _generation_samples(cfg, trainer, ref_model, tokenizer, loaded.validation, run_dir / "generations.jsonl")
        )
    results = {
        "run_name": run_dir.name,
        "method": cfg.method.name,
        "model": cfg.model.name,
        "global_step": trainer.state.global_step,
        "wall_time_s": round(time.time() - t_start, 2),
        "metrics": final_metrics,
        "reference": ref_note,
        "kto_weights": weights_note or None,
        "z0_estimator": cfg.kto.reference_point if z0_estimator is not None else None,
        # [window] rows whose mismatched pairs make one z0 estimate (over all processes)
        "z0_rows_per_estimate": (
            None
            if z0_estimator is None or cfg.kto.reference_point == "zero"
            else cfg.training.batch_size
            * _world_size()
            * (cfg.training.gradient_accumulation_steps if cfg.kto.reference_point == "window_mismatch" else 1)
        ),
        "nonfinite_steps": trainer.nonfinite_total,
        "data": {k: report.get(k) for k in ("rows_read", "accepted", "labels", "pairs") if k in report},
    }
    results["curriculum"] = curriculum_note  # [curriculum] None when pairs were sampled at random
    if not is_main:  # [window] results and plots come from the main process
        return RunResult(run_dir=run_dir, metrics=final_metrics, global_step=trainer.state.global_step)
    atomic_write_json(run_dir / "results.json", results)
    try:
        plot_run(run_dir)
    except Exception as e:  # plots are a convenience; never fail a finished run over them
        log.warning("plotting failed: %s", e)
    return RunResult(run_dir=run_dir, metrics=final_metrics, global_step=trainer.state.global_step)


def _generation_samples(
    cfg: RunConfig, trainer: Any, ref_model: Any, tokenizer: Any, records: list[Any], path: Path
) -> dict[str, float]:
    """`path` (JSONL: policy and reference generations for a few held-out prompts) and the user
    metrics on them, returned as eval_<name>. Skipped where the weights are sharded across
    processes (FSDP, DeepSpeed ZeRO-3), since one process cannot generate alone there.
    """
    import contextlib

    from prospect.eval.evaluate import EvalModels, samples_and_user_metrics
    from prospect.eval.metrics import is_user_metric

    ev = cfg.evaluation
    if not ev.num_generation_samples and not any(is_user_metric(m) for m in ev.metrics):
        return {}
    if getattr(trainer, "is_fsdp_enabled", False) or getattr(trainer, "is_deepspeed_enabled", False):
        log.info("generation samples skipped: the weights are sharded across processes (run `prospect eval`)")
        return {}
    policy = trainer.accelerator.unwrap_model(trainer.model)
    reference: Any = None
    if cfg.method_section.reference_free:
        reference = None
    elif ref_model is not None:
        reference = lambda: contextlib.nullcontext(ref_model)  # noqa: E731
    elif hasattr(policy, "disable_adapter"):

        @contextlib.contextmanager
        def reference() -> Any:
            with policy.disable_adapter():
                yield policy

    was_training = policy.training
    policy.eval()
    try:
        _, user = samples_and_user_metrics(
            cfg, EvalModels(policy, reference, tokenizer, ""), records, path, search_dirs=[Path.cwd()]
        )
    finally:
        policy.train(was_training)
    return {f"eval_{k}": v for k, v in user.items()}


def _final_eval(trainer: Any) -> dict[str, Any]:
    """Held-out metrics of the final model: those of an evaluation logged at the last step, else a new one.

    An evaluation scheduled on the last step (eval_steps dividing max_steps) already measured
    these weights; running it again would only repeat the same numbers at the cost of a full
    pass over the validation set. With load_best_model_at_end the final weights are another
    checkpoint's, so they are evaluated anew.
    """
    last = next((h for h in reversed(trainer.state.log_history) if "eval_loss" in h), None)
    if last is not None and last.get("step") == trainer.state.global_step and not trainer.args.load_best_model_at_end:
        return {k: v for k, v in last.items() if k.startswith("eval_")}
    return trainer.evaluate()


def _world_size() -> int:
    """Processes of this run, as the launcher (torchrun / accelerate launch) tells them; 1 when run directly."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def _with_length(ds: Any) -> Any:
    """Add the `length` column the length-grouped sampler reads (prompt + longest completion)."""
    cols = [c for c in ("completion_ids", "chosen_ids", "rejected_ids") if c in ds.column_names]
    lengths = [len(r["prompt_ids"]) + max(len(r[c]) for c in cols) for r in ds.select_columns(["prompt_ids"] + cols)]
    return ds.add_column("length", lengths)


def _training_args(cfg: RunConfig, run_dir: Path, has_eval: bool, TrainingArguments: Any, torch: Any) -> Any:
    t, o, lg, ev = cfg.training, cfg.optimization, cfg.logging, cfg.evaluation
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
    bf16 = o.bf16 and (not torch.cuda.is_available() or torch.cuda.is_bf16_supported())
    kwargs = dict(
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
        save_strategy="steps",
        save_steps=save_steps,
        save_total_limit=1 if ev.save_best_only else t.save_total_limit,
        eval_strategy="steps" if (has_eval and eval_steps) else "no",
        eval_steps=eval_steps,
        report_to=report_to or "none",
        run_name=safe_name("_".join(x for x in [lg.run_prefix, run_dir.name] if x)),
        remove_unused_columns=False,
        # [window] training.shuffle: false keeps the file order (and overrides group_by_length)
        train_sampling_strategy=(
            "sequential" if not t.shuffle else "group_by_length" if t.group_by_length else "random"
        ),
        length_column_name="length",
        bf16=bf16,
        fp16=o.fp16 and torch.cuda.is_available(),
        dataloader_num_workers=t.dataloader_num_workers,
        dataloader_pin_memory=torch.cuda.is_available(),
        load_best_model_at_end=load_best,
        metric_for_best_model=(
            ev.metric_for_best_model
            if has_eval and eval_steps and (ev.save_best_only or t.early_stopping_patience)
            else None
        ),
        greater_is_better=ev.greater_is_better,
        deepspeed=o.deepspeed_config,
        disable_tqdm=False,
        log_level="warning",
    )
    if _world_size() > 1 and not _has_accelerator(torch):
        # [window] several processes and no GPU (`accelerate launch --multi_gpu` or `torchrun` on a CPU
        # machine): data-parallel over gloo; without use_cpu, transformers would run each process alone
        kwargs["use_cpu"] = True
    if o.use_gradient_checkpointing:
        kwargs.update(activation_checkpointing=True, activation_checkpointing_kwargs={"use_reentrant": False})
    if o.bf16 and not bf16:
        log.warning("bf16 requested but not supported on this device; training in float32")
    return TrainingArguments(**kwargs)


def _has_accelerator(torch: Any) -> bool:  # [window]
    acc = getattr(torch, "accelerator", None)
    return bool(acc.is_available()) if acc is not None and hasattr(acc, "is_available") else torch.cuda.is_available()


def _attach_reference(
    cfg: RunConfig,
    model: Any,
    ref_model: Any,
    tokenizer: Any,
    tok_key: str,
    settings: Any,
    train_ds: Any,
    eval_ds: Any,
    kind: str,
    pad_id: int,
    eval_pairs_batch: int | None = None,
) -> tuple[Any, Any, dict[str, str]]:
    """Add precomputed reference log-prob columns to the datasets (cached on disk).

    With `eval_pairs_batch`, the validation rows also get `ref_kl_logps`: the reference
    log-prob of the mismatched pair the collator gives each row when the eval loader takes
    the rows in `collate.eval_order`, `eval_pairs_batch` at a time (`collate.eval_mismatched_pairs`).
    """
    import contextlib
    from dataclasses import asdict

    import torch

    from prospect.data.collate import eval_mismatched_pairs, eval_order
    from prospect.engine.model import base_weights_fingerprint
    from prospect.engine.reference import (
        cached_reference_logps,
        compute_reference_logps,
        dataset_fingerprint,
        reference_cache_key,
    )

    ref_src = ref_model if ref_model is not None else model
    base_fp = base_weights_fingerprint(ref_src)
    notes: dict[str, str] = {}

    def ctx() -> Any:
        if ref_model is None and hasattr(model, "disable_adapter"):
            return model.disable_adapter()
        return contextlib.nullcontext()

    out = []
    for split, ds in (("train", train_ds), ("validation", eval_ds)):
        if ds is None:
            out.append(None)
            continue
        cols = ["prompt_ids", "completion_ids"] if kind == "unpaired" else ["prompt_ids", "chosen_ids", "rejected_ids"]

        with_kl = split == "validation" and eval_pairs_batch is not None
        extra = {"eval_pairs_batch": eval_pairs_batch} if with_kl else {}
        key = reference_cache_key(
            base_fingerprint=base_fp,
            tokenizer_key=tok_key,
            data_key=dataset_fingerprint(ds, cols),
            settings={**asdict(settings), **extra},
        )

        def compute(ds: Any = ds, split: str = split, with_kl: bool = with_kl) -> dict[str, torch.Tensor]:
            with ctx():
                if kind == "unpaired":
                    seqs = [(r["prompt_ids"], r["completion_ids"]) for r in ds]
                    out = {
                        "ref_logps": compute_reference_logps(
                            ref_src, seqs, pad_id=pad_id, desc=f"Reference log-probs ({split})"
                        )
                    }
                    if with_kl:
                        pairs = eval_mismatched_pairs(
                            [p for p, _ in seqs],
                            [c for _, c in seqs],
                            eval_pairs_batch,
                            settings.max_length,
                            eval_order(ds["length"]),
                        )
                        out["ref_kl_logps"] = compute_reference_logps(
                            ref_src, pairs, pad_id=pad_id, desc=f"Reference log-probs ({split}, mismatched pairs)"
                        )
                    return out
                seqs = [(r["prompt_ids"], r["chosen_ids"]) for r in ds] + [
                    (r["prompt_ids"], r["rejected_ids"]) for r in ds
                ]
                both = compute_reference_logps(ref_src, seqs, pad_id=pad_id, desc=f"Reference log-probs ({split})")
                return {"ref_chosen_logps": both[: len(ds)], "ref_rejected_logps": both[len(ds) :]}

        tensors, status = cached_reference_logps(key, compute)
        notes[split] = status
        for name, t in tensors.items():
            ds = ds.add_column(name, t.tolist())
        out.append(ds)
    return out[0], out[1], notes
