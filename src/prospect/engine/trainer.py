"""`PreferenceTrainer`: a `transformers.Trainer` that coordinates log-probs, loss and logging.

It holds no loss formula: `compute_loss` computes per-sequence log-probs of the policy
(and of the reference, unless they were precomputed), hands them to the registered loss
(`prospect.losses`), and stores the loss's metrics for logging. Everything else —
optimizer, scheduler, accumulation, checkpoints, resume, trackers, Accelerate — is the
stock Trainer.
"""
from __future__ import annotations

import contextlib
import math
from collections import defaultdict
from typing import Any, Optional

import torch
from torch import Tensor
from transformers import Trainer

from prospect.engine.logprobs import sequence_logps
from prospect.errors import TrainingError
from prospect.losses.base import LossOutput, PairedLogps, UnpairedLogps


def distributed_mean(x: Tensor) -> Tensor:
    """Mean of a scalar across data-parallel processes (identity in a single process)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        y = x.detach().clone().float()
        dist.all_reduce(y)
        return (y / dist.get_world_size()).to(x.dtype)
    return x


def _mean(x: Tensor) -> float:
    return float(x.float().mean().item()) if x.numel() else float("nan")


class PreferenceTrainer(Trainer):
    """Trainer for unpaired (KTO-family) and paired (DPO-family) preference losses.

    loss_fn: object with `.kind` ("unpaired" | "paired") and `__call__(logps) -> LossOutput`.
    z0_estimator: for unpaired losses, `.estimate(kl_policy, kl_reference) -> Tensor` (scalar).
    ref_model: a separate frozen reference, or None (LoRA: adapter disabled; or reference_free).
    """

    def __init__(self, *args: Any, loss_fn: Any, z0_estimator: Any = None, ref_model: Any = None,
                 reference_free: bool = False, max_nonfinite_steps: int = 3, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.loss_fn = loss_fn
        self.z0_estimator = z0_estimator
        self.ref_model = ref_model
        self.reference_free = reference_free
        self.max_nonfinite_steps = max_nonfinite_steps
        self.nonfinite_in_a_row = 0
        self.nonfinite_total = 0
        self._stored: dict[str, dict[str, list[float]]] = {"train": defaultdict(list), "eval": defaultdict(list)}
        # Our losses are per-batch means: let Trainer divide by the accumulation steps.
        self.loss_is_scaled_for_ga = False
        self.model_accepts_loss_kwargs = False
        if self.ref_model is not None:
            self.ref_model.eval()
            for p in self.ref_model.parameters():
                p.requires_grad_(False)

    # -- reference ---------------------------------------------------------------
    @contextlib.contextmanager
    def _reference_context(self) -> Any:
        """Yields the module that computes reference log-probs (adapter disabled for LoRA)."""
        if self.ref_model is not None:
            yield self.ref_model
            return
        model = self.accelerator.unwrap_model(self.model)
        if hasattr(model, "disable_adapter"):
            with model.disable_adapter():
                yield model
        else:  # full fine-tuning without a reference copy should not reach here
            raise TrainingError("no reference model: enable LoRA, set reference_model_name, or reference_free: true")

    def reference_logps(self, batch: dict[str, Any], prefix: str, n: int) -> Tensor:
        if self.reference_free:
            return torch.zeros(n, device=batch[prefix + "input_ids"].device)
        with torch.no_grad(), self._reference_context() as ref:
            return sequence_logps(ref, batch, prefix, n)[0]

    # -- loss --------------------------------------------------------------------
    def _unpaired_inputs(self, model: Any, batch: dict[str, Any]) -> UnpairedLogps:
        n = int(batch["n"])
        policy, lengths = sequence_logps(model, batch, "", n)
        reference = batch["ref_logps"] if "ref_logps" in batch else self.reference_logps(batch, "", n)
        z0 = self._z0(model, batch, "kl_", n)
        return UnpairedLogps(policy=policy, reference=reference.to(policy.dtype), label=batch["label"], z0=z0,
                             weight=batch.get("weight"), lengths=lengths)

    def _z0(self, model: Any, batch: dict[str, Any], prefix: str, n: int) -> Tensor:
        """Reference point from the mismatched pairs (no autograd: z0 is detached anyway)."""
        if self.z0_estimator is None or prefix + "input_ids" not in batch:
            return torch.zeros(())
        with torch.no_grad():
            kl_policy = sequence_logps(self.accelerator.unwrap_model(model), batch, prefix, n)[0]
            kl_reference = batch.get("ref_" + prefix + "logps")
            if kl_reference is None:
                kl_reference = self.reference_logps(batch, prefix, n)
        return self.z0_estimator.estimate(kl_policy, kl_reference)

    def _paired_inputs(self, model: Any, batch: dict[str, Any]) -> PairedLogps:
        n = int(batch["n"])
        logps, lengths = sequence_logps(model, batch, "", 2 * n)
        if "ref_chosen_logps" in batch:
            ref = torch.cat([batch["ref_chosen_logps"], batch["ref_rejected_logps"]]).to(logps.dtype)
        else:
            ref = self.reference_logps(batch, "", 2 * n).to(logps.dtype)
        extra: dict[str, Any] = {}
        if "kl_input_ids" in batch:
            extra["z0"] = self._z0(model, batch, "kl_", n)
        return PairedLogps(
            policy_chosen=logps[:n], policy_rejected=logps[n:], reference_chosen=ref[:n], reference_rejected=ref[n:],
            chosen_lengths=lengths[:n], rejected_lengths=lengths[n:], h_w=batch.get("h_w"), h_l=batch.get("h_l"),
            margin=batch.get("margin"), **extra,
        )

    def preference_loss(self, model: Any, batch: dict[str, Any]) -> LossOutput:
        if self.loss_fn.kind == "unpaired":
            return self.loss_fn(self._unpaired_inputs(model, batch))
        return self.loss_fn(self._paired_inputs(model, batch))

    def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> Any:
        out = self.preference_loss(model, inputs)
        loss = out.loss
        if not torch.isfinite(loss.detach()):
            # Skip the step's update (zero loss keeps the graph) and stop after too many in a row.
            self.nonfinite_in_a_row += 1
            self.nonfinite_total += 1
            if self.nonfinite_in_a_row >= self.max_nonfinite_steps:
                raise TrainingError(
                    f"{self.nonfinite_in_a_row} non-finite losses in a row (step {self.state.global_step}); "
                    "lower the learning rate or check the data")
            # A zero built from the trainable parameters: zero gradients, no NaN flowing back.
            loss = sum((p * 0.0).sum() for p in model.parameters() if p.requires_grad)
        else:
            self.nonfinite_in_a_row = 0
        self._store(out, "train" if model.training else "eval")
        return (loss, {"loss": loss.detach()}) if return_outputs else loss

    # -- metrics -----------------------------------------------------------------
    def _store(self, out: LossOutput, split: str) -> None:
        s = self._stored[split]
        ch, rj = out.chosen_rewards.detach(), out.rejected_rewards.detach()
        if ch.numel():
            s["rewards/chosen"].append(_mean(ch))
        if rj.numel():
            s["rewards/rejected"].append(_mean(rj))
        if ch.numel() and rj.numel():
            s["rewards/margins"].append(_mean(ch) - _mean(rj))
            if self.loss_fn.kind == "paired":  # per pair: chosen reward above rejected reward
                s["rewards/accuracies"].append(_mean((ch > rj).float()))
            else:  # unpaired: over every (desirable, undesirable) couple in the batch (a batch AUC)
                s["rewards/accuracies"].append(_mean((ch[:, None] > rj[None, :]).float()))
        for k, v in out.metrics.items():
            if v is not None and not (isinstance(v, float) and math.isnan(v)):
                s[k].append(float(v))

    def prediction_step(self, model: Any, inputs: dict[str, Any], prediction_loss_only: bool,
                        ignore_keys: Optional[list[str]] = None) -> tuple[Tensor, None, None]:
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad():
            out = self.preference_loss(model, inputs)
        self._store(out, "eval")
        return out.loss.detach(), None, None

    def log(self, logs: dict[str, float], start_time: Optional[float] = None) -> None:
        split = "train" if "loss" in logs else "eval"
        prefix = "" if split == "train" else "eval_"
        for k, vals in self._stored[split].items():
            if vals:
                logs[prefix + k] = round(sum(vals) / len(vals), 6)
        self._stored[split].clear()
        if split == "train" and self.nonfinite_total:
            logs["nonfinite_steps"] = self.nonfinite_total
        super().log(logs, start_time)

