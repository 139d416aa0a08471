"""Reference-free paired losses: ORPO, SimPO and CPO (no reference model, no reference pass).

Inputs are the policy's summed completion log-probs and completion lengths of each pair
(`PairedLogps.policy_*`, `*_lengths`); the reference fields are not read. Notation:

    s_w = log pi(y_w|x), s_l likewise (summed over completion tokens), len_w, len_l their lengths;
    a_w = s_w / len_w, a_l = s_l / len_l (length-normalised, lengths clamped at 1);
    NLL = -sum_i s_w,i / sum_i len_w,i  (token-level mean NLL of the batch's chosen completions).

Each loss sets `needs_reference = False` (the engine then computes no reference log-probs and
precomputes nothing) and `needs_lengths = True`. They agree with TRL 1.16's
`trl.experimental.orpo.ORPOTrainer` and `trl.experimental.cpo.CPOTrainer` on the same log-probs
(tests/test_losses_reference_free.py), except where a docstring says otherwise.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from prospect.errors import ConfigError
from prospect.losses.base import LossOutput, PairedLogps, register_method
from prospect.losses.dpo import PairedLoss, smoothed_logistic

CPO_LOSS_TYPES = ("sigmoid", "hinge", "ipo", "simpo")


def _lengths(logps: PairedLogps, name: str) -> tuple[Tensor, Tensor]:
    if logps.chosen_lengths is None or logps.rejected_lengths is None:
        raise ValueError(f"{name} needs chosen_lengths and rejected_lengths in PairedLogps")
    like = logps.policy_chosen
    return logps.chosen_lengths.to(like).clamp(min=1.0), logps.rejected_lengths.to(like).clamp(min=1.0)


def average_logps(logps: PairedLogps, name: str) -> tuple[Tensor, Tensor]:
    """(a_w, a_l) = (s_w / len_w, s_l / len_l): per-token policy log-probs (TRL's average_log_prob=True)."""
    len_w, len_l = _lengths(logps, name)
    return logps.policy_chosen / len_w, logps.policy_rejected / len_l


def chosen_nll(logps: PairedLogps, name: str) -> Tensor:
    """NLL = -sum_i s_w,i / sum_i len_w,i: the token-level mean NLL of the chosen completions (a scalar)."""
    len_w, _ = _lengths(logps, name)
    return -logps.policy_chosen.sum() / len_w.sum()


def log1mexp(x: Tensor) -> Tensor:
    """log(1 - exp(x)) for x < 0, stable at both ends (Maechler 2012): log(-expm1(x)) or log1p(-exp(x))."""
    return torch.where(x > -0.6931472, torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


class ReferenceFreeLoss(PairedLoss):
    """Base of reference-free paired losses: reads no reference, needs lengths."""

    needs_reference = False
    needs_lengths = True

    def reward_logps(self, logps: PairedLogps) -> tuple[Tensor, Tensor]:
        """The log-probs whose beta multiple is logged as reward (length-normalised unless a loss says not)."""
        return average_logps(logps, self.name)

    def rewards(self, logps: PairedLogps) -> tuple[Tensor, Tensor]:
        a_w, a_l = self.reward_logps(logps)
        return self.beta * a_w.detach(), self.beta * a_l.detach()


class ORPOLoss(ReferenceFreeLoss):
    """ORPO (Hong et al. 2024, "ORPO: Monolithic Preference Optimization without Reference Model",
    arXiv:2403.07691; objective Eq. 6, odds ratio Eq. 4, L_OR Eq. 7):

        odds(y|x) = P(y|x) / (1 - P(y|x)),  P(y|x) = exp(a) (the length-normalised likelihood)
        log OR = log odds(y_w|x) - log odds(y_l|x) = (a_w - a_l) - (log(1 - e^a_w) - log(1 - e^a_l))
        L = NLL - lambda * mean_i log sigma(log OR_i)

    lambda is `dpo.beta` (TRL's `ORPOConfig.beta`; the paper uses 0.1). Per-pair losses are
    NLL - lambda log sigma(log OR_i), whose mean is L. Rewards: lambda * a (as TRL).
    TRL 1.16 takes the NLL over prompt and completion tokens; here, as in the paper's L_SFT, over
    the completion tokens (a batch token mean). The odds-ratio term equals TRL's exactly.
    metrics: "orpo/nll", "orpo/log_odds_ratio" (mean log sigma(log OR)), "orpo/log_odds_chosen" (mean log OR).
    """

    name = "orpo"

    def per_example(self, logps: PairedLogps) -> Tensor:
        return self._terms(logps)[0]

    def _terms(self, logps: PairedLogps) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        a_w, a_l = average_logps(logps, self.name)
        log_odds = (a_w - a_l) - (log1mexp(a_w) - log1mexp(a_l))
        ratio = F.logsigmoid(log_odds)
        nll = chosen_nll(logps, self.name)
        return nll - self.beta * ratio, nll, ratio, log_odds

    def __call__(self, logps: PairedLogps) -> LossOutput:
        losses, nll, ratio, log_odds = self._terms(logps)
        chosen, rejected = self.rewards(logps)
        metrics = {
            "orpo/nll": float(nll.detach()),
            "orpo/log_odds_ratio": float(ratio.detach().mean()),
            "orpo/log_odds_chosen": float(log_odds.detach().mean()),
        }
        return LossOutput(losses.mean(), losses, chosen, rejected, metrics)


class CPOLoss(ReferenceFreeLoss):
    """CPO (Xu et al. 2024, "Contrastive Preference Optimization: Pushing the Boundaries of LLM
    Performance in Machine Translation", arXiv:2401.08417): L = mean_i L_prefer,i + alpha * NLL, with
    L_prefer the DPO loss without reference (Eq. 3) on the policy log-probs:

        sigmoid (default): z = beta (s_w - s_l),  L_prefer = -(1 - eps) log sigma(z) - eps log sigma(-z)
        hinge:             L_prefer = max(0, 1 - beta (s_w - s_l))
        ipo:               L_prefer = ((a_w - a_l) - 1 / (2 beta))^2
        simpo:             z = beta (a_w - a_l) - gamma, smoothed logistic as sigmoid (CPO-SimPO; SimPO's
                           loss, Meng et al. 2024 Eq. 6, plus the NLL term)

    beta [dpo.beta], eps [dpo.label_smoothing], alpha [method.cpo_alpha] (TRL's cpo_alpha, 1.0),
    gamma [method.simpo_gamma], loss type [method.cpo_loss_type]. Summed log-probs for sigmoid and
    hinge, length-normalised for ipo and simpo (as TRL 1.16's CPOTrainer). Per-pair losses are
    L_prefer,i + alpha NLL. Rewards: beta * s (or beta * a for ipo, simpo), as TRL.
    TRL's AlphaPO reward transform (`alpha` != 0) is not offered.
    """

    name = "cpo"

    def __init__(
        self,
        beta: float = 0.1,
        label_smoothing: float = 0.0,
        cpo_alpha: float = 1.0,
        loss_type: str = "sigmoid",
        simpo_gamma: float = 0.5,
    ) -> None:
        super().__init__(beta)
        if loss_type not in CPO_LOSS_TYPES:
            raise ConfigError(f"method.cpo_loss_type must be one of {', '.join(CPO_LOSS_TYPES)}, got {loss_type!r}")
        if cpo_alpha < 0:
            raise ConfigError(f"method.cpo_alpha must be >= 0, got {cpo_alpha}")
        self.label_smoothing = label_smoothing
        self.cpo_alpha = cpo_alpha
        self.loss_type = loss_type
        self.simpo_gamma = simpo_gamma

    def reward_logps(self, logps: PairedLogps) -> tuple[Tensor, Tensor]:
        if self.loss_type in ("ipo", "simpo"):
            return average_logps(logps, self.name)
        return logps.policy_chosen, logps.policy_rejected

    def preference_losses(self, logps: PairedLogps) -> Tensor:
        """L_prefer per pair (no NLL)."""
        x_w, x_l = self.reward_logps(logps)
        logits = x_w - x_l
        if self.loss_type == "sigmoid":
            return smoothed_logistic(self.beta * logits, self.label_smoothing)
        if self.loss_type == "hinge":
            return torch.relu(1 - self.beta * logits)
        if self.loss_type == "ipo":
            return (logits - 1 / (2 * self.beta)) ** 2
        return smoothed_logistic(self.beta * logits - self.simpo_gamma, self.label_smoothing)

    def per_example(self, logps: PairedLogps) -> Tensor:
        losses = self.preference_losses(logps)
        if self.cpo_alpha:
            losses = losses + self.cpo_alpha * chosen_nll(logps, self.name)
        return losses


class SimPOLoss(CPOLoss):
    """SimPO (Meng et al. 2024, "SimPO: Simple Preference Optimization with a Reference-Free Reward",
    arXiv:2405.14734, Eq. 6), the reward beta * a (Eq. 4) with a target reward margin gamma:

        L = -log sigma(beta a_w - beta a_l - gamma)
          (with label smoothing eps: -(1 - eps) log sigma(z) - eps log sigma(-z), z as above)

    beta [dpo.beta] (the paper uses 2.0-10; dpo.beta's default 0.1 is DPO's), gamma
    [method.simpo_gamma] (the paper's gamma; TRL's simpo_gamma), eps [dpo.label_smoothing].
    This is TRL 1.16's `CPOTrainer(loss_type="simpo", cpo_alpha=0)`. Rewards: beta * a.
    """

    name = "simpo"

    def __init__(self, beta: float = 2.0, label_smoothing: float = 0.0, simpo_gamma: float = 0.5) -> None:
        super().__init__(beta, label_smoothing, cpo_alpha=0.0, loss_type="simpo", simpo_gamma=simpo_gamma)


@register_method("orpo")
def build_orpo(cfg: Any) -> ORPOLoss:
    """method orpo: ORPOLoss with lambda = dpo.beta."""
    return ORPOLoss(beta=cfg.dpo.beta)


@register_method("simpo")
def build_simpo(cfg: Any) -> SimPOLoss:
    """method simpo: SimPOLoss(dpo.beta, dpo.label_smoothing, method.simpo_gamma)."""
    return SimPOLoss(beta=cfg.dpo.beta, label_smoothing=cfg.dpo.label_smoothing, simpo_gamma=cfg.method.simpo_gamma)


@register_method("cpo")
def build_cpo(cfg: Any) -> CPOLoss:
    """method cpo: CPOLoss(dpo.beta, dpo.label_smoothing, method.cpo_alpha, method.cpo_loss_type, method.simpo_gamma)."""
    m = cfg.method
    return CPOLoss(
        beta=cfg.dpo.beta,
        label_smoothing=cfg.dpo.label_smoothing,
        cpo_alpha=m.cpo_alpha,
        loss_type=m.cpo_loss_type,
        simpo_gamma=m.simpo_gamma,
    )
