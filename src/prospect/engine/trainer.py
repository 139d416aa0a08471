"""`PreferenceTrainer`: a `transformers.Trainer` that coordinates log-probs, loss and logging.

It holds no loss formula: `compute_loss` computes per-sequence log-probs of the policy
(and of the reference, unless they were precomputed), hands them to the registered loss
(`prospect.losses`), and stores the loss's metrics for logging. Everything else —
optimizer, scheduler, accumulation, checkpoints, resume, trackers, Accelerate — is the
stock Trainer.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections import defaultdict
from typing import Any

import torch
from torch import Tensor
from transformers import Trainer, TrainerCallback
from transformers.trainer_pt_utils import LengthGroupedSampler

from prospect.data.layout import PREFIX, eval_order
from prospect.data.tokenize import row_groups, row_shapes
from prospect.engine.batch_plan import PaddedCost
from prospect.engine.dist import concat_across_processes, distributed_mean, enable_fsdp_on_cpu
from prospect.engine.logprobs import sequence_logps
from prospect.engine.order import EpochSeededLengthGroupedSampler, FixedBatchSampler, PlannedLengthSampler
from prospect.engine.prefix import prompt_states, suffix_logps
from prospect.engine.reference import reference_context
from prospect.errors import TrainingError
from prospect.losses.base import LossOutput, PairedLogps, UnpairedLogps

log = logging.getLogger("prospect")


def _mean(x: Tensor) -> float:
    return float(x.float().mean().item()) if x.numel() else float("nan")


class PreferenceTrainer(Trainer):
    """Trainer for unpaired (KTO-family) and paired (DPO-family) preference losses.

    loss_fn: object with `.kind` ("unpaired" | "paired") and `__call__(logps) -> LossOutput`.
    z0_estimator: for unpaired losses, `.estimate(kl_policy, kl_reference) -> Tensor` (scalar).
    ref_model: a separate frozen reference, or None (LoRA: adapter disabled; or reference_free).
    train_batches: micro-batches composed before training (`engine.order.planned_train_batches`),
      kept every epoch so that their mismatched pairs are known in advance; None: the stock order.
    padding_cost: the step layout's padded compute (`engine.batch_plan.PaddedCost`); with it,
      length-grouped batches are composed to minimise it (`engine.order.PlannedLengthSampler`).
    """

    def __init__(
        self,
        *args: Any,
        loss_fn: Any,
        z0_estimator: Any = None,
        ref_model: Any = None,
        reference_free: bool = False,
        max_nonfinite_steps: int = 3,
        train_batches: list[list[int]] | None = None,
        padding_cost: PaddedCost | None = None,
        **kwargs: Any,
    ) -> None:
        self.train_batches = train_batches  # read by _get_train_sampler, which Trainer may call early
        self.padding_cost = padding_cost  # length-grouped batches composed for it (engine.batch_plan)
        super().__init__(*args, **kwargs)
        self.loss_fn = loss_fn
        self.z0_estimator = z0_estimator
        self.ref_model = ref_model
        self.reference_free = reference_free
        self.max_nonfinite_steps = max_nonfinite_steps
        self.nonfinite_in_a_row = 0
        self.nonfinite_total = 0
        self._nonfinite_loss_in_step = False
        self.add_callback(_NonFiniteStepGuard(self))
        self._stored: dict[str, dict[str, list[float]]] = {"train": defaultdict(list), "eval": defaultdict(list)}
        # Our losses are per-batch means: let Trainer divide by the accumulation steps.
        self.loss_is_scaled_for_ga = False
        self.model_accepts_loss_kwargs = False
        if self.ref_model is not None:
            self.ref_model.eval()
            for p in self.ref_model.parameters():
                p.requires_grad_(False)

    def create_accelerator_and_postprocess(self) -> None:
        super().create_accelerator_and_postprocess()
        if enable_fsdp_on_cpu(self.accelerator, self.args):  # several CPU processes, FSDP asked for
            self.is_fsdp_enabled = True

    # -- reference ---------------------------------------------------------------
    @contextlib.contextmanager
    def _reference_context(self) -> Any:
        """Yields the module that computes reference log-probs (`engine.reference.reference_context`)."""
        context = reference_context(self.accelerator.unwrap_model(self.model), self.ref_model)
        if context is None:  # full fine-tuning without a reference copy: the recipe refuses it earlier
            raise TrainingError("no reference model: enable LoRA, set reference_model_name, or reference_free: true")
        with context() as ref:
            yield ref

    def reference_logps(self, batch: dict[str, Any], prefix: str, n: int) -> Tensor:
        if self.reference_free:
            return torch.zeros(n, device=batch[prefix + "input_ids"].device)
        with torch.no_grad(), self._reference_context() as ref:
            return self._logps(ref, batch, prefix, n)[0]

    # Batches from a share_prompt collator hold the prompts once (prefix_*) and the completions as
    # suffixes on them (engine/prefix.py); others go through sequence_logps.
    @staticmethod
    def _logps(
        model: Any, batch: dict[str, Any], prefix: str, n: int, states: Any = None, detach: bool = False
    ) -> tuple[Tensor, Tensor]:
        """(log-probs, lengths) of the sequences batch[prefix + ...]; `states`: the prompts' keys/values if known."""
        if PREFIX + "input_ids" not in batch:
            return sequence_logps(model, batch, prefix, n)
        if states is None:
            states = prompt_states(model, batch)
        rows, prompts = batch[prefix + "input_ids"].shape[0], batch[PREFIX + "input_ids"].shape[0]
        return suffix_logps(model, batch, states, prefix, n, repeats=rows // prompts, detach=detach)

    @staticmethod
    def _states(model: Any, batch: dict[str, Any]) -> Any:
        return prompt_states(model, batch) if PREFIX + "input_ids" in batch else None

    # -- loss --------------------------------------------------------------------
    def _unpaired_inputs(self, model: Any, batch: dict[str, Any]) -> UnpairedLogps:
        n = int(batch["n"])
        states = self._states(model, batch)  # the prompts' keys/values, reused by the kl_ pass
        policy, lengths = self._logps(model, batch, "", n, states)
        reference = batch["ref_logps"] if "ref_logps" in batch else self.reference_logps(batch, "", n)
        z0 = self._z0(model, batch, "kl_", n, states)
        return UnpairedLogps(
            policy=policy,
            reference=reference.to(policy.dtype),
            label=batch["label"],
            z0=z0,
            weight=batch.get("weight"),
            lengths=lengths,
        )

    def _z0(self, model: Any, batch: dict[str, Any], prefix: str, n: int, states: Any = None) -> Tensor:
        """Reference point from the mismatched pairs (no autograd: z0 is detached anyway)."""
        if self.z0_estimator is None or prefix + "input_ids" not in batch:
            return torch.zeros(())
        with torch.no_grad():
            kl_policy = self._logps(self.accelerator.unwrap_model(model), batch, prefix, n, states, detach=True)[0]
            kl_reference = batch.get("ref_" + prefix + "logps")
            if kl_reference is None:
                kl_reference = self.reference_logps(batch, prefix, n)
        return self.z0_estimator.estimate(kl_policy, kl_reference)

    def _paired_inputs(self, model: Any, batch: dict[str, Any]) -> PairedLogps:
        n = int(batch["n"])
        states = self._states(model, batch)
        logps, lengths = self._logps(model, batch, "", 2 * n, states)
        if "ref_chosen_logps" in batch:
            ref = torch.cat([batch["ref_chosen_logps"], batch["ref_rejected_logps"]]).to(logps.dtype)
        else:
            ref = self.reference_logps(batch, "", 2 * n).to(logps.dtype)
        extra: dict[str, Any] = {}
        if "kl_input_ids" in batch:
            extra["z0"] = self._z0(model, batch, "kl_", n, states)
        return PairedLogps(
            policy_chosen=logps[:n],
            policy_rejected=logps[n:],
            reference_chosen=ref[:n],
            reference_rejected=ref[n:],
            chosen_lengths=lengths[:n],
            rejected_lengths=lengths[n:],
            h_w=batch.get("h_w"),
            h_l=batch.get("h_l"),
            margin=batch.get("margin"),
            **extra,
        )

    def preference_loss(self, model: Any, batch: dict[str, Any]) -> LossOutput:
        logps = (
            self._unpaired_inputs(model, batch)
            if self.loss_fn.kind == "unpaired"
            else self._paired_inputs(model, batch)
        )
        out = self.loss_fn(logps)
        out.metrics = {**logp_metrics(logps), **out.metrics}  # the loss's own kl (z0) wins
        return out

    def compute_loss(
        self, model: Any, inputs: dict[str, Any], return_outputs: bool = False, num_items_in_batch: Any = None
    ) -> Any:
        out = self.preference_loss(model, inputs)
        loss = out.loss
        if not torch.isfinite(loss.detach()):
            # Backpropagate a zero built from the trainable parameters (zero gradients, no NaN
            # flowing back) and mark the optimizer step for skipping (`skip_nonfinite_step`).
            # The value stays non-finite, so Trainer's logging_nan_inf_filter keeps it out of
            # the logged loss instead of a fake 0.
            self._nonfinite_loss_in_step = True
            zero = sum((p * 0.0).sum() for p in model.parameters() if p.requires_grad)
            loss = zero + loss.detach()
        self._store(out, "train" if model.training else "eval")
        return (loss, {"loss": loss.detach()}) if return_outputs else loss

    # -- data order --------------------------------------------------------------
    def _get_eval_sampler(self, eval_dataset: Any) -> Any:
        """One process: rows longest first (`collate.eval_order`), a fixed order whatever the seed or
        the training order, so the eval batches, hence KTO's in-batch mismatched pairs, are known
        when their reference log-probs are precomputed. Several processes: the stock sampler."""
        columns = getattr(eval_dataset, "column_names", None) or ()
        if self.args.world_size <= 1 and "length" in columns:
            return eval_order(eval_dataset["length"])
        return super()._get_eval_sampler(eval_dataset)

    def _get_train_sampler(self, train_dataset: Any = None) -> Any:
        """The stock sampler, except that length-grouped batches are drawn from (seed, epoch) alone,
        composed for the least padded compute under `padding_cost` (`PlannedLengthSampler`).

        Trainer's LengthGroupedSampler draws each epoch's order from the global RNG, which a resume
        restores only after that order was drawn: a run resumed in the middle of its second or
        later epoch would see other batches than an uninterrupted one. (The plain random sampler
        is already seeded per epoch by Accelerate.) With `train_batches`, those batches in a fixed
        composition (`engine.order.FixedBatchSampler`): their mismatched pairs are known in advance.
        """
        seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
        if self.train_batches is not None and (train_dataset is None or train_dataset is self.train_dataset):
            shuffle = self.args.train_sampling_strategy != "sequential"
            return FixedBatchSampler(self.train_batches, seed, shuffle=shuffle)
        sampler = super()._get_train_sampler(train_dataset)
        if type(sampler) is LengthGroupedSampler:
            dataset = train_dataset if train_dataset is not None else self.train_dataset
            if self.padding_cost is not None and "prompt_ids" in getattr(dataset, "column_names", ()):
                shapes, groups = row_shapes(dataset), row_groups(dataset)
                return PlannedLengthSampler(shapes, self.args.train_batch_size, seed, self.padding_cost, groups)
            return EpochSeededLengthGroupedSampler(sampler.batch_size, sampler.lengths, seed)
        return sampler

    # -- non-finite steps --------------------------------------------------------
    def skip_nonfinite_step(self) -> bool:
        """Called just before `optimizer.step()` (after clipping). Returns True if the step is skipped.

        A step is skipped when any micro-batch of it had a non-finite loss, or any gradient is
        non-finite (checked unless an AMP grad scaler handles inf/NaN itself). Skipping sets every
        `.grad` to None, so the optimizer leaves parameters *and* their moments untouched (a zero
        gradient would still move them through Adam's momentum and weight decay); the scheduler
        still advances. After `max_nonfinite_steps` skipped steps in a row the run stops with
        `TrainingError`. In data-parallel runs the decision is shared, so replicas stay equal.
        """
        model = self.model
        bad_loss = self._nonfinite_loss_in_step
        self._nonfinite_loss_in_step = False
        params = [p for p in model.parameters() if p.grad is not None]
        bad_grad = False
        if not bad_loss and params and getattr(self.accelerator, "scaler", None) is None:
            bad_grad = not bool(torch.stack([torch.isfinite(p.grad).all() for p in params]).all())
        flag = distributed_mean(torch.tensor(float(bad_loss or bad_grad), device=self.args.device))
        if float(flag) == 0.0:
            self.nonfinite_in_a_row = 0
            return False
        for p in params:
            p.grad = None
        self.nonfinite_in_a_row += 1
        self.nonfinite_total += 1
        step = self.state.global_step + 1
        what = "loss" if bad_loss else "gradients"
        log.warning(
            "step %d: non-finite %s; update skipped (%d in a row, %d in total)",
            step,
            what,
            self.nonfinite_in_a_row,
            self.nonfinite_total,
        )
        if self.nonfinite_in_a_row >= self.max_nonfinite_steps:
            raise TrainingError(
                f"stopped at step {step}: {self.nonfinite_in_a_row} optimizer steps in a row had a non-finite "
                f"loss or gradients (training.max_nonfinite_steps={self.max_nonfinite_steps}); lower "
                "training.learning_rate, check the data, or train in float32"
            )
        return True

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
                s[k].append(float(v))  # "sum/..." entries are summed at log time, the rest averaged

    def prediction_step(
        self, model: Any, inputs: dict[str, Any], prediction_loss_only: bool, ignore_keys: list[str] | None = None
    ) -> tuple[Tensor, None, None]:
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad():
            out = self.preference_loss(model, inputs)
        self._store(out, "eval")
        return out.loss.detach(), None, None

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        split = "train" if "loss" in logs else "eval"
        prefix = "" if split == "train" else "eval_"
        stored = self._stored[split]
        if "loss" in logs or "eval_loss" in logs:  # logged on every process at once: the batches of all of them
            stored = defaultdict(list, concat_across_processes(stored))
            self._stored[split].clear()
        for k, vals in stored.items():
            if vals and not k.startswith("sum/"):
                logs[prefix + k] = round(sum(vals) / len(vals), 6)
        tokens = sum(stored.get("sum/chosen_tokens", []))
        if tokens > 0:  # per-token perplexity over every chosen/desirable completion since the last log
            logs[prefix + "perplexity"] = round(math.exp(sum(stored["sum/chosen_nll"]) / tokens), 6)
        stored.clear()
        if split == "train" and self.nonfinite_total:
            logs["nonfinite_steps"] = self.nonfinite_total
        if "train_loss" in logs:
            logs["train_loss"] = self._mean_train_loss(logs["train_loss"])
        super().log(logs, start_time)

    def _mean_train_loss(self, fallback: float) -> float:
        """Mean training loss per step over the whole run: sum of logged `loss x steps it covers` / steps.

        Trainer's own `train_loss` covers only the steps of this `train()` call, i.e. after a
        resume only the resumed part; the log history (restored from the checkpoint) covers all.
        """
        total, last = 0.0, 0
        for h in self.state.log_history:
            step = h.get("step")
            if isinstance(h.get("loss"), (int, float)) and isinstance(step, int) and step > last:
                total += h["loss"] * (step - last)
                last = step
        return total / last if last else fallback


def logp_metrics(logps: UnpairedLogps | PairedLogps) -> dict[str, float]:
    """Per-batch figures of the policy's log-probs, with TRL's names where TRL has them.

    logps/chosen, logps/rejected: mean summed log-prob of chosen/desirable and
    rejected/undesirable completions; kl: mean log pi - log pi_ref over chosen completions
    (paired methods; KTO-family losses log their reference point z0 as `kl`, as TRL does);
    sum/chosen_nll, sum/chosen_tokens: for the perplexity of chosen/desirable completions,
    exp(sum nll / sum tokens), which `PreferenceTrainer.log` computes over the logging window.
    """
    if isinstance(logps, UnpairedLogps):
        desirable = logps.label.to(torch.bool)
        chosen, rejected = logps.policy[desirable].detach(), logps.policy[~desirable].detach()
        lengths = logps.lengths[desirable] if logps.lengths is not None else None
        out: dict[str, float] = {}
    else:
        chosen, rejected = logps.policy_chosen.detach(), logps.policy_rejected.detach()
        lengths = logps.chosen_lengths
        out = {"kl": _mean(chosen - logps.reference_chosen.detach().to(chosen.dtype))}
    if chosen.numel():
        out["logps/chosen"] = _mean(chosen)
    if rejected.numel():
        out["logps/rejected"] = _mean(rejected)
    if lengths is not None and chosen.numel():
        out["sum/chosen_nll"] = -float(chosen.double().sum())
        out["sum/chosen_tokens"] = float(lengths.sum())
    return out


class _NonFiniteStepGuard(TrainerCallback):
    """Hooks `PreferenceTrainer.skip_nonfinite_step` in before each optimizer step.

    On resume the skipped-step count continues from the checkpoint's log history.
    """

    def __init__(self, trainer: PreferenceTrainer) -> None:
        self.trainer = trainer

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        logged = [h["nonfinite_steps"] for h in state.log_history if isinstance(h.get("nonfinite_steps"), (int, float))]
        self.trainer.nonfinite_total = int(max(logged, default=0))
        self.trainer.nonfinite_in_a_row = 0

    def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.trainer.skip_nonfinite_step()
