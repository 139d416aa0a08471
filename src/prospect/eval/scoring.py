"""Scoring a policy against its reference on tokenized records: rewards, accuracy, margin, KL, loss.

`evaluate_records(cfg, models, records, kind)` computes, with beta the run's method beta:
reward_accuracy, margin, chosen/rejected (desirable/undesirable) mean rewards, kl (on
chosen/desirable completions), perplexity and reference_perplexity of chosen/desirable
completions, and loss (the run's loss on the whole set taken as one batch; for a loss that
reads a reference point, z0 is estimated from the mismatched pairs (x_i, y_(i-1 mod n)) of the
whole set; a KTO run on pairs counts chosen as desirable and rejected as undesirable; a
DPO-family run on unpaired rows has none). Formulas in `prospect.eval.metrics`.

`samples_and_user_metrics` writes greedy generations of the policy and the reference for a few
prompts and calls the user metrics (`pkg.module:function`) on them.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from prospect.config.schema import RunConfig
from prospect.data.layout import layout, mismatched_pairs
from prospect.data.tokenize import RecordTokenizer, tokenize_records
from prospect.engine.args import tokenize_settings
from prospect.engine.build import builds_mismatched
from prospect.engine.logprobs import sequence_logps
from prospect.engine.reference import ReferenceContext
from prospect.eval import metrics as M
from prospect.eval.generation import generate_samples, pick_prompts
from prospect.io import atomic_write_text
from prospect.losses import build_loss, build_reference_point
from prospect.losses.base import PairedLogps, UnpairedLogps

log = logging.getLogger("prospect")


@dataclass
class EvalModels:
    """The policy, a reference context (`engine.reference.reference_context`; None: no reference,
    log pi_ref = 0), the tokenizer, and what the reference is, in words."""

    policy: Any
    reference: ReferenceContext | None
    tokenizer: Any
    reference_desc: str


def completion_logps(
    model: Any, seqs: Sequence[tuple[list[int], list[int]]], *, pad_id: int, batch_size: int, desc: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed completion log-probs and completion lengths of (prompt_ids, completion_ids) pairs,
    in input order (computed in batches sorted by length, under inference mode)."""
    from tqdm.auto import tqdm

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
    ref_ctx: ReferenceContext | None,
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
    return mismatched_pairs(prompts, completions, [list(range(len(prompts)))], max_length)


def _run_loss(cfg: RunConfig) -> Any:
    """The run's loss object, or None if the config cannot build one (a bare model directory's defaults)."""
    try:
        return build_loss(cfg)
    except Exception as exc:  # noqa: BLE001 - the other metrics stand without it
        log.warning("eval loss could not be built: %s", exc)
        return None


def _loss(loss: Any, logps: Any) -> float | None:
    """`loss` on `logps` (UnpairedLogps or PairedLogps); None if it cannot be computed."""
    if loss is None:
        return None
    try:
        value = float(loss(logps).loss.detach())
        return value if math.isfinite(value) else None
    except Exception as exc:  # noqa: BLE001 - the other metrics stand without it
        log.warning("eval loss could not be computed: %s", exc)
        return None


def _z0(cfg: RunConfig, kl_policy: torch.Tensor, kl_reference: torch.Tensor) -> torch.Tensor:
    """The run's reference-point estimator on all the mismatched pairs of the data at once
    (KTO: max(0, mean r)); a running estimate starts afresh here, so it is that same mean."""
    return (
        build_reference_point(cfg.kto.reference_point)
        .estimate(kl_policy.float(), kl_reference.float())
        .detach()
        .float()
    )


@dataclass
class _Scorer:
    """What scoring one set needs: the models, batch settings, the run's loss and whether it reads z0."""

    cfg: RunConfig
    models: EvalModels
    pad_id: int
    batch_size: int
    max_length: int
    loss: Any
    wants_z0: bool

    def logps(self, seqs: Sequence[tuple[list[int], list[int]]], what: str) -> tuple[Any, Any, Any]:
        return _both(self.models.policy, self.models.reference, seqs, self.pad_id, self.batch_size, what)

    def z0(self, prompts: Sequence[list[int]], completions: Sequence[list[int]]) -> torch.Tensor | None:
        """The run's z0 on the whole set's mismatched pairs, or None when the loss reads none."""
        if not self.wants_z0:
            return None
        kp, kr, _ = self.logps(_mismatched(prompts, completions, self.max_length), "mismatched pairs")
        return _z0(self.cfg, kp, kr)


