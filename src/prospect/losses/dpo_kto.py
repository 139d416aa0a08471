"""DPO with a KTO regulariser (seed 003, track B): L = L_dpo + kto_weight * L_kto.

The KTO term reads each pair as two unpaired rows: the chosen completion desirable, the
rejected undesirable. Its reference point z0 comes from mismatched (prompt, completion)
pairs of the batch, which a loss cannot compute (it never sees a model). So the engine
passes either
  - `PairedLogps.z0`: the estimate itself (detached scalar), or
  - `PairedLogps.kl_policy` / `kl_reference`: policy / reference log-probs of mismatched
    pairs (e.g. prompt i with the chosen completion of pair `mismatched_indices(B)[i]`),
    from which this loss computes z0 with its `reference_point` estimator (BatchMismatch
    by default: clamp(mean(kl_policy - kl_reference), min=0)).
A KTO term that reads no z0 (apo_zero_unpaired) needs neither.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from prospect.losses.base import LossOutput, PairedLogps, UnpairedLogps, register_method
from prospect.losses.dpo import PairedLoss, section_loss
from prospect.losses.kto import UnpairedLoss, build_unpaired_loss
from prospect.losses.reference_point import BatchMismatch, ReferencePoint, build_reference_point


class DPOKTOLoss:
    """DPO + KTO hybrid (seed 003 track B):

        L = L_dpo + kto_weight * L_kto

    L_dpo: any paired loss [dpo.loss_type, dpo.beta, ...], on the pairs.
    L_kto: any unpaired loss [kto.loss_type, kto.beta, kto weights], on the 2B rows
      (chosen rows desirable, rejected rows undesirable), mean over those rows.
    kto_weight: [method.kto_weight] (seed 003's "kto_lambda"/"lambda", grid 0.01-0.5; not
      seed 000's loss aversion kto.kto_lambda).
    Per-pair losses: L_dpo,i + kto_weight * (L_kto(chosen_i) + L_kto(rejected_i)) / 2, whose
    mean is L. Rewards are the DPO term's. metrics: "loss/dpo", "loss/kto", "kl" (= z0).
    """

    kind = "paired"
    name = "dpo_kto"

    def __init__(
        self,
        dpo_loss: PairedLoss,
        kto_loss: UnpairedLoss,
        kto_weight: float = 0.1,
        reference_point: ReferencePoint | None = None,
    ) -> None:
        if kto_weight < 0:
            raise ValueError(f"kto_weight must be >= 0, got {kto_weight}")
        self.dpo_loss = dpo_loss
        self.kto_loss = kto_loss
        self.kto_weight = kto_weight
        self.reference_point = reference_point or BatchMismatch()
        self.needs_lengths = getattr(dpo_loss, "needs_lengths", False)

    @property
    def needs_reference_point(self) -> bool:
        """Whether the KTO term reads z0 (the engine then estimates it from mismatched pairs)."""
        return self.kto_loss.needs_reference_point

    @property
    def needs_mismatched(self) -> bool:
        """Whether the engine must compute mismatched-pair log-probs (or z0) for this loss."""
        return self.kto_loss.needs_reference_point and self.reference_point.needs_mismatched

    @property
    def min_batch_size(self) -> int:
        """Smallest batch whose mismatched pairs give z0 (2 with an in-batch estimator, else 1)."""
        return self.reference_point.min_rows if self.needs_mismatched else 1

    def z0(self, logps: PairedLogps) -> torch.Tensor:
        like = logps.policy_chosen
        if logps.z0 is not None:
            return torch.as_tensor(logps.z0).detach().to(like)
        if not self.kto_loss.needs_reference_point or not self.reference_point.needs_mismatched:
            return torch.zeros((), dtype=like.dtype, device=like.device)
        if logps.kl_policy is None or logps.kl_reference is None:
            raise ValueError(
                "dpo_kto needs PairedLogps.z0 or kl_policy and kl_reference (mismatched pairs) for its KTO term"
            )
        return self.reference_point.estimate(logps.kl_policy, logps.kl_reference).to(like)

    def __call__(self, logps: PairedLogps) -> LossOutput:
        dpo = self.dpo_loss(logps)
        n = logps.policy_chosen.shape[0]
        z0 = self.z0(logps)
        rows = UnpairedLogps(
            policy=torch.cat([logps.policy_chosen, logps.policy_rejected]),
            reference=torch.cat([logps.reference_chosen, logps.reference_rejected]).to(logps.policy_chosen.dtype),
            label=torch.cat([torch.ones(n, dtype=torch.bool), torch.zeros(n, dtype=torch.bool)]).to(
                logps.policy_chosen.device
            ),
            z0=z0,
        )
        kto = self.kto_loss(rows)
        losses = dpo.losses + self.kto_weight * (kto.losses[:n] + kto.losses[n:]) / 2
        return LossOutput(
            loss=dpo.loss + self.kto_weight * kto.loss,
            losses=losses,
            chosen_rewards=dpo.chosen_rewards,
            rejected_rewards=dpo.rejected_rewards,
            metrics={
                **dpo.metrics,
                "loss/dpo": float(dpo.loss.detach()),
                "loss/kto": float(kto.loss.detach()),
                "kl": float(z0),
            },
        )

    def __repr__(self) -> str:
        return (
            f"DPOKTOLoss(dpo_loss={self.dpo_loss!r}, kto_loss={self.kto_loss!r}, kto_weight={self.kto_weight}, "
            f"reference_point={self.reference_point!r})"
        )


@register_method("dpo_kto")
def build_dpo_kto(cfg: Any) -> DPOKTOLoss:
    """method dpo_kto: DPOKTOLoss(dpo loss, kto loss, method.kto_weight, kto.reference_point)."""
    if cfg.kto.reference_point == "window_mismatch":
        logging.getLogger("prospect").warning(
            "kto.reference_point: window_mismatch applies to unpaired KTO data; dpo_kto estimates "
            "z0 from the mismatched pairs of each batch"
        )
    return DPOKTOLoss(
        section_loss(cfg.dpo),
        build_unpaired_loss(cfg.kto),
        kto_weight=cfg.method.kto_weight,
        reference_point=build_reference_point(cfg.kto.reference_point),
    )
