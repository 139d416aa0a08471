"""Paired (DPO-family) losses: TRL 1.16 `DPOTrainer` loss types, one small class each.

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

import inspect
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from prospect.errors import ConfigError
from prospect.losses.base import LossOutput, PairedLogps, paired_loss_class, register_paired


def logratios(logps: PairedLogps) -> tuple[Tensor, Tensor]:
    """(r_w, r_l): policy minus reference log-probs of chosen and rejected."""
    pc = logps.policy_chosen
    return pc - logps.reference_chosen.to(pc.dtype), logps.policy_rejected - logps.reference_rejected.to(pc.dtype)


def _lengths(logps: PairedLogps, loss_name: str) -> tuple[Tensor, Tensor]:
    if logps.chosen_lengths is None or logps.rejected_lengths is None:
        raise ValueError(f"loss_type {loss_name!r} needs chosen_lengths and rejected_lengths in PairedLogps")
    return logps.chosen_lengths, logps.rejected_lengths


def average_logratios(logps: PairedLogps, loss_name: str) -> tuple[Tensor, Tensor]:
    """(r_w / max(len_w, 1), r_l / max(len_l, 1)): per-token log-ratios, as TRL's ipo and sigmoid_norm."""
    r_w, r_l = logratios(logps)
    len_w, len_l = _lengths(logps, loss_name)
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


@register_paired("exo_pair")
class EXOPairLoss(PairedLoss):
    """EXO-pref (Ji et al. 2024, "Towards Efficient Exact Optimization of Language Model Alignment", Eq. 16),
    K = 2, with target distribution (1 - eps, eps) over (chosen, rejected):

        q_w = sigma(beta h), q_l = sigma(-beta h)
        L = q_w (log q_w - log(1 - eps)) + q_l (log q_l - log eps)     (= KL(q || p))

    eps = label_smoothing must be > 0 (the paper suggests 1e-3).
    """

    name = "exo_pair"

    def __init__(self, beta: float = 0.1, label_smoothing: float = 1e-3) -> None:
        super().__init__(beta)
        if not 0.0 < label_smoothing < 1.0:
            raise ConfigError(
                f"dpo.label_smoothing must lie in (0, 1) for loss_type 'exo_pair' (the EXO paper suggests 1e-3), "
                f"got {label_smoothing}"
            )
        self.label_smoothing = label_smoothing

    def per_example(self, logps: PairedLogps) -> Tensor:
        r_w, r_l = logratios(logps)
        z = self.beta * (r_w - r_l)
        eps = torch.tensor(self.label_smoothing, dtype=z.dtype, device=z.device)
        return torch.sigmoid(z) * (F.logsigmoid(z) - torch.log1p(-eps)) + torch.sigmoid(-z) * (
            F.logsigmoid(-z) - torch.log(eps)
        )


@register_paired("nca_pair")
class NCAPairLoss(PairedLoss):
    """NCA (Chen et al. 2024, "Noise Contrastive Alignment of Language Models with Explicit Rewards"), pairwise:

    L = -log sigma(beta r_w) - 1/2 log sigma(-beta r_w) - 1/2 log sigma(-beta r_l)
    """

    name = "nca_pair"

    def per_example(self, logps: PairedLogps) -> Tensor:
        r_w, r_l = logratios(logps)
        cw, cl = self.beta * r_w, self.beta * r_l
        return -F.logsigmoid(cw) - 0.5 * F.logsigmoid(-cw) - 0.5 * F.logsigmoid(-cl)


@register_paired("robust")
class RobustLoss(PairedLoss):
    """Robust DPO (Chowdhury et al. 2024, "Provably Robust DPO"), unbiased under label flips w.p. eps:

    L = [-(1 - eps) log sigma(beta h) + eps log sigma(-beta h)] / (1 - 2 eps),   0 <= eps < 1/2
    """

    name = "robust"

    def __init__(self, beta: float = 0.1, label_smoothing: float = 0.0) -> None:
        super().__init__(beta)
        if not 0.0 <= label_smoothing < 0.5:
            raise ConfigError(f"dpo.label_smoothing must lie in [0, 0.5) for loss_type 'robust', got {label_smoothing}")
        self.label_smoothing = label_smoothing

    def per_example(self, logps: PairedLogps) -> Tensor:
        r_w, r_l = logratios(logps)
        z = self.beta * (r_w - r_l)
        eps = self.label_smoothing
        return (-(1 - eps) * F.logsigmoid(z) + eps * F.logsigmoid(-z)) / (1 - 2 * eps)


@register_paired("bco_pair")
class BCOPairLoss(PairedLoss):
    """BCO on pairs (Jung et al. 2024, "Binary Classifier Optimization"), as TRL 1.16:

        L = -log sigma(beta r_w) - log sigma(-beta r_l)

    TRL 1.16 uses no reward shift here (earlier TRL subtracted a running mean of rewards).
    """

    name = "bco_pair"

    def per_example(self, logps: PairedLogps) -> Tensor:
        r_w, r_l = logratios(logps)
        return -F.logsigmoid(self.beta * r_w) - F.logsigmoid(-self.beta * r_l)


@register_paired("sppo_hard")
class SPPOHardLoss(PairedLoss):
    """SPPO with hard probabilities (Wu et al. 2024, "Self-Play Preference Optimization", Eq. 4.7 with
    P = 1 for the winner, 0 for the loser):

        L = (r_w - 1/(2 beta))^2 + (r_l + 1/(2 beta))^2
    """

    name = "sppo_hard"

    def per_example(self, logps: PairedLogps) -> Tensor:
        r_w, r_l = logratios(logps)
        return (r_w - 0.5 / self.beta) ** 2 + (r_l + 0.5 / self.beta) ** 2


