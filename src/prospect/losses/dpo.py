"""Paired (DPO-family) losses: TRL 1.16 `DPOTrainer` loss types, one small class each.

This module holds the base class, sigmoid, hinge and ipo, the combination of a list of loss
types, and the builders of methods `dpo` and `ipo`; the other TRL loss types are in
`prospect.losses.dpo_types`.

Inputs (`PairedLogps`, shapes (B,)): summed completion log-probs of the policy and the
reference for the chosen (y_w) and rejected (y_l) completion of each pair. Notation:

    r_w = log pi(y_w|x) - log pi_ref(y_w|x),  r_l likewise,  h = r_w - r_l.

Some losses need completion lengths (`chosen_lengths`, `rejected_lengths`): ipo and
sigmoid_norm use length-averaged log-ratios r / max(length, 1); sft uses the token-level
mean NLL of the chosen completions, -sum(log pi(y_w|x)) / sum(len_w). Each class says
what it reads. Reference-free training passes reference = 0.

Every loss returns per-pair losses (B,), `loss = mean(losses)` (TRL's reduction), and
rewards beta * r_w / beta * r_l (detached) as TRL logs them. `loss_type` lists combine as
sum_k weight_k * mean(losses_k) (`CombinedPairedLoss`, TRL's `loss_weights`).
TRL 1.16's `f_divergence_type`, `ld_alpha` and WPO `use_weighting` are not offered
(everything here is the default reverse-KL form).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from prospect.errors import ConfigError
from prospect.losses.base import LossOutput, PairedLogps, construct, paired_loss_class, register_method, register_paired


def logratios(logps: PairedLogps) -> tuple[Tensor, Tensor]:
    """(r_w, r_l): policy minus reference log-probs of chosen and rejected."""
    pc = logps.policy_chosen
    return pc - logps.reference_chosen.to(pc.dtype), logps.policy_rejected - logps.reference_rejected.to(pc.dtype)


def lengths_of(logps: PairedLogps, loss_name: str) -> tuple[Tensor, Tensor]:
    if logps.chosen_lengths is None or logps.rejected_lengths is None:
        raise ValueError(f"loss_type {loss_name!r} needs chosen_lengths and rejected_lengths in PairedLogps")
    return logps.chosen_lengths, logps.rejected_lengths


def average_logratios(logps: PairedLogps, loss_name: str) -> tuple[Tensor, Tensor]:
    """(r_w / max(len_w, 1), r_l / max(len_l, 1)): per-token log-ratios, as TRL's ipo and sigmoid_norm."""
    r_w, r_l = logratios(logps)
    len_w, len_l = lengths_of(logps, loss_name)
    return r_w / len_w.to(r_w.dtype).clamp(min=1.0), r_l / len_l.to(r_l.dtype).clamp(min=1.0)


def smoothed_logistic(z: Tensor, label_smoothing: float) -> Tensor:
    """-(1 - eps) log sigma(z) - eps log sigma(-z): logistic loss with labels flipped w.p. eps."""
    loss = -F.logsigmoid(z)
    if label_smoothing:
        loss = loss * (1 - label_smoothing) - F.logsigmoid(-z) * label_smoothing
    return loss


class PairedLoss:
    """Base of paired losses: override `per_example`; `__call__` reduces and adds rewards.

    beta: KL strength beta (for ipo: the regularisation tau of the IPO paper).
    needs_lengths: whether `chosen_lengths` / `rejected_lengths` must be given.
    """

    kind = "paired"
    name = "paired"
    needs_lengths = False

    def __init__(self, beta: float = 0.1) -> None:
        if beta <= 0:
            raise ValueError(f"beta must be > 0, got {beta}")
        self.beta = beta

    def per_example(self, logps: PairedLogps) -> Tensor:
        raise NotImplementedError

    def rewards(self, logps: PairedLogps) -> tuple[Tensor, Tensor]:
        r_w, r_l = logratios(logps)
        return self.beta * r_w.detach(), self.beta * r_l.detach()

    def __call__(self, logps: PairedLogps) -> LossOutput:
        losses = self.per_example(logps)
        chosen, rejected = self.rewards(logps)
        return LossOutput(loss=losses.mean(), losses=losses, chosen_rewards=chosen, rejected_rewards=rejected)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in vars(self).items())})"


@register_paired("sigmoid")
class SigmoidLoss(PairedLoss):
    """DPO (Rafailov et al. 2023, Eq. 7), with conservative label smoothing eps (cDPO, Mitchell 2023):

        L = -(1 - eps) log sigma(beta h) - eps log sigma(-beta h)

    eps = 0 (default) is TRL 1.16's "sigmoid" exactly. TRL 1.16 ignores label_smoothing for
    "sigmoid" (earlier TRL versions applied this cDPO form); here eps > 0 applies it.
    """

    name = "sigmoid"

    def __init__(self, beta: float = 0.1, label_smoothing: float = 0.0) -> None:
        super().__init__(beta)
        if not 0.0 <= label_smoothing <= 0.5:
            raise ConfigError(f"dpo.label_smoothing must lie in [0, 0.5], got {label_smoothing}")
        self.label_smoothing = label_smoothing

    def per_example(self, logps: PairedLogps) -> Tensor:
        r_w, r_l = logratios(logps)
        return smoothed_logistic(self.beta * (r_w - r_l), self.label_smoothing)


