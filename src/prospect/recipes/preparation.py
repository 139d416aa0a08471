"""Prepare a training run: everything that can fail does so here, before a model loads.

`prepare(cfg)` reads and accounts for the data, resolves what the config leaves to the data
(KTO class weights, the z0 estimator at small batches), checks the run directory (a finished
run is not trained again; one trained with other settings is not resumed), and builds the
loss and the `TrainingArguments`, so that a bad setting costs no model loading, no
tokenization and no reference pass.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prospect.config.methods import METHODS, Method
from prospect.config.schema import RunConfig
from prospect.data import load_records
from prospect.data.balance import effective_strategy
from prospect.data.curriculum import check_curriculum
from prospect.data.pipeline import LoadedData
from prospect.data.usage import rows_used
from prospect.data.weights import auto_kto_weights, resolve_kto_weights
from prospect.engine import dist
from prospect.engine.args import training_args
from prospect.engine.rundir import last_complete_checkpoint, previous_run, run_directory, saved_config
from prospect.engine.window import resolve_reference_point
from prospect.errors import ConfigError, DPODataError, KTODataError
from prospect.eval.metrics import check_metric_names
from prospect.losses import build_loss

log = logging.getLogger("prospect")


@dataclass
class RunResult:
    """What `train` returns: the run directory, the final metrics and the last global step."""

    run_dir: Path
    metrics: dict[str, Any]
    global_step: int


@dataclass
class PreparedRun:
    """A run that passed every check: resolved config, records, report, loss and Trainer settings.

    finished: set when the run directory holds this run finished already (nothing to train).
    """

    cfg: RunConfig
    method: Method
    run_dir: Path
    data: LoadedData
    report: dict[str, Any]
    weights_note: dict[str, Any] | None
    args: Any = None
    loss: Any = None
    last_checkpoint: str | None = None
    want_resume: bool | None = None
    finished: RunResult | None = None

    @property
    def kind(self) -> str:
        return self.method.kind


def prepare(cfg: RunConfig, *, resume: bool | None = None, write: bool = True) -> PreparedRun:
    """Check and resolve everything of `cfg` that needs no model; see the module docstring.

    write=False (`prospect train --dry-run`): the same checks, without creating the run directory.
    """
    from transformers import set_seed

    set_seed(cfg.training.seed)
    cfg = check_reference_point(cfg)  # batch 1: z0 across the accumulation window, or refused
    method = METHODS[cfg.method.name]
    run_dir = run_directory(cfg)
    writes = write and dist.is_main_process()
    if write:
        run_dir.mkdir(parents=True, exist_ok=True)
    previous = saved_config(run_dir)  # read before this run writes its own
    if writes and previous is None:
        cfg.to_yaml(str(run_dir / "config.yaml"))  # a new directory: the settings are on record even if data fail

    data = load_records(
        cfg.data, kind=method.kind, seed=cfg.training.seed, method=cfg.method.name,
        delta_reorient=method.reorients_pairs, both_nonfactual=cfg.method.both_nonfactual,
    )  # fmt: skip
    report = data.report.to_dict()
    min_rows = cfg.data.min_rows_used if cfg.data.min_rows_used is not None else 2 * cfg.training.batch_size
    log.info(rows_used(report, method.kind, min_rows, cfg.data.train_file))  # used/converted/unused; refuses too few
    _check_data(cfg, method, len(data.train), report.get("labels") if method.kind == "unpaired" else None)
    if method.reorients_pairs:
        report["factuality"] = _check_factuality(cfg, data.train)
    weights_note = None
    if method.kind == "unpaired":
        cfg, weights_note = resolve_weights(cfg, data.train)
        report["kto_weights"] = weights_note
    else:
        cfg = paired_kto_weights(cfg, len(data.train))
    run = PreparedRun(cfg, method, run_dir, data, report, weights_note)

    run.want_resume = cfg.training.resume if resume is None else resume
    if run.want_resume:
        run.last_checkpoint = last_complete_checkpoint(run_dir / "checkpoints")
        done = previous_run(run_dir, cfg, previous, run.last_checkpoint)
        if done is not None:
            results = json.loads((run_dir / "results.json").read_text(encoding="utf-8"))
            run.finished = RunResult(run_dir=run_dir, metrics=results.get("metrics", {}), global_step=done)
            return run
    if writes:
        cfg.to_yaml(str(run_dir / "config.yaml"))
    check_curriculum(cfg)
    check_metric_names(cfg.evaluation.metrics)
    run.args = training_args(cfg, run_dir, has_eval=bool(data.validation))
    run.loss = build_loss(cfg)
    return run


def check_reference_point(cfg: RunConfig) -> RunConfig:
    """The z0 estimator against the batch size, asked of the loss (not of the method's name).

    A loss that reads no reference point (`needs_reference_point` False, e.g. `kto.loss_type:
    apo_zero_unpaired`) trains at any batch size and gets no mismatched pass. A paired loss with
    a KTO term (dpo_kto) estimates z0 from the mismatched pairs of each batch: below its
    `min_batch_size` (2 for batch_mismatch / window_mismatch) the only "mismatched" pair is the
    pair itself and z0 would be max(0, r_chosen) of that pair, so it is refused. Unpaired losses
    follow `engine.window.resolve_reference_point` (window_mismatch at batch 1, or refused).
    The loss is built with neutral class weights here: what it needs does not depend on them.
    """
    kto = cfg.kto
    neutral = {k: 1.0 for k in ("desirable_weight", "undesirable_weight") if getattr(kto, k) == "auto"}
    loss = build_loss(cfg.model_copy(update={"kto": kto.model_copy(update=neutral)}) if neutral else cfg)
    if not getattr(loss, "needs_reference_point", False):
        return cfg
    minimum = int(getattr(loss, "min_batch_size", 1))
    if loss.kind == "paired" and cfg.training.batch_size < minimum:
        raise ConfigError(
            f"training.batch_size: method {loss.name} estimates its KTO term's reference point z0 "
            f"(kto.reference_point: {kto.reference_point}) from mismatched pairs of each batch and needs "
            f"training.batch_size >= {minimum}, got {cfg.training.batch_size}: with one pair the only 'mismatched' "
            "pair is the pair itself, so z0 would be that pair's own chosen reward. Raise training.batch_size, or "
            "set kto.reference_point: running or zero (window_mismatch applies to unpaired KTO data only)"
        )
    return resolve_reference_point(cfg)


def _check_data(cfg: RunConfig, method: Method, n_train: int, labels: dict[str, int] | None) -> None:
    """Clear messages before the model loads: empty data, one-class KTO data, a batch larger than the data."""
    if n_train == 0:
        raise KTODataError(
            f"{cfg.data.train_file}: no usable training rows after reading and filtering "
            "(see data_report.json in the run directory)"
        )
    if labels is not None and method.needs_both_labels:
        n_d, n_u = labels.get("desirable", 0), labels.get("undesirable", 0)
        if n_d == 0 or n_u == 0:
            raise KTODataError(
                f"{cfg.data.train_file}: KTO needs both desirable and undesirable rows, "
                f"got {n_d} desirable and {n_u} undesirable"
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
    """A factuality margin reads h_w / h_l: refuse data that has none (delta would silently do nothing).

    Pairs where either indicator is missing count as factual (0) and are reported; a file
    where no pair carries them trains plain DPO, which with delta > 0 is never what was asked.
    """
    missing = sum(1 for r in pairs if r.h_w is None or r.h_l is None)
    delta = cfg.method.delta
    if pairs and missing == len(pairs) and delta > 0:
        raise DPODataError(
            f"{cfg.data.train_file}: method {cfg.method.name} with delta={delta:g} needs the factuality indicators "
            f"h_w and h_l (1 = non-factual) on each pair, and none of the {len(pairs)} pairs has them; "
            "add the columns, or use method dpo (factual_dpo with delta 0 is plain DPO)"
        )
    if missing:
        log.warning(
            "%s: %d of %d pairs have no h_w/h_l; they count as factual (0)", cfg.method.name, missing, len(pairs)
        )
    return {"delta": delta, "pairs_without_indicators": missing, "treated_as": "factual (0)" if missing else None}


def paired_kto_weights(cfg: RunConfig, n_pairs: int) -> RunConfig:
    """The kto section's class weights with numbers for `auto`, for paired methods (dpo_kto's KTO term).

    Every pair gives one desirable and one undesirable row, so the rule sees n_D = n_U and `auto`
    is 1.0 (or the other weight, when one is fixed).
    """
    d, u = cfg.kto.desirable_weight, cfg.kto.undesirable_weight
    if "auto" not in (d, u):
        return cfg
    w = resolve_kto_weights(d, u, max(n_pairs, 1), max(n_pairs, 1))
    update = {"desirable_weight": w.desirable_weight, "undesirable_weight": w.undesirable_weight}
    return cfg.model_copy(update={"kto": cfg.kto.model_copy(update=update)})


def resolve_weights(cfg: RunConfig, records: list[Any]) -> tuple[RunConfig, dict[str, Any]]:
    """lambda_D / lambda_U for this data, logged; returns the config with numbers in place of `auto`.

    `auto` (either weight) follows the KTO paper's rule (prospect.data.weights). With
    `data.balance_strategy: auto` (the default) neutral weights (both 1.0) on data whose
    label ratio lies outside [1, 4/3] are chosen by the rule too: the default keeps every
    row and weights the minority. `balance_strategy: none` keeps the weights as written.
    """
    n_d = sum(1 for r in records if r.label)
    n_u = len(records) - n_d
    d, u = cfg.kto.desirable_weight, cfg.kto.undesirable_weight
    by_default = effective_strategy(cfg.data) == "auto" and d == 1.0 and u == 1.0
    if by_default:
        d = u = "auto"
    w = resolve_kto_weights(d, u, n_d, n_u)
    if w.auto:
        update = {"desirable_weight": w.desirable_weight, "undesirable_weight": w.undesirable_weight}
        cfg = cfg.model_copy(update={"kto": cfg.kto.model_copy(update=update)})
    suggested = auto_kto_weights(n_d, n_u)
    chosen_by = "rule (data.balance_strategy: auto)" if by_default else "rule (auto)" if w.auto else "config"
    note = {
        "n_desirable": n_d,
        "n_undesirable": n_u,
        "desirable_weight": w.desirable_weight,
        "undesirable_weight": w.undesirable_weight,
        "weighted_ratio": round(w.ratio, 4),
        "chosen_by": chosen_by,
        "rule": "lambda_D*n_D/(lambda_U*n_U) in [1, 4/3] (KTO paper)",
        "suggested": {"desirable_weight": suggested[0], "undesirable_weight": suggested[1]},
    }
    log.info(
        "KTO weights: desirable_weight=%.4g undesirable_weight=%.4g for %d desirable / %d undesirable rows "
        "(lambda_D*n_D/(lambda_U*n_U) = %.3f; %s)",
        w.desirable_weight, w.undesirable_weight, n_d, n_u, w.ratio, chosen_by,
    )  # fmt: skip
    if not w.in_range:
        log.warning(
            "KTO weights give lambda_D*n_D/(lambda_U*n_U) = %.3f, outside [1, 4/3]; suggested "
            "desirable_weight=%.3f undesirable_weight=%.3f (or set them to auto)",
            w.ratio, *suggested[:2],
        )  # fmt: skip
    return cfg, note
