"""`prospect train CONFIG`: one training run, top to bottom.

    prepare   -> every check that needs no model; records, report, weights, loss, run directory
    load      -> policy, reference (or the adapter-disabled base), tokenizer
    tokenize  -> token ids (cached) and the tokenization check, into data_report.json
    reference -> reference log-probs once, cached on disk (when the loss needs a reference)
    trainer   -> collator, z0 estimator and Trainer chosen by what the loss needs
    fit       -> transformers.Trainer.train, resumable; SIGTERM / Ctrl-C checkpoint and stop
    finish    -> final eval, final/, generation samples, results.json, plots

The run directory's layout is in `prospect.engine.rundir`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from prospect.data.curriculum import apply_curriculum
from prospect.data.tokenize import TokenizeSettings, tokenize_records, tokenizer_fingerprint, with_length
from prospect.engine import dist
from prospect.engine.args import tokenize_settings
from prospect.engine.build import build_trainer, needs_reference, padding_cost, planned_mismatched_batches
from prospect.engine.callbacks import attach_callbacks
from prospect.engine.checkpointing import choose_checkpointing
from prospect.engine.model import load_policy_and_reference
from prospect.engine.reference import attach_reference, reference_context
from prospect.engine.signals import StopOnSignalCallback, TrainingInterrupted, stop_on_signals
from prospect.errors import TrainingError
from prospect.io import atomic_write_json
from prospect.recipes.finish import finish, generation_samples
from prospect.recipes.preparation import PreparedRun, RunResult, prepare

log = logging.getLogger("prospect")


@dataclass
class Models:
    """The policy (with its adapter), a separate reference or None, the tokenizer, the tokenize settings."""

    policy: Any
    reference: Any
    tokenizer: Any
    settings: TokenizeSettings


@dataclass
class TrainData:
    """Tokenized training and validation datasets, and notes for results.json."""

    train: Any
    validation: Any
    notes: dict[str, Any] = field(default_factory=dict)
    train_batches: list[list[int]] | None = None  # planned micro-batches (KTO in-batch z0, one process)


def train(cfg: Any, *, resume: bool | None = None, quiet: bool = False) -> RunResult:
    """Train one run described by `cfg` (a RunConfig); returns the run directory and final metrics."""
    started = time.time()
    run = prepare(cfg, resume=resume)
    if run.finished is not None:
        return run.finished
    models = load_models(run)
    data = tokenize(run, models)
    data = add_reference(run, models, data)
    trainer = make_trainer(run, models, data, quiet=quiet)
    train_metrics = fit(run, trainer)
    return finish(run, trainer, models.reference, models.tokenizer, train_metrics, started, data.notes)


def load_models(run: PreparedRun) -> Models:
    # A reference-free loss (ORPO, SimPO, CPO) or reference_free: true loads no reference copy.
    policy, reference, tokenizer = load_policy_and_reference(run.cfg, with_reference=needs_reference(run.cfg, run.loss))
    return Models(policy, reference, tokenizer, tokenize_settings(run.cfg, policy))


def tokenize(run: PreparedRun, models: Models) -> TrainData:
    """Token ids of the training and validation records (cached) and the tokenization check."""
    key = tokenizer_fingerprint(models.tokenizer)

    def tokens(records: list[Any], split: str) -> tuple[Any, Any]:
        return tokenize_records(
            records, models.tokenizer, models.settings, kind=run.kind, tokenizer_key=key, desc=f"Tokenizing {split}"
        )

    with dist.main_process_first():  # one process writes the token cache, the others read it
        train_ds, train_stats = tokens(run.data.train, "train")
        eval_ds, eval_stats = tokens(run.data.validation, "validation") if run.data.validation else (None, None)
    run.report["tokenization"] = {"train": train_stats, "validation": eval_stats}
    if dist.is_main_process():
        atomic_write_json(run.run_dir / "data_report.json", run.report)
    # Validation rows carry their length now: the eval order (longest first) decides their mismatched pairs.
    return TrainData(train_ds, with_length(eval_ds) if eval_ds is not None else None)


def add_reference(run: PreparedRun, models: Models, data: TrainData) -> TrainData:
    """Reference log-prob columns (precomputed, cached), then the curriculum order (it may read them)."""
    cfg = run.cfg
    sec = cfg.method_section
    # Where the loader's batches are known before training (and kept every epoch: engine/order.py),
    # so are their mismatched pairs; a precomputed reference covers those too.
    cost = padding_cost(cfg, run.loss, models.policy)  # the batches are composed for the step's layout
    pairs = planned_mismatched_batches(cfg, run.loss, run.args, run.kind, data.train, data.validation, cost)
    data = TrainData(data.train, data.validation, train_batches=pairs.get("train"))
    if not needs_reference(cfg, run.loss):
        note: dict[str, Any] = {"mode": "reference_free"}
    elif not sec.precompute_ref_log_probs:
        note = {"mode": "on_the_fly"}
    else:
        context = reference_context(models.policy, models.reference)
        if context is None:
            raise TrainingError("no reference model: enable LoRA, set reference_model_name, or reference_free: true")
        splits = {"train": data.train, **({"validation": data.validation} if data.validation is not None else {})}
        splits, cache = attach_reference(
            context, models.tokenizer, models.settings, splits, run.kind, pair_batches=pairs
        )
        data = TrainData(splits["train"], splits.get("validation"), train_batches=data.train_batches)
        note = {"mode": "precomputed", "cache": cache, **({"mismatched_pairs": sorted(pairs)} if pairs else {})}
    train_ds, curriculum = apply_curriculum(data.train, cfg)  # seed 003 track A: pairs easy-to-hard
    notes = {"reference": note, "curriculum": curriculum}
    return TrainData(with_length(train_ds), data.validation, notes, data.train_batches)


def make_trainer(run: PreparedRun, models: Models, data: TrainData, *, quiet: bool) -> Any:
    if data.notes.get("curriculum") is not None:
        run.args.train_sampling_strategy = "sequential"  # keep the easy-to-hard order
    checkpointing = choose_checkpointing(run.cfg, models.policy, data.train, paired=run.kind == "paired")
    data.notes["gradient_checkpointing"] = checkpointing
    trainer = build_trainer(
        run.cfg,
        model=models.policy,
        ref_model=models.reference,
        tokenizer=models.tokenizer,
        loss=run.loss,
        args=run.args,
        train_dataset=data.train,
        eval_dataset=data.validation,
        max_length=models.settings.max_length,
        checkpointing=checkpointing["layers"],
        train_batches=data.train_batches,
    )
    samples = None
    if run.cfg.data.generate_during_eval and data.validation is not None:
        gen_dir = run.run_dir / "generations"

        def samples(step: int) -> dict[str, float]:
            records = run.data.validation
            path = gen_dir / f"step-{step}.jsonl"
            return generation_samples(run.cfg, trainer, models.reference, models.tokenizer, records, path)

    attach_callbacks(trainer, run.cfg, run.run_dir, quiet=quiet, samples=samples)
    return trainer


def fit(run: PreparedRun, trainer: Any) -> dict[str, Any]:
    """trainer.train(), resumed from the last complete checkpoint; SIGTERM / Ctrl-C: checkpoint, then stop."""
    if run.last_checkpoint:
        log.info("resuming from %s", run.last_checkpoint)
    elif run.want_resume is True:
        log.warning(
            "resume requested but %s holds no complete checkpoint; starting from step 0", run.run_dir / "checkpoints"
        )
    with stop_on_signals() as stop:
        trainer.add_callback(StopOnSignalCallback(stop))
        out = trainer.train(resume_from_checkpoint=run.last_checkpoint)
    state = trainer.state
    if stop.stopped_at_step is not None and state.global_step < state.max_steps:
        ckpt = run.run_dir / "checkpoints" / f"checkpoint-{state.global_step}"
        raise TrainingInterrupted(
            f"stopped by {stop.name} at step {state.global_step} of {state.max_steps}; checkpoint "
            f"saved in {ckpt}; run the same command to resume",
            stop.signum,
        )
    return dict(out.metrics)