@register_paired("hinge")
class HingeLoss(PairedLoss):
    """SLiC hinge loss (Zhao et al. 2023; as in RSO, Liu et al. 2024): L = max(0, 1 - beta h)."""

    name = "hinge"

    def per_example(self, logps: PairedLogps) -> Tensor:
        r_w, r_l = logratios(logps)
        return torch.relu(1 - self.beta * (r_w - r_l))


@register_paired("ipo")
class IPOLoss(PairedLoss):
    """IPO (Azar et al. 2023, Eq. 17) on length-averaged log-ratios, as TRL 1.16:

        h_avg = r_w / len_w - r_l / len_l   (lengths clamped at 1)
        L = (h_avg - 1 / (2 beta))^2        (beta is the paper's tau)

    Needs chosen_lengths and rejected_lengths.
    """

    name = "ipo"
    needs_lengths = True

    def per_example(self, logps: PairedLogps) -> Tensor:
        a_w, a_l = average_logratios(logps, self.name)
        return (a_w - a_l - 1 / (2 * self.beta)) ** 2


class CombinedPairedLoss(PairedLoss):
    """Weighted sum of paired losses (TRL's `loss_type` list with `loss_weights`, e.g. MPO):

        loss = sum_k weight_k * mean(L_k),   losses = sum_k weight_k * L_k

    Rewards come from the first component (all components share beta in a config).
    metrics["loss/<name>"] holds each component's mean.
    """

    name = "combined"

    def __init__(self, components: Sequence[PairedLoss], weights: Sequence[float] | None = None) -> None:
        if not components:
            raise ConfigError("dpo.loss_type: an empty list of loss types")
        weights = [1.0] * len(components) if weights is None else [float(w) for w in weights]
        if len(weights) != len(components):
            raise ConfigError(
                f"dpo.loss_weights has {len(weights)} weights for {len(components)} loss types; give one per loss type"
            )
        super().__init__(components[0].beta)
        self.components = list(components)
        self.weights = weights
        self.needs_lengths = any(c.needs_lengths for c in components)

    def __call__(self, logps: PairedLogps) -> LossOutput:
        outs = [c(logps) for c in self.components]
        losses = sum(w * o.losses for w, o in zip(self.weights, outs))
        loss = sum(w * o.loss for w, o in zip(self.weights, outs))
        metrics = {f"loss/{c.name}": float(o.loss.detach()) for c, o in zip(self.components, outs)}
        return LossOutput(
            loss=loss,
            losses=losses,
            chosen_rewards=outs[0].chosen_rewards,
            rejected_rewards=outs[0].rejected_rewards,
            metrics=metrics,
        )


def build_paired_loss(
    loss_type: str | Sequence[str] = "sigmoid",
    loss_weights: Sequence[float] | None = None,
    beta: float = 0.1,
    label_smoothing: float = 0.0,
    discopop_tau: float = 0.05,
) -> PairedLoss:
    """A paired loss from `dpo` section settings, e.g. `build_paired_loss("ipo", beta=0.5)` or
    `build_paired_loss(["sigmoid", "sft"], [0.8, 0.2])`. A one-element list without weights
    gives the plain loss; a list gives `CombinedPairedLoss`. Unknown names raise ConfigError.
    """
    names = [loss_type] if isinstance(loss_type, str) else list(loss_type)
    settings = {"beta": beta, "label_smoothing": label_smoothing, "discopop_tau": discopop_tau}
    components = [construct(paired_loss_class(n), **settings) for n in names]
    if len(components) == 1 and (loss_weights is None or list(loss_weights) == [1.0]):
        return components[0]
    return CombinedPairedLoss(components, loss_weights)


def section_loss(dpo: Any, loss_type: Any = None) -> PairedLoss:
    """The paired loss of a `DPOSpecificConfig` (its loss_type list and weights), or of `loss_type` alone."""
    return build_paired_loss(
        loss_type or dpo.loss_type,
        None if loss_type else dpo.loss_weights,
        beta=dpo.beta,
        label_smoothing=dpo.label_smoothing,
        discopop_tau=dpo.discopop_tau,
    )


@register_method("dpo")
def build_dpo(cfg: Any) -> PairedLoss:
    """method dpo: dpo.loss_type (one name or a list with dpo.loss_weights)."""
    return section_loss(cfg.dpo)


@register_method("ipo")
def build_ipo(cfg: Any) -> PairedLoss:
    """method ipo: DPO with loss_type ipo, whatever dpo.loss_type says."""
    return section_loss(cfg.dpo, "ipo")