@register_paired("aot")
class AOTLoss(PairedLoss):
    """AOT, paired (Melnyk et al. 2024, "Distributional Preference Alignment of LLMs via Optimal Transport"):
    sort the policy margins m_i = log pi(y_w|x) - log pi(y_l|x) and the reference margins
    m_ref_i over the batch separately, delta_(k) = m_(k) - m_ref_(k), then

        L_k = -(1 - eps) log sigma(beta delta_(k)) - eps log sigma(-beta delta_(k))

    The per-example losses are in sorted order, not aligned with the input pairs.
    """

    name = "aot"

    def __init__(self, beta: float = 0.1, label_smoothing: float = 0.0) -> None:
        super().__init__(beta)
        self.label_smoothing = label_smoothing

    def per_example(self, logps: PairedLogps) -> Tensor:
        policy = logps.policy_chosen - logps.policy_rejected
        reference = (logps.reference_chosen - logps.reference_rejected).to(policy.dtype)
        delta = torch.sort(policy, dim=0)[0] - torch.sort(reference, dim=0)[0]
        return smoothed_logistic(self.beta * delta, self.label_smoothing)


@register_paired("aot_unpaired")
class AOTUnpairedLoss(AOTLoss):
    """AOT, unpaired (Melnyk et al. 2024): sort r_w and r_l over the batch separately,
    delta_(k) = r_w(k) - r_l(k), and apply the same smoothed logistic loss as `aot`.
    The per-example losses are in sorted order, not aligned with the input pairs.
    """

    name = "aot_unpaired"

    def per_example(self, logps: PairedLogps) -> Tensor:
        r_w, r_l = logratios(logps)
        delta = torch.sort(r_w, dim=0)[0] - torch.sort(r_l, dim=0)[0]
        return smoothed_logistic(self.beta * delta, self.label_smoothing)


@register_paired("apo_zero")
class APOZeroLoss(PairedLoss):
    """APO-zero (D'Oosterlinck et al. 2024, "Anchored Preference Optimization", Eq. 7):
    raise the chosen likelihood, lower the rejected one.

        L = (1 - sigma(beta r_w)) + sigma(beta r_l)
    """

    name = "apo_zero"

    def per_example(self, logps: PairedLogps) -> Tensor:
        r_w, r_l = logratios(logps)
        return 1 - torch.sigmoid(self.beta * r_w) + torch.sigmoid(self.beta * r_l)


@register_paired("apo_down")
class APODownLoss(PairedLoss):
    """APO-down (D'Oosterlinck et al. 2024, Eq. 8): lower both, the rejected more.

    L = sigma(beta r_w) + (1 - sigma(beta (r_w - r_l)))
    """

    name = "apo_down"

    def per_example(self, logps: PairedLogps) -> Tensor:
        r_w, r_l = logratios(logps)
        return torch.sigmoid(self.beta * r_w) + 1 - torch.sigmoid(self.beta * (r_w - r_l))


@register_paired("discopop")
class DiscoPOPLoss(PairedLoss):
    """DiscoPOP / log-ratio modulated loss (Chris Lu et al. 2024, "Discovering Preference Optimization
    Algorithms with and for Large Language Models", Eq. 5), with z = beta h and temperature tau:

        m = sigma(z / tau)
        L = (1 - m) * (-log sigma(z)) + m * exp(-z)
    """

    name = "discopop"

    def __init__(self, beta: float = 0.1, discopop_tau: float = 0.05) -> None:
        super().__init__(beta)
        if discopop_tau <= 0:
            raise ConfigError(f"dpo.discopop_tau must be > 0, got {discopop_tau}")
        self.discopop_tau = discopop_tau

    def per_example(self, logps: PairedLogps) -> Tensor:
        r_w, r_l = logratios(logps)
        z = self.beta * (r_w - r_l)
        m = torch.sigmoid(z / self.discopop_tau)
        return -F.logsigmoid(z) * (1 - m) + torch.exp(-z) * m


@register_paired("sft")
class SFTLoss(PairedLoss):
    """Supervised NLL of the chosen completions (e.g. the SFT term of MPO / RPO combinations):

        L = -sum_i log pi(y_w,i|x_i) / sum_i len_w,i

    a token-level mean over the whole batch (TRL 1.16), repeated for each pair so that
    mean(losses) is that scalar. Needs chosen_lengths; ignores the reference.
    """

    name = "sft"
    needs_lengths = True

    def per_example(self, logps: PairedLogps) -> Tensor:
        len_w, _ = _lengths(logps, self.name)
        nll = -logps.policy_chosen.sum() / len_w.to(logps.policy_chosen.dtype).sum()
        return nll.expand(logps.policy_chosen.shape[0])


@register_paired("sigmoid_norm")
class SigmoidNormLoss(PairedLoss):
    """Length-normalised DPO, as TRL 1.16's "sigmoid_norm":

        L = -log sigma(beta (r_w / len_w - r_l / len_l))    (lengths clamped at 1)

    Needs chosen_lengths and rejected_lengths.
    """

    name = "sigmoid_norm"
    needs_lengths = True

    def per_example(self, logps: PairedLogps) -> Tensor:
        a_w, a_l = average_logratios(logps, self.name)
        return -F.logsigmoid(self.beta * (a_w - a_l))


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


def construct(cls: type, **settings: Any) -> Any:
    """`cls(**settings)`, passing only the settings its __init__ takes (each loss declares its own)."""
    accepted = inspect.signature(cls.__init__).parameters
    return cls(**{k: v for k, v in settings.items() if k in accepted})


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
