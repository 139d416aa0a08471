"""`prospect eval RUN_DIR [--data FILE]`: held-out metrics and generation samples of a finished run.

What is evaluated:
- a run directory (config.yaml + final/): the trained policy in final/ (a LoRA adapter on
  the run's base model, or a full model) against the run's reference (the base with the
  adapter disabled, the named `reference_model_name`, the base model for full fine-tuning,
  or none when `reference_free`);
- a bare model directory (an exported adapter or model, no config.yaml): an adapter is
  compared with its base; a full model has no reference (log pi_ref taken as 0); default
  settings apply (beta 0.1) and no loss is reported (the directory has no method).

Which data: `data_file` read with the run's data settings (every row, no split, no
balancing), as pairs when the file holds pairs, else as unpaired rows; without
`data_file`, the run's own held-out split (its validation_file, or the rows it held out),
read the way the run read it. The metrics are `prospect.eval.scoring.evaluate_records`'.

Writes run_dir/eval/metrics.json and run_dir/eval/generations.jsonl (atomically).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch

from prospect.config.loader import load_saved_config
from prospect.config.methods import METHODS
from prospect.config.schema import RunConfig
from prospect.data import load_records
from prospect.engine.model import (
    check_adapter_weights,
    disable_dropout,
    freeze,
    load_causal_lm,
    load_tokenizer,
    quantization_config,
)
from prospect.engine.reference import reference_context
from prospect.errors import ProspectError
from prospect.eval import metrics as M
from prospect.eval.scoring import EvalModels, evaluate_records, finite, samples_and_user_metrics
from prospect.io import atomic_write_json

log = logging.getLogger("prospect")


def load_run_for_eval(run_dir: Path) -> tuple[RunConfig, Path, bool]:
    """(config, model directory, is_run_dir) for a run directory or a bare model/adapter directory."""
    cfg_path = run_dir / "config.yaml"
    if cfg_path.is_file():
        final = run_dir / "final"
        if not final.is_dir():
            raise ProspectError(
                f"{run_dir}: no final/ model (the run has not finished); "
                "train it to the end first (prospect train resumes it)"
            )
        return load_saved_config(cfg_path), final, True
    if (run_dir / "adapter_config.json").is_file():
        base = json.loads((run_dir / "adapter_config.json").read_text(encoding="utf-8")).get("base_model_name_or_path")
        if not base:
            raise ProspectError(f"{run_dir}/adapter_config.json does not name its base model (base_model_name_or_path)")
        return RunConfig.model_validate({"model": {"name": base}}), run_dir, False
    if (run_dir / "config.json").is_file():
        cfg = RunConfig.model_validate(
            {"model": {"name": str(run_dir)}, "kto": {"reference_free": True}, "dpo": {"reference_free": True}}
        )
        return cfg, run_dir, False
    raise ProspectError(
        f"{run_dir}: neither a run directory (config.yaml + final/) nor a model directory "
        "(config.json or adapter_config.json)"
    )


def _init_kwargs(cfg: RunConfig) -> dict[str, Any]:
    return {**(cfg.method_section.model_init_kwargs or {}), **(cfg.model.model_init_kwargs or {})}


def load_for_eval(cfg: RunConfig, model_dir: Path) -> EvalModels:
    """Load the model in `model_dir` and its reference under the run's config."""
    sec = cfg.method_section
    tokenizer = load_tokenizer(
        cfg.model.model_copy(
            update={"name": str(model_dir), "gguf_file": None, "tokenizer_name": None, "revision": None}
        )
    )
    is_adapter = (model_dir / "adapter_config.json").is_file() and not (model_dir / "config.json").is_file()
    reference: Any | None = None
    desc = "none (log pi_ref = 0)"
    if is_adapter:
        from peft import PeftModel

        # a QLoRA adapter is evaluated on the quantized base it was trained on
        base = load_causal_lm(
            cfg.model.name, cfg.model, cfg.model.gguf_file, _init_kwargs(cfg), quantization_config(cfg)
        )
        check_adapter_weights(model_dir, cfg.model.use_safetensors)
        policy = PeftModel.from_pretrained(base, str(model_dir))
        if sec.reference_model_name and not sec.reference_free:
            reference = load_causal_lm(sec.reference_model_name, cfg.model, None, sec.ref_model_init_kwargs)
            desc = f"reference_model_name {sec.reference_model_name}"
    else:
        policy = load_causal_lm(str(model_dir), cfg.model.model_copy(update={"revision": None}), None, None)
        if not sec.reference_free and (sec.reference_model_name or cfg.model.name != str(model_dir)):
            ref_name = sec.reference_model_name or cfg.model.name
            gguf = None if sec.reference_model_name else cfg.model.gguf_file
            reference = load_causal_lm(ref_name, cfg.model, gguf, sec.ref_model_init_kwargs or _init_kwargs(cfg))
            desc = f"{'reference_model_name' if sec.reference_model_name else 'base model'} {ref_name}"
    device = "cuda" if torch.cuda.is_available() else "cpu"
    for m in (policy, reference):
        if m is not None:
            disable_dropout(m)
            freeze(m.to(device))
    if sec.reference_free:
        return EvalModels(policy, None, tokenizer, "none (reference_free)")
    if reference is None and is_adapter:
        desc = f"base model {cfg.model.name} (adapter disabled)"
    return EvalModels(policy, reference_context(policy, reference), tokenizer, desc)


