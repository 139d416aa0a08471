"""The prospect loss: KTO with the rest of prospect theory's knobs (this project's extension).

Seed 000 exposes `kto_alpha`, `kto_beta_s`, `kto_gamma`, `kto_lambda`, `use_weighting`,
`weighting_temperature`; docs/methods.md ("prospect") gives what they mean. See `ProspectLoss`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from prospect.losses.base import register_unpaired
from prospect.losses.kto import UnpairedLoss


def log_probability_weight_ratio(log_q: Tensor, log_1mq: Tensor, gamma: float) -> Tensor:
    """log(pi_g(q) / q) for the Tversky-Kahneman (1992) probability weighting function

        pi_g(q) = q^g / (q^g + (1 - q)^g)^(1/g),

    so  log(pi_g(q) / q) = (g - 1) log q - (1/g) log(q^g + (1 - q)^g),
    computed from log q and log(1 - q) so that q near 0 or 1 does not underflow.
    """
    return (gamma - 1.0) * log_q - torch.logaddexp(gamma * log_q, gamma * log_1mq) / gamma


@register_unpaired("prospect")
class ProspectLoss(UnpairedLoss):
    """Prospect-theory KTO (docs/methods.md; builds on KTO, Ethayarajh et al. 2024, Eq. 7, and the
    probability weighting function of Tversky & Kahneman 1992, "Advances in prospect theory").

    Symbols (config names in brackets):
      r        = log pi(y|x) - log pi_ref(y|x), summed over completion tokens (implied reward / beta).
      z0       reference point (detached scalar; see `reference_point`).
      beta     KL strength [kto.beta].
      beta_s   sensitivity: scales beta inside the sigmoid [kto.kto_beta_s].
      alpha    curvature of the value function: exponent on the per-example loss [kto.kto_alpha].
      lambda   loss aversion: multiplies every undesirable loss [kto.kto_lambda] (seed 000 meaning;
               NOT seed 003's DPO+KTO mixing weight, which is method.kto_weight).
      g        probability weighting exponent, 0 < g <= 1 [kto.kto_gamma].
      T        weighting temperature [kto.weighting_temperature].
      lambda_D / lambda_U  class weights for imbalanced data [kto.desirable_weight / undesirable_weight].

    Per example:
        u = beta_s * beta * (r - z0)        desirable
        u = beta_s * beta * (z0 - r)        undesirable
        q = 1 - sigma(u)                    (KTO's per-example loss; in (0, 1))
        L = q ** alpha                      times lambda for undesirable rows
    With use_weighting, each L is multiplied by a detached, bounded weight
        w = (pi_g(q_c) / q_c) ** (1/T),  q_c = max(q, q_min),  pi_g(q) = q^g / (q^g + (1-q)^g)^(1/g),
    normalised to mean 1 over the batch's finite rows (w_i / mean_j w_j). Finally L is multiplied
    by lambda_D / lambda_U (and the data weight), and loss = nanmean over the batch.

    The floor q_min [kto.weighting_floor, 0.01] bounds the weights: pi_g(q)/q grows like
    q^(g-1) as q -> 0, so without it one very well-fit row (an undesirable row with r = -3000 at
    beta 0.1 has q = e^-300) would take almost all of the batch's weight and the other rows'
    gradients would vanish (~1e-17). With it, every raw weight lies in [m, W] with
    W = pi_g(q_min)/q_min and m = min over [q_min, 1] of pi_g(q)/q (m <= 1 <= W: pi_g(1) = 1), so
    no normalised weight exceeds (W/m)^(1/T) times another (g = 0.88, q_min = 0.01: W = 1.721,
    m = 0.957 at q = 0.78, about 1.8). Rows with q >= q_min are weighted exactly as without the floor.
    Non-finite rows (r = NaN, or r - z0 undefined) get loss NaN, are left out of the weight
    normalisation and skipped by the nanmean, as in `KTOLoss` and TRL; r = +-inf gives q = 0 or 1
    and a finite loss (0 or lambda-weighted 1), as in `KTOLoss`. metrics["prospect/skipped_rows"]
    counts the skipped (NaN) rows.

    With alpha = beta_s = lambda = 1 and use_weighting off this is exactly `KTOLoss`.

    What each knob does to the gradient dL/dr (from the formula; tested):
      - dL/dr = -/+ c * beta_s * beta * alpha * q^alpha * (1 - q) (desirable -/ undesirable +),
        where c collects lambda, the class/data weights and w.
      - lambda scales undesirable gradients by lambda, leaves desirable ones alone.
      - alpha < 1 multiplies the gradient by alpha * q^(alpha - 1) relative to alpha = 1:
        larger for well-fit examples (q < alpha^(1/(1-alpha))), smaller for badly-fit ones.
      - beta_s scales the gradient at r = z0 (q = 1/2) by beta_s, but saturates sooner:
        far from z0 on the right side the gradient shrinks as beta_s grows.
      - g < 1 gives w = pi_g(q)/q > 1 for small q and < 1 for moderate q, so the weighting
        shifts gradient towards examples the policy already handles (small q, "rare losses"
        overweighted as in prospect theory) and away from q around 1/2; g = 1 is no weighting.
        w would grow without bound as q -> 0 (like q^(g-1)); the floor q_min caps it at W, and
        T > 1 softens it further (T -> inf: uniform).
      Weights are normalised per (micro-)batch, so they rescale examples against each other,
      not the overall step size.
    """

    name = "prospect"

    def __init__(
        self,
        beta: float = 0.1,
        desirable_weight: float = 1.0,
        undesirable_weight: float = 1.0,
        alpha: float = 1.0,
        beta_s: float = 1.0,
        gamma: float = 0.88,
        loss_aversion: float = 2.25,
        use_weighting: bool = True,
        weighting_temperature: float = 1.0,
        weighting_floor: float = 0.01,
    ) -> None:
        super().__init__(beta, desirable_weight, undesirable_weight)
        for label, value in (
            ("alpha", alpha),
            ("beta_s", beta_s),
            ("loss_aversion", loss_aversion),
            ("weighting_temperature", weighting_temperature),
        ):
            if value <= 0:
                raise ValueError(f"{label} must be > 0, got {value}")
        if not 0 < gamma <= 1:
            raise ValueError(f"gamma must lie in (0, 1], got {gamma}")
        if not 0 < weighting_floor < 1:
            raise ValueError(f"weighting_floor must lie in (0, 1), got {weighting_floor}")
        self.alpha = alpha
        self.beta_s = beta_s
        self.gamma = gamma
        self.loss_aversion = loss_aversion
        self.use_weighting = use_weighting
        self.weighting_temperature = weighting_temperature
        self.weighting_floor = weighting_floor

    def example_losses(self, r: Tensor, desirable: Tensor, z0: Tensor) -> tuple[Tensor, dict[str, float]]:
        k = self.beta_s * self.beta
        u = torch.where(desirable, k * (r - z0), k * (z0 - r))
        # q^alpha = exp(alpha * log sigma(-u)): stable where 1 - sigma(u) would round to 0
        # (q^alpha with alpha < 1 would then have an infinite derivative).
        log_q = F.logsigmoid(-u)
        losses = torch.exp(self.alpha * log_q)
        losses = torch.where(desirable, losses, self.loss_aversion * losses)
        metrics: dict[str, float] = {"prospect/skipped_rows": float(torch.isnan(u.detach()).sum())}
        if self.use_weighting:
            w = self.probability_weights(u.detach())
            losses = losses * w
            finite = w[torch.isfinite(w)]
            if finite.numel():
                metrics.update({"prospect/weight_max": float(finite.max()), "prospect/weight_min": float(finite.min())})
        return losses, metrics

    def probability_weights(self, u: Tensor) -> Tensor:
        """Detached weights (pi_g(q_c)/q_c)^(1/T), q = 1 - sigma(u), q_c = max(q, q_min), mean 1 over finite rows.

        NaN rows get weight NaN (their loss is NaN and skipped); u = +-inf is finite here (q = 0 or 1).
        An empty batch gives an empty tensor.
        """
        with torch.no_grad():
            log_floor = torch.log(torch.tensor(self.weighting_floor, dtype=u.dtype, device=u.device))
            log_q, log_1mq = F.logsigmoid(-u), F.logsigmoid(u)
            below = log_q < log_floor  # False for NaN: NaN rows stay NaN
            log_q = torch.where(below, log_floor, log_q)
            log_1mq = torch.where(below, torch.log1p(-torch.exp(log_floor)), log_1mq)
            log_w = log_probability_weight_ratio(log_q, log_1mq, self.gamma) / self.weighting_temperature
            finite = torch.isfinite(log_w)
            if not bool(finite.any()):
                return torch.full_like(u, float("nan"))
            # Shift by the max before exp: the normalisation cancels it and nothing overflows.
            w = torch.exp(log_w - log_w[finite].max())
            w = torch.where(finite, w, torch.full_like(w, float("nan")))
            return w / w[finite].mean()
