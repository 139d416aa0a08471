"""KTO at any batch size: z0 from mismatched pairs built across the gradient-accumulation window.

KTO's reference point (losses/reference_point.py) is a statistic over mismatched pairs
(prompt x_i, completion y_j of another row). Built inside each micro-batch, as TRL does, it
needs a batch of at least 2 rows, and a per-device batch of 1 (what people with little memory
run, with gradient accumulation) has no other completion to pair with. With
`kto.reference_point: window_mismatch` the pairs are built over the whole optimizer step:

- window: the N = batch_size x gradient_accumulation_steps x processes rows of one optimizer
  step, in window order: micro-batch 0 of process 0, micro-batch 0 of process 1, ...,
  micro-batch 1 of process 0, ... This is exactly the order one process with batch
  `batch_size x processes` sees them in, so the rows a sequential sampler hands out are the
  same however they are split across processes and micro-batches;
- pairs: prompt of window row g with completion of window row (g - 1) mod N (TRL's rotation
  by one, applied to the window instead of the batch);
- z0 = max(0, mean over the window of [log pi(y_{g-1}|x_g) - log pi_ref(y_{g-1}|x_g)]): each
  process takes the mean over its own rows, `distributed_mean` averages the processes (they
  hold equally many rows), then the clamp — `WindowMismatch.estimate`.

That pass needs no gradient and runs once per optimizer step, before the step's first
backward: `WindowMismatchTrainer.get_batch_samples` (transformers' Trainer fetches the
step's micro-batches up front through it) computes z0 and hands it to every micro-batch.
Each micro-batch loss is the mean over its rows and Trainer divides it by the number of
micro-batches, so with equal micro-batch sizes the accumulated gradient is the gradient of
the mean over the window: per-device batch 1 x accumulation 8 trains the same as batch 8 x
accumulation 1 (and 2 processes x batch b as 1 process x batch 2b) for the same row order.

Evaluation keeps the in-batch estimate (mismatched pairs of each eval batch); unless
`training.eval_batch_size` is set, eval batches are as large as the window.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import Tensor

from prospect.data.layout import layout
from prospect.engine import dist
from prospect.engine.trainer import PreferenceTrainer
from prospect.errors import ConfigError

log = logging.getLogger("prospect")

WINDOW_ROWS = "window_rows"  # batch key: the micro-batch's token ids, for the window pass
WINDOW_Z0 = "window_z0"  # batch key: the window's z0, set before the micro-batch trains


class WindowRowsCollator:
    """Wraps an `UnpairedCollator`: each batch also carries its rows' token ids (`window_rows`).

    The window pass needs the raw prompts and completions of every row of the optimizer step,
    which the collated layouts no longer hold in a form that is easy to re-pair.
    """

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.pad_id: int = inner.pad_id
        self.packed: bool = inner.packed
        self.max_length: int | None = inner.max_length

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        batch = self.inner(rows)
        batch[WINDOW_ROWS] = {
            "prompt_ids": [list(r["prompt_ids"]) for r in rows],
            "completion_ids": [list(r["completion_ids"]) for r in rows],
        }
        return batch


class WindowMismatchTrainer(PreferenceTrainer):
    """PreferenceTrainer whose KTO z0 comes from mismatched pairs across the accumulation window.

    window_chunk: rows per forward pass of the window pass (default: the per-device batch size),
    so its memory stays that of one no-grad micro-batch whatever the accumulation.
    """

    def __init__(self, *args: Any, window_chunk: int | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.window_chunk = window_chunk or self.args.per_device_train_batch_size
        self.last_window_rows = 0  # rows (all processes) behind the latest z0, for tests and logs

    # -- the window pass ---------------------------------------------------------
    def get_batch_samples(self, epoch_iterator: Any, num_batches: int, device: Any) -> tuple[list, Any]:
        batch_samples, num_items = super().get_batch_samples(epoch_iterator, num_batches, device)
        if batch_samples and WINDOW_ROWS in batch_samples[0]:
            z0 = self.window_z0([b.pop(WINDOW_ROWS) for b in batch_samples])
            for b in batch_samples:
                b[WINDOW_Z0] = z0
        return batch_samples, num_items

    def window_z0(self, micro_batches: list[dict[str, list[list[int]]]]) -> Tensor:
        """z0 over the window whose micro-batches (this process's, in order) hold these rows.

        Every process calls it once per optimizer step (transformers gives every process the
        same number of micro-batches), so the all-gather and the mean line up.
        """
        rank, world = dist.rank(), dist.world_size()
        local_completions = [mb["completion_ids"] for mb in micro_batches]
        if world > 1:  # every process needs the completions of the rows before its own in the window
            import torch.distributed

            gathered: list[Any] = [None] * world
            torch.distributed.all_gather_object(gathered, local_completions)
        else:
            gathered = [local_completions]
        # Window order: micro-batch k of process 0, of process 1, ..., then micro-batch k + 1.
        window_completions: list[list[int]] = []
        first_index: dict[int, int] = {}  # micro-batch k of this process -> its first window row
        for k in range(max(len(g) for g in gathered)):
            for p in range(world):
                if k < len(gathered[p]):
                    if p == rank:
                        first_index[k] = len(window_completions)
                    window_completions.extend(gathered[p][k])
        total = len(window_completions)
        prompts, mismatched = [], []
        for k, mb in enumerate(micro_batches):
            for i, prompt in enumerate(mb["prompt_ids"]):
                prompts.append(prompt)
                mismatched.append(window_completions[(first_index[k] + i - 1) % total])
        self.last_window_rows = total
        kl_policy, kl_reference = self._mismatched_logps(prompts, mismatched)
        return self.z0_estimator.estimate(kl_policy, kl_reference)

    def _mismatched_logps(self, prompts: list[list[int]], completions: list[list[int]]) -> tuple[Tensor, Tensor]:
        """Policy and reference log-probs of (prompt, completion) pairs, no gradient, in chunks."""
        collator = self.data_collator
        # The wrapped model (DDP, FSDP, DeepSpeed engine), as TRL runs its KL pass: under no_grad DDP
        # prepares no gradient sync, and FSDP-1 / ZeRO-3 gather their sharded weights in its forward.
        model = self.model_wrapped if self.model_wrapped is not None else self.model
        model.train()  # the state the in-batch estimate is computed in (dropout as in training)
        policy, reference = [], []
        with torch.no_grad(), self.compute_loss_context_manager():
            for start in range(0, len(prompts), self.window_chunk):
                p, c = prompts[start : start + self.window_chunk], completions[start : start + self.window_chunk]
                batch = layout(p, c, pad_id=collator.pad_id, packed=collator.packed, max_length=collator.max_length)
                batch = {k: v.to(self.args.device) for k, v in batch.items()}
                policy.append(self._logps(model, batch, "", len(p))[0].float())
                reference.append(self.reference_logps(batch, "", len(p)).float())
        return torch.cat(policy), torch.cat(reference)

    # -- each micro-batch uses the window's z0 -----------------------------------
    def _z0(self, model: Any, batch: dict[str, Any], prefix: str, n: int, states: Any = None) -> Tensor:
        if WINDOW_Z0 in batch:
            return batch[WINDOW_Z0]
        return super()._z0(model, batch, prefix, n, states)

    def prediction_step(
        self, model: Any, inputs: dict[str, Any], prediction_loss_only: bool, ignore_keys: list[str] | None = None
    ) -> Any:
        inputs = dict(inputs)
        inputs.pop(WINDOW_ROWS, None)  # evaluation: the in-batch estimate on each eval batch
        return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys)


def resolve_reference_point(cfg: Any, world_size: int | None = None) -> Any:
    """The run's z0 estimator, checked against the batch size; returns cfg (updated if switched).

    Rules, for unpaired (KTO-family) runs:
    - `batch_mismatch` with a per-device batch of 1 pairs each row with itself (z0 would be the
      row's own reward; TRL refuses such a batch). If `kto.reference_point` was left at its
      default and there is a window to pair across (gradient accumulation > 1 or several
      processes), switch to `window_mismatch` and say so; otherwise raise ConfigError naming
      `window_mismatch`.
    - `window_mismatch` over a window of one row (batch 1, no accumulation, one process) is refused.
    - `window_mismatch` for paired data (dpo_kto) acts per batch (the loss's builder warns).
    - With `window_mismatch`, evaluation (which estimates z0 inside each eval batch) gets
      `training.eval_batch_size = batch_size x gradient_accumulation_steps` unless it is set.
    """
    world = world_size if world_size is not None else dist.world_size()
    t, k = cfg.training, cfg.kto
    window = t.batch_size * t.gradient_accumulation_steps * world
    if not cfg.is_unpaired:
        return cfg  # a paired loss's z0 (dpo_kto) comes from each batch's pairs; its builder says so
    if k.reference_point == "batch_mismatch" and t.batch_size == 1:
        explicit = "reference_point" in k.model_fields_set
        if not explicit and window > 1:
            log.warning(
                "training.batch_size is 1: KTO's z0 is estimated from mismatched pairs across the "
                "accumulation window of %d rows (kto.reference_point: window_mismatch)",
                window,
            )
            cfg = cfg.model_copy(update={"kto": k.model_copy(update={"reference_point": "window_mismatch"})})
            return _eval_batch(cfg)
        raise ConfigError(
            "kto.reference_point: batch_mismatch needs training.batch_size >= 2: with a batch of 1 the only "
            "'mismatched' pair is the row itself, so z0 would be that row's own reward. Set "
            "kto.reference_point: window_mismatch with training.gradient_accumulation_steps >= 2 (pairs built "
            "across the accumulation window; trains like a batch of batch_size x gradient_accumulation_steps), "
            "or use reference_point: running or zero"
        )
    if k.reference_point == "window_mismatch" and window < 2:
        raise ConfigError(
            "kto.reference_point: window_mismatch needs at least 2 rows per optimizer step, got training.batch_size=1 "
            "x gradient_accumulation_steps=1 on 1 process; raise gradient_accumulation_steps"
        )
    return _eval_batch(cfg) if k.reference_point == "window_mismatch" else cfg


def _eval_batch(cfg: Any) -> Any:
    """Evaluation estimates z0 inside each eval batch: unless set, make it the window's size (no gradient there)."""
    t = cfg.training
    if t.eval_batch_size is None and t.gradient_accumulation_steps > 1:
        size = t.batch_size * t.gradient_accumulation_steps
        return cfg.model_copy(update={"training": t.model_copy(update={"eval_batch_size": size})})
    return cfg
