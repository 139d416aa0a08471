"""Factual-DPO++ (seed 004): DPO with a SafeDPO-style factuality margin Delta.

Each pair carries indicators h_w, h_l (1 = the chosen / rejected completion is
non-factual or unsafe). Two steps:

1. Reorient: where the chosen is non-factual and the rejected factual (h_w = 1, h_l = 0),
   swap chosen and rejected (and their indicators). The data layer does this on records
   (`prospect.data.convert.reorient_factual_pairs`) and reports how many; `reorient_pairs`
   is the same rule on tensors, used to count pairs that reach the loss unoriented.
2. Loss, with h = r_w - r_l (r = policy - reference log-prob, summed):

       L = -log sigma(beta h - (h_l - h_w) * Delta)

   A pair whose rejected completion is non-factual and chosen factual (h_l - h_w = 1) must
   win by a margin Delta / beta in h; other pairs get plain DPO. Delta = 0 is DPO "sigmoid".
"""

from __future__ import annotations

from torch import Tensor

from prospect.errors import DPODataError
from prospect.losses.base import LossOutput, PairedLogps
from prospect.losses.dpo import PairedLoss, logratios, smoothed_logistic


def reorient_pairs(h_w: Tensor, h_l: Tensor) -> Tensor:
    """Boolean swap mask: True where the chosen is non-factual (h_w = 1) and the rejected factual (h_l = 0)."""
    return (h_w == 1) & (h_l == 0)


class FactualDPOLoss(PairedLoss):
    """Factual-DPO++ (seed 004; SafeDPO-style margin, Kim et al. 2025, "SafeDPO"):

        L = -(1 - eps) log sigma(z) - eps log sigma(-z),   z = beta h - (h_l - h_w) * Delta

    beta: KL strength [dpo.beta]; Delta: factuality margin [method.delta] (>= 0);
    eps: label smoothing [dpo.label_smoothing] (0 by default, as in the seed).
    Reads h_w and h_l from PairedLogps (required when Delta > 0; missing means 0 when Delta = 0).
    With Delta = 0 this equals `SigmoidLoss` exactly. Pairs must be reoriented first
    (`prospect.data.convert.reorient_factual_pairs`); metrics["factual/unoriented_pairs"] counts any that are not.
    """

    name = "factual_dpo"

    def __init__(self, beta: float = 0.1, delta: float = 0.0, label_smoothing: float = 0.0) -> None:
        super().__init__(beta)
        if delta < 0:
            raise ValueError(f"delta must be >= 0, got {delta}")
        self.delta = delta
        self.label_smoothing = label_smoothing

    def _indicators(self, logps: PairedLogps, like: Tensor) -> tuple[Tensor | None, Tensor | None]:
        if logps.h_w is None or logps.h_l is None:
            if self.delta != 0:
                raise DPODataError(
                    "factual_dpo with method.delta > 0 needs the factuality indicators h_w and h_l for every pair; "
                    "add h_w/h_l columns to the data or set method.delta: 0"
                )
            return None, None
        return logps.h_w.to(like), logps.h_l.to(like)

    def per_example(self, logps: PairedLogps) -> Tensor:
        r_w, r_l = logratios(logps)
        z = self.beta * (r_w - r_l)
        h_w, h_l = self._indicators(logps, z)
        if h_w is not None and self.delta != 0:
            z = z - (h_l - h_w) * self.delta
        return smoothed_logistic(z, self.label_smoothing)

    def __call__(self, logps: PairedLogps) -> LossOutput:
        out = super().__call__(logps)
        if logps.h_w is not None and logps.h_l is not None:
            out.metrics["factual/unoriented_pairs"] = float(reorient_pairs(logps.h_w, logps.h_l).sum())
        return out
