"""Finish a trained run: final evaluation, final/ model, generation samples, results.json, plots.

results.json is written last (atomically): its presence marks the run finished, which is
what a re-run of the same command and `prospect sweep` look for.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from prospect.config.schema import RunConfig
from prospect.engine import dist
from prospect.engine.model import quantization_summary
from prospect.engine.reference import reference_context
from prospect.engine.rundir import save_final
from prospect.eval.metrics import is_user_metric
from prospect.eval.plots import plot_run
from prospect.eval.scoring import EvalModels, samples_and_user_metrics
from prospect.io import atomic_write_json
from prospect.recipes.preparation import PreparedRun, RunResult

log = logging.getLogger("prospect")


def generation_samples(
    cfg: RunConfig, trainer: Any, ref_model: Any, tokenizer: Any, records: list[Any], path: Path
) -> dict[str, float]:
    """`path` (JSONL: policy and reference generations for a few held-out prompts) and the user
    metrics on them, returned as eval_<name>. Skipped where the weights are sharded across
    processes (FSDP, DeepSpeed ZeRO-3), since one process cannot generate alone there.
    """
    ev = cfg.evaluation
    if not ev.num_generation_samples and not any(is_user_metric(m) for m in ev.metrics):
        return {}
    if getattr(trainer, "is_fsdp_enabled", False) or getattr(trainer, "is_deepspeed_enabled", False):
        log.info("generation samples skipped: the weights are sharded across processes (run `prospect eval`)")
        return {}
    policy = trainer.accelerator.unwrap_model(trainer.model)
    reference = None if trainer.reference_free else reference_context(policy, ref_model)
    was_training = policy.training
    policy.eval()
    try:
        models = EvalModels(policy, reference, tokenizer, "")
        _, user = samples_and_user_metrics(cfg, models, records, path, search_dirs=[Path.cwd()])
    finally:
        policy.train(was_training)
    return {f"eval_{k}": v for k, v in user.items()}


def final_eval(trainer: Any) -> dict[str, Any]:
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


def _z0_summary(cfg: RunConfig, trainer: Any) -> dict[str, Any]:
    """Which z0 estimator ran, and how many rows (over all processes) make one estimate."""
    if trainer.z0_estimator is None:
        return {"z0_estimator": None, "z0_rows_per_estimate": None}
    point, t = cfg.kto.reference_point, cfg.training
    rows = None
    if point != "zero":
        window = t.gradient_accumulation_steps if point == "window_mismatch" else 1
        rows = t.batch_size * dist.world_size() * window
    return {"z0_estimator": point, "z0_rows_per_estimate": rows}


def finish(
    run: PreparedRun, trainer: Any, ref_model: Any, tokenizer: Any, train_metrics: dict[str, Any], started: float,
    notes: dict[str, Any],
) -> RunResult:  # fmt: skip
    """Evaluate, save final/, write samples, results.json and plots; returns the run's result.

    notes: what the earlier steps recorded for results.json (reference mode and cache, curriculum).
    """
    cfg, run_dir = run.cfg, run.run_dir
    metrics: dict[str, Any] = dict(train_metrics)
    if trainer.eval_dataset is not None:
        metrics.update(final_eval(trainer))
    save_final(trainer, tokenizer, run_dir / "final")
    step = trainer.state.global_step
    if not dist.is_main_process():  # files come from the main process
        return RunResult(run_dir=run_dir, metrics=metrics, global_step=step)
    if run.data.validation:
        path = run_dir / "generations.jsonl"
        metrics.update(generation_samples(cfg, trainer, ref_model, tokenizer, run.data.validation, path))
    report = run.report
    results = {
        "run_name": run_dir.name,
        "method": cfg.method.name,
        "model": cfg.model.name,
        "global_step": step,
        "wall_time_s": round(time.time() - started, 2),
        "metrics": metrics,
        "reference": notes.get("reference"),
        "kto_weights": run.weights_note,
        **_z0_summary(cfg, trainer),
        "nonfinite_steps": trainer.nonfinite_total,
        "data": {k: report.get(k) for k in ("rows_read", "accepted", "labels", "pairs") if k in report},
        "curriculum": notes.get("curriculum"),  # None when pairs were sampled at random
        "gradient_checkpointing": notes.get("gradient_checkpointing"),
        "quantization": quantization_summary(cfg),  # {"bits": 4, "type": "nf4", ...} for QLoRA, else None
        "distributed": dist.distributed_note(trainer),
    }
    atomic_write_json(run_dir / "results.json", results)
    try:
        plot_run(run_dir)
    except Exception as e:  # plots are a convenience; never fail a finished run over them
        log.warning("plotting failed: %s", e)
    return RunResult(run_dir=run_dir, metrics=metrics, global_step=step)