def evaluate_records(cfg: RunConfig, models: EvalModels, records: Sequence[Any], kind: str) -> dict[str, Any]:
    """Metrics of the policy on tokenized `records` (see the module docstring).

    The loss is the run's loss where the data fit the method: pairs for DPO-family runs; rows
    for KTO runs, or pairs turned into rows (chosen desirable, rejected undesirable). A
    DPO-family run evaluated on unpaired rows has no loss (None).
    """
    tokenizer = models.tokenizer
    settings = tokenize_settings(cfg, models.policy)
    ds, _ = tokenize_records(records, tokenizer, settings, kind=kind, use_cache=False, desc="Tokenizing eval")
    rows = list(ds)
    run_loss = _run_loss(cfg)
    scorer = _Scorer(
        cfg,
        models,
        pad_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
        batch_size=cfg.training.eval_batch_size or cfg.training.batch_size,
        max_length=settings.max_length,
        loss=run_loss,
        wants_z0=run_loss is not None and builds_mismatched(cfg, run_loss) and len(rows) > 1,
    )
    out: dict[str, Any] = {"beta": cfg.method_section.beta, "reference": models.reference_desc}
    out.update(_score_pairs(scorer, rows) if kind == "paired" else _score_rows(scorer, rows))
    return out


def _score_pairs(s: _Scorer, rows: list[dict[str, Any]]) -> dict[str, Any]:
    beta, f = s.cfg.method_section.beta, torch.float32
    prompts = [r["prompt_ids"] for r in rows]
    pc, rc, lc = s.logps([(r["prompt_ids"], r["chosen_ids"]) for r in rows], "chosen")
    pr, rr, lr = s.logps([(r["prompt_ids"], r["rejected_ids"]) for r in rows], "rejected")
    ch, rj = M.rewards(pc, rc, beta), M.rewards(pr, rr, beta)
    out: dict[str, Any] = {
        "n_pairs": len(rows),
        "reward_accuracy": M.reward_accuracy(ch, rj),
        "margin": M.mean_margin(ch, rj),
        "chosen_reward": float(ch.mean()),
        "rejected_reward": float(rj.mean()),
        "kl": M.kl_estimate(pc, rc),
        "perplexity": M.perplexity(pc, lc),
        "rejected_perplexity": M.perplexity(pr, lr),
    }
    if s.models.reference is not None:
        out["reference_perplexity"] = M.perplexity(rc, lc)
    z0 = s.z0(prompts, [r["chosen_ids"] for r in rows])
    if z0 is not None:
        out["z0"] = float(z0)
    if s.cfg.is_unpaired:  # a KTO run on pairs: chosen desirable, rejected undesirable
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
    out["loss"] = _loss(s.loss, logps)
    return out


def _score_rows(s: _Scorer, rows: list[dict[str, Any]]) -> dict[str, Any]:
    beta, f = s.cfg.method_section.beta, torch.float32
    prompts = [r["prompt_ids"] for r in rows]
    completions = [r["completion_ids"] for r in rows]
    pol, ref, lengths = s.logps(list(zip(prompts, completions)), "completions")
    label = torch.tensor([bool(r["label"]) for r in rows], dtype=torch.bool)
    r = M.rewards(pol, ref, beta)
    d, u = r[label], r[~label]
    out: dict[str, Any] = {
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
    if s.models.reference is not None:
        out["reference_perplexity"] = M.perplexity(ref[label], lengths[label])
    if not s.cfg.is_unpaired:
        out["loss"] = None  # the run's loss needs pairs
        return out
    z0 = s.z0(prompts, completions)
    if z0 is not None:
        out["z0"] = float(z0)
    weight = torch.tensor([float(x["weight"]) for x in rows], dtype=f)
    logps = UnpairedLogps(
        policy=pol.to(f),
        reference=ref.to(f),
        label=label,
        z0=z0 if z0 is not None else torch.zeros(()),
        lengths=lengths,
        weight=weight,
    )
    out["loss"] = _loss(s.loss, logps)
    return out


def finite(obj: Any) -> Any:
    """NaN/inf -> None so metrics.json is strict JSON."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [finite(v) for v in obj]
    return obj


def samples_and_user_metrics(
    cfg: RunConfig, models: EvalModels, records: Sequence[Any], path: Path, *, search_dirs: Sequence[Path] = ()
) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """Greedy generations for the first `evaluation.num_generation_samples` prompts of `records`
    (policy and reference), written to `path` (JSONL, atomically), and the user metrics of
    `evaluation.metrics` (`pkg.module:function`) called on them. Returns (samples, metrics)."""
    ev = cfg.evaluation
    specs = pick_prompts(records, ev.num_generation_samples)
    rt = RecordTokenizer(models.tokenizer, tokenize_settings(cfg, models.policy))
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
