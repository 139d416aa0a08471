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
read the way the run read it.

Metrics (formulas in `prospect.eval.metrics`), with beta the run's method beta:
reward_accuracy, margin, chosen/rejected (desirable/undesirable) mean rewards, kl (on
chosen/desirable completions), perplexity and reference_perplexity of chosen/desirable
completions, loss (the run's loss on the whole set taken as one batch; for KTO z0 is
estimated from the mismatched pairs (x_i, y_(i-1 mod n)) of the whole set; a KTO run on
pairs counts chosen as desirable and rejected as undesirable; a DPO-family run on unpaired
rows has none), and user metrics (`pkg.module:function`) over the generation samples
(greedy, `evaluation.num_generation_samples` prompts, `max_new_tokens` each).

Writes run_dir/eval/metrics.json and run_dir/eval/generations.jsonl (atomically).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager as ContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from prospect.config.schema import RunConfig
from prospect.errors import ProspectError

log = logging.getLogger("prospect")


# --------------------------------------------------------------------------- config and models
def load_run_config(run_dir: Path) -> tuple[RunConfig, Path, bool]:
    """(config, model directory, is_run_dir) for a run directory or a bare model/adapter directory."""
    from prospect.config.loader import load_saved_config

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


@dataclass
class EvalModels:
    """The policy, a reference context (a zero-argument callable returning a context manager that
    yields the reference model; None: no reference, log pi_ref = 0), the tokenizer, and what the
    reference is, in words."""

    policy: Any
    reference: Callable[[], ContextManager[Any]] | None
    tokenizer: Any
    reference_desc: str


def load_for_eval(cfg: RunConfig, model_dir: Path) -> EvalModels:
    """Load the model in `model_dir` and its reference under the run's config."""
    from prospect.engine.model import check_adapter_weights, disable_dropout, freeze, load_causal_lm, load_tokenizer

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

        base = load_causal_lm(cfg.model.name, cfg.model, cfg.model.gguf_file, _init_kwargs(cfg))
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
    if reference is not None:
        return EvalModels(policy, lambda: contextlib.nullcontext(reference), tokenizer, desc)
    if is_adapter:

        @contextlib.contextmanager
        def adapter_disabled() -> Any:
            with policy.disable_adapter():
                yield policy

        return EvalModels(policy, adapter_disabled, tokenizer, f"base model {cfg.model.name} (adapter disabled)")
    return EvalModels(policy, None, tokenizer, desc)


# --------------------------------------------------------------------------- data
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
    from prospect.data import load_records

    method = cfg.method.name
    reorient = method == "factual_dpo"
    run_kind = "unpaired" if cfg.is_unpaired else "paired"
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


# --------------------------------------------------------------------------- log-probs
def tokenize_settings_for(cfg: RunConfig, model: Any = None) -> Any:
    """The TokenizeSettings training used for `cfg` (max_length capped at `model`'s context), taken
    from the engine so evaluation tokenizes exactly as training did."""
    from prospect.engine import run as engine_run

    public = getattr(engine_run, "tokenize_settings", None)
    if public is not None:
        return public(cfg, model)
    cap = getattr(engine_run, "_context_cap", None)
    max_len = cap(cfg, model) if cap is not None and model is not None else cfg.effective_max_length
    return engine_run._settings(cfg, max_len)


