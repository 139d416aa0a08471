"""The other TRL 1.16 `DPOTrainer` loss types (`dpo.loss_type`), one small class each.

Notation and conventions as in `prospect.losses.dpo`: r_w = log pi(y_w|x) - log pi_ref(y_w|x),
r_l likewise, h = r_w - r_l; per-pair losses (B,), loss = their mean, rewards beta * r.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from prospect.errors import ConfigError
from prospect.losses.base import PairedLogps, register_paired
from prospect.losses.dpo import PairedLoss, average_logratios, lengths_of, logratios, smoothed_logistic


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
        len_w, _ = lengths_of(logps, self.name)
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