def _data_config(cfg: RunConfig, data_file: str) -> Any:
    """The run's data settings pointed at `data_file`: every row, no split, no balancing."""
    return cfg.data.model_copy(
        update={
            "train_file": str(data_file),
            "validation_file": None,
            "test_file": None,
            "validation_split_percentage": 0.0,
            "max_samples": None,
            "sanity_check": False,
            "balance_labels": False,
            "balance_strategy": "none",
            "streaming": False,
            "strict": False,
        }
    )


def load_eval_records(cfg: RunConfig, data_file: str | None, own_run: bool) -> tuple[list[Any], str, str]:
    """(records, kind, source description). Pairs are preferred when the file holds them."""
    method = cfg.method.name
    reorient = METHODS[method].reorients_pairs
    run_kind = METHODS[method].kind
    if data_file is None:
        if not own_run:
            raise ProspectError("a model directory has no held-out data of its own: pass --data FILE")
        loaded = load_records(cfg.data, kind=run_kind, seed=cfg.training.seed, method=method, delta_reorient=reorient)
        records = list(loaded.validation or [])
        source = cfg.data.validation_file or f"{cfg.data.train_file} (held-out split)"
        if not records:
            raise ProspectError(
                f"{cfg.data.train_file}: the run has no held-out rows (no validation_file and "
                "validation_split_percentage 0); pass --data FILE"
            )
        return records, run_kind, source
    if not Path(data_file).exists():
        raise ProspectError(f"{data_file}: no such data file")
    data_cfg = _data_config(cfg, data_file)
    errors = []
    for kind in ("paired", "unpaired"):
        try:
            loaded = load_records(data_cfg, kind=kind, seed=cfg.training.seed, method=method, delta_reorient=reorient)
        except ProspectError as exc:
            errors.append(f"as {kind}: {exc}")
            continue
        records = list(loaded.train or []) + list(loaded.validation or [])
        if records:
            return records, kind, str(data_file)
        errors.append(f"as {kind}: no usable rows")
    raise ProspectError(f"{data_file}: no rows to evaluate ({'; '.join(errors)})")


def evaluate_run(run_dir: str | Path, data_file: str | None = None) -> dict[str, Any]:
    """Evaluate a finished run (or a model directory) on `data_file` or the run's held-out data.

    Returns the dict written to run_dir/eval/metrics.json: data_file, kind, n_examples,
    metrics {...}, generations_file, and the run's name, method and base model.
    """
    run_dir = Path(run_dir).resolve()
    if not run_dir.is_dir():
        raise ProspectError(f"{run_dir}: no such run directory")
    cfg, model_dir, own_run = load_run_for_eval(run_dir)
    M.check_metric_names(cfg.evaluation.metrics)
    records, kind, source = load_eval_records(cfg, data_file, own_run)
    models = load_for_eval(cfg, model_dir)
    metrics = evaluate_records(cfg, models, records, kind)
    if not own_run:  # a bare model directory has no method of its own: no loss, no z0
        metrics.pop("loss", None)
        metrics.pop("z0", None)
    eval_dir = run_dir / "eval"
    gen_path = eval_dir / "generations.jsonl"
    samples, user = samples_and_user_metrics(cfg, models, records, gen_path, search_dirs=[Path.cwd(), run_dir])
    metrics.update(user)
    result = finite(
        {
            "run": run_dir.name,
            "method": cfg.method.name,
            "model": cfg.model.name,
            "model_dir": str(model_dir),
            "data_file": source,
            "kind": kind,
            "n_examples": len(records),
            "metrics": metrics,
            "generations_file": str(gen_path.relative_to(run_dir)),
            "n_generations": len(samples),
        }
    )
    atomic_write_json(eval_dir / "metrics.json", result)
    return result