def completion_logps(
    model: Any, seqs: Sequence[tuple[list[int], list[int]]], *, pad_id: int, batch_size: int, desc: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed completion log-probs and completion lengths of (prompt_ids, completion_ids) pairs,
    in input order (computed in batches sorted by length, under inference mode)."""
    from tqdm.auto import tqdm

    from prospect.data.collate import layout
    from prospect.engine.logprobs import sequence_logps

    n = len(seqs)
    logps = torch.zeros(n, dtype=torch.float64)
    lengths = torch.zeros(n, dtype=torch.long)
    if n == 0:
        return logps, lengths
    device = next(model.parameters()).device
    order = sorted(range(n), key=lambda i: len(seqs[i][0]) + len(seqs[i][1]))
    chunks = [order[i : i + batch_size] for i in range(0, n, batch_size)]
    with torch.inference_mode():
        for idx in tqdm(chunks, desc=desc, unit="batch", disable=len(chunks) < 4):
            batch = layout([seqs[i][0] for i in idx], [seqs[i][1] for i in idx], pad_id=pad_id)
            batch = {k: v.to(device) for k, v in batch.items()}
            lp, ln = sequence_logps(model, batch, "", len(idx))
            logps[idx] = lp.double().cpu()
            lengths[idx] = ln.cpu()
    return logps, lengths


def _both(
    policy: Any,
    ref_ctx: Callable[[], ContextManager[Any]] | None,
    seqs: Sequence[tuple[list[int], list[int]]],
    pad_id: int,
    batch_size: int,
    what: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(policy logps, reference logps (0 without a reference), lengths)."""
    pol, lengths = completion_logps(policy, seqs, pad_id=pad_id, batch_size=batch_size, desc=f"Evaluating {what}")
    if ref_ctx is None:
        return pol, torch.zeros_like(pol), lengths
    with ref_ctx() as ref_model:
        ref, _ = completion_logps(ref_model, seqs, pad_id=pad_id, batch_size=batch_size, desc=f"Reference {what}")
    return pol, ref, lengths


def _mismatched(
    prompts: Sequence[list[int]], completions: Sequence[list[int]], max_length: int
) -> list[tuple[list[int], list[int]]]:
    """(x_i, y_(i-1 mod n)) cut to max_length (TRL's rotation, as the training collator builds it)."""
    from prospect.data.collate import eval_mismatched_pairs

    return eval_mismatched_pairs(prompts, completions, len(prompts), max_length, range(len(prompts)))


# --------------------------------------------------------------------------- metrics
def _loss(cfg: RunConfig, logps: Any) -> float | None:
    """The run's own loss on `logps` (UnpairedLogps or PairedLogps); None if it cannot be computed."""
    from prospect.losses import build_loss

    try:
        value = float(build_loss(cfg)(logps).loss.detach())
        return value if math.isfinite(value) else None
    except Exception as exc:  # noqa: BLE001 - the other metrics stand without it
        log.warning("eval loss could not be computed: %s", exc)
        return None


def _z0(cfg: RunConfig, kl_policy: torch.Tensor, kl_reference: torch.Tensor) -> torch.Tensor:
    """The run's reference-point estimator on all the mismatched pairs of the data at once
    (KTO: max(0, mean r)); a running estimate starts afresh here, so it is that same mean."""
    from prospect.losses import build_reference_point

    return (
        build_reference_point(cfg.kto.reference_point)
        .estimate(kl_policy.float(), kl_reference.float())
        .detach()
        .float()
    )


def evaluate_records(cfg: RunConfig, models: EvalModels, records: Sequence[Any], kind: str) -> dict[str, Any]:
    """Metrics of the policy on tokenized `records` (see the module docstring).

    The loss is the run's loss where the data fit the method: pairs for DPO-family runs; rows
    for KTO runs, or pairs turned into rows (chosen desirable, rejected undesirable). A
    DPO-family run evaluated on unpaired rows has no loss (None).
    """
    from prospect.data.tokenize import tokenize_records
    from prospect.eval import metrics as M
    from prospect.losses.base import PairedLogps, UnpairedLogps

    policy, ref_ctx, tokenizer = models.policy, models.reference, models.tokenizer
    beta = cfg.method_section.beta
    settings = tokenize_settings_for(cfg, policy)
    ds, _ = tokenize_records(records, tokenizer, settings, kind=kind, use_cache=False, desc="Tokenizing eval")
    rows = list(ds)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    bs = cfg.training.eval_batch_size or cfg.training.batch_size
    max_len = settings.max_length
    wants_z0 = (cfg.is_unpaired or cfg.method.name == "dpo_kto") and cfg.kto.reference_point != "zero" and len(rows) > 1
    out: dict[str, Any] = {"beta": beta, "reference": models.reference_desc}
    f = torch.float32
    if kind == "paired":
        prompts = [r["prompt_ids"] for r in rows]
        pc, rc, lc = _both(policy, ref_ctx, [(r["prompt_ids"], r["chosen_ids"]) for r in rows], pad_id, bs, "chosen")
        pr, rr, lr = _both(
            policy, ref_ctx, [(r["prompt_ids"], r["rejected_ids"]) for r in rows], pad_id, bs, "rejected"
        )
        ch, rj = M.rewards(pc, rc, beta), M.rewards(pr, rr, beta)
        out.update(
            {
                "n_pairs": len(rows),
                "reward_accuracy": M.reward_accuracy(ch, rj),
                "margin": M.mean_margin(ch, rj),
                "chosen_reward": float(ch.mean()),
                "rejected_reward": float(rj.mean()),
                "kl": M.kl_estimate(pc, rc),
                "perplexity": M.perplexity(pc, lc),
                "rejected_perplexity": M.perplexity(pr, lr),
            }
        )
        if ref_ctx is not None:
            out["reference_perplexity"] = M.perplexity(rc, lc)
        z0 = None
        if wants_z0:
            kp, kr, _ = _both(
                policy,
                ref_ctx,
                _mismatched(prompts, [r["chosen_ids"] for r in rows], max_len),
                pad_id,
                bs,
                "mismatched pairs",
            )
            z0 = _z0(cfg, kp, kr)
            out["z0"] = float(z0)
        if cfg.is_unpaired:  # a KTO run on pairs: chosen desirable, rejected undesirable
            n = len(rows)
            logps: Any = UnpairedLogps(
                policy=torch.cat([pc, pr]).to(f),
                reference=torch.cat([rc, rr]).to(f),
                label=torch.tensor([True] * n + [False] * n),
                z0=z0 if z0 is not None else torch.zeros(()),
                lengths=torch.cat([lc, lr]),
            )
        else:
            logps = PairedLogps(
                policy_chosen=pc.to(f),
                policy_rejected=pr.to(f),
                reference_chosen=rc.to(f),
                reference_rejected=rr.to(f),
                chosen_lengths=lc,
                rejected_lengths=lr,
                h_w=torch.tensor([r["h_w"] for r in rows]),
                h_l=torch.tensor([r["h_l"] for r in rows]),
                margin=torch.tensor([r["margin"] for r in rows], dtype=f),
                z0=z0,
            )
        out["loss"] = _loss(cfg, logps)
        return out
    prompts = [r["prompt_ids"] for r in rows]
    completions = [r["completion_ids"] for r in rows]
    pol, ref, lengths = _both(policy, ref_ctx, list(zip(prompts, completions)), pad_id, bs, "completions")
    label = torch.tensor([bool(r["label"]) for r in rows], dtype=torch.bool)
    r = M.rewards(pol, ref, beta)
    d, u = r[label], r[~label]
    out.update(
        {
            "n_desirable": int(label.sum()),
            "n_undesirable": int((~label).sum()),
            "reward_accuracy": M.ranking_accuracy(d, u),
            "margin": M.mean_margin(d, u),
            "desirable_reward": float(d.mean()) if d.numel() else float("nan"),
            "undesirable_reward": float(u.mean()) if u.numel() else float("nan"),
            "kl": M.kl_estimate(pol[label], ref[label]),
            "perplexity": M.perplexity(pol[label], lengths[label]),
            "undesirable_perplexity": M.perplexity(pol[~label], lengths[~label]),
        }
    )
    if ref_ctx is not None:
        out["reference_perplexity"] = M.perplexity(ref[label], lengths[label])
    if not cfg.is_unpaired:
        out["loss"] = None  # the run's loss needs pairs
        return out
    z0 = torch.zeros(())
    if wants_z0:
        kp, kr, _ = _both(policy, ref_ctx, _mismatched(prompts, completions, max_len), pad_id, bs, "mismatched pairs")
        z0 = _z0(cfg, kp, kr)
        out["z0"] = float(z0)
    out["loss"] = _loss(
        cfg,
        UnpairedLogps(
            policy=pol.to(f),
            reference=ref.to(f),
            label=label,
            z0=z0,
            lengths=lengths,
            weight=torch.tensor([float(x["weight"]) for x in rows], dtype=f),
        ),
    )
    return out


def _finite(obj: Any) -> Any:
    """NaN/inf -> None so metrics.json is strict JSON."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj


def samples_and_user_metrics(
    cfg: RunConfig, models: EvalModels, records: Sequence[Any], path: Path, *, search_dirs: Sequence[Path] = ()
) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """Greedy generations for the first `evaluation.num_generation_samples` prompts of `records`
    (policy and reference), written to `path` (JSONL, atomically), and the user metrics of
    `evaluation.metrics` (`pkg.module:function`) called on them. Returns (samples, metrics)."""
    from prospect.data.tokenize import RecordTokenizer
    from prospect.eval import metrics as M
    from prospect.eval.generation import generate_samples, pick_prompts
    from prospect.io import atomic_write_text

    ev = cfg.evaluation
    specs = pick_prompts(records, ev.num_generation_samples)
    rt = RecordTokenizer(models.tokenizer, tokenize_settings_for(cfg, models.policy))
    samples = generate_samples(
        models.policy,
        models.tokenizer,
        lambda p, s: rt.encode(p, "", s)[0],
        specs,
        max_new_tokens=ev.max_new_tokens,
        reference_context=models.reference,
    )
    atomic_write_text(path, "".join(json.dumps(x, ensure_ascii=False) + "\n" for x in samples))
    user_refs = [m for m in ev.metrics if M.is_user_metric(m)]
    if not user_refs:
        return samples, {}
    if not samples:
        log.warning(
            "evaluation.metrics %s need generation samples; evaluation.num_generation_samples is 0",
            ", ".join(user_refs),
        )
        return samples, {}
    return samples, M.run_user_metrics(
        user_refs,
        [x["prompt"] for x in samples],
        [x["generation"] for x in samples],
        [x["reference"] for x in samples],
        search_dirs=search_dirs,
    )


# --------------------------------------------------------------------------- entry point
def evaluate_run(run_dir: str | Path, data_file: str | None = None) -> dict[str, Any]:
    """Evaluate a finished run (or a model directory) on `data_file` or the run's held-out data.

    Returns the dict written to run_dir/eval/metrics.json: data_file, kind, n_examples,
    metrics {...}, generations_file, and the run's name, method and base model.
    """
    from prospect.eval import metrics as M
    from prospect.io import atomic_write_json

    run_dir = Path(run_dir).resolve()
    if not run_dir.is_dir():
        raise ProspectError(f"{run_dir}: no such run directory")
    cfg, model_dir, own_run = load_run_config(run_dir)
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
    result = _finite(
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
