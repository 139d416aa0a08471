"""Unpaired (KTO-family) losses on labelled single completions.

Inputs (`UnpairedLogps`, shapes (B,)): summed completion log-probs of the policy and the
reference, a boolean label (True = desirable), the reference point z0 (a detached scalar
from `prospect.losses.reference_point`), optional per-example data weights.
Reference-free training passes `reference = 0` (then r is the policy log-prob itself).

Every loss here returns per-example losses in the input's row order, already multiplied
by the class weight (lambda_D for desirable, lambda_U for undesirable rows) and by the data
weight, and `loss = nanmean(losses)`. TRL 1.16 concatenates desirable then undesirable
losses before its `nanmean`; the mean does not depend on the order.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from prospect.errors import ConfigError
from prospect.losses.base import (
    LossOutput,
    UnpairedLogps,
    construct,
    register_method,
    register_unpaired,
    unpaired_loss_class,
)


class UnpairedLoss:
    """Base of unpaired losses: override `example_losses`; `__call__` does the rest.

    beta: KL strength beta.
    desirable_weight / undesirable_weight: class weights lambda_D / lambda_U (numbers;
      "auto" is resolved beforehand by `prospect.data.weights.resolve_kto_weights`).
    needs_reference_point: whether the loss reads z0 (the engine may skip the mismatched pass if not).
    """

    kind = "unpaired"
    name = "unpaired"
    needs_reference_point = True

    def __init__(self, beta: float = 0.1, desirable_weight: float = 1.0, undesirable_weight: float = 1.0) -> None:
        if beta <= 0:
            raise ValueError(f"beta must be > 0, got {beta}")
        self.beta = beta
        self.desirable_weight = float(desirable_weight)
        self.undesirable_weight = float(undesirable_weight)

    def example_losses(self, r: Tensor, desirable: Tensor, z0: Tensor) -> tuple[Tensor, dict[str, float]]:
        """Per-example losses before class and data weights, plus extra metrics.

        r: log-ratios policy - reference (B,); desirable: bool (B,); z0: detached 0-d tensor.
        """
        raise NotImplementedError

    def __call__(self, logps: UnpairedLogps) -> LossOutput:
        r = logps.policy - logps.reference.to(logps.policy.dtype)
        desirable = logps.label.to(device=r.device, dtype=torch.bool)
        z0 = torch.as_tensor(logps.z0, dtype=r.dtype, device=r.device).detach().reshape(())
        raw, metrics = self.example_losses(r, desirable, z0)
        class_weight = torch.where(
            desirable,
            torch.full_like(raw, self.desirable_weight),
            torch.full_like(raw, self.undesirable_weight),
        )
        losses = raw * class_weight
        if logps.weight is not None:
            losses = losses * logps.weight.to(losses)
        rewards = self.beta * r.detach()
        return LossOutput(
            loss=losses.nanmean(),
            losses=losses,
            chosen_rewards=rewards[desirable],
            rejected_rewards=rewards[~desirable],
            metrics={"kl": float(z0), **metrics},
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in vars(self).items())})"


@register_unpaired("kto")
class KTOLoss(UnpairedLoss):
    """KTO (Ethayarajh et al. 2024, "KTO: Model Alignment as Prospect Theoretic Optimization", Eq. 7).

    With r = log pi(y|x) - log pi_ref(y|x) and the reference point z0 (detached):

        desirable:    L = lambda_D * (1 - sigma(beta * (r - z0)))
        undesirable:  L = lambda_U * (1 - sigma(beta * (z0 - r)))
        loss = nanmean over the batch.

    Rewards: beta * r (chosen = desirable rows, rejected = undesirable rows). metrics["kl"] = z0.
    Equals TRL 1.16 `KTOTrainer(loss_type="kto")` given TRL's z0 (see `BatchMismatch`).
    """

    name = "kto"

    def example_losses(self, r: Tensor, desirable: Tensor, z0: Tensor) -> tuple[Tensor, dict[str, float]]:
        # TRL's exact expressions: 1 - sigmoid(beta (r - z0)) and 1 - sigmoid(beta (z0 - r)).
        return torch.where(desirable, 1 - F.sigmoid(self.beta * (r - z0)), 1 - F.sigmoid(self.beta * (z0 - r))), {}


@register_unpaired("apo_zero_unpaired")
class APOZeroUnpairedLoss(UnpairedLoss):
    """Unpaired APO-zero (D'Oosterlinck et al. 2024, "Anchored Preference Optimization", unpaired Eq. 7).

        desirable:    L = lambda_D * (1 - sigma(beta * r))
        undesirable:  L = lambda_U * sigma(beta * r)

    No reference point: z0 is ignored (needs_reference_point = False), as in TRL 1.16's
    `KTOTrainer(loss_type="apo_zero_unpaired")`, which skips the KL pass.
    """

    name = "apo_zero_unpaired"
    needs_reference_point = False

    def example_losses(self, r: Tensor, desirable: Tensor, z0: Tensor) -> tuple[Tensor, dict[str, float]]:
        return torch.where(desirable, 1 - F.sigmoid(self.beta * r), F.sigmoid(self.beta * r)), {}


def _class_weight(kto: Any, name: str) -> float:
    value = getattr(kto, name)
    if value == "auto":
        raise ConfigError(
            f"kto.{name} 'auto' needs the label counts of the training data: resolve it first "
            "(prospect.data.weights.resolve_kto_weights; `prospect train` does this when it reads the data)"
        )
    return float(value)


def build_unpaired_loss(kto: Any) -> UnpairedLoss:
    """The unpaired loss of a `KTOSpecificConfig` (kto.loss_type); its class weights must be numbers.

    "auto" weights depend on the training data's label counts, so they are resolved once, where
    the data are read (`prospect.recipes.preparation.resolve_weights`), never here. Seed 000's
    prospect parameters map as kto_alpha -> alpha, kto_beta_s -> beta_s, kto_gamma -> gamma,
    kto_lambda -> loss_aversion.
    """
    return construct(
        unpaired_loss_class(kto.loss_type),
        beta=kto.beta,
        desirable_weight=_class_weight(kto, "desirable_weight"),
        undesirable_weight=_class_weight(kto, "undesirable_weight"),
        alpha=kto.kto_alpha,
        beta_s=kto.kto_beta_s,
        gamma=kto.kto_gamma,
        loss_aversion=kto.kto_lambda,
        use_weighting=kto.use_weighting,
        weighting_temperature=kto.weighting_temperature,
        weighting_floor=kto.weighting_floor,
    )


@register_method("kto")
def build_kto(cfg: Any) -> UnpairedLoss:
    """method kto: kto.loss_type (kto | prospect | apo_zero_unpaired), unpaired."""
    return build_unpaired_loss(cfg.kto)
