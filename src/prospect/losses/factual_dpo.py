"""Factual-DPO++ (seed 004): DPO with a SafeDPO-style factuality margin Delta.

Each pair carries indicators h_w, h_l (1 = the chosen / rejected completion is
non-factual or unsafe). Two steps:

1. Reorient: where the chosen is non-factual and the rejected factual (h_w = 1, h_l = 0),
   swap chosen and rejected (and their indicators). The data layer does this on records
   (`prospect.data.convert.reorient_factual_pairs`, which also keeps or drops pairs with
   h_w = h_l = 1 by `method.both_nonfactual`) and reports how many; `reorient_pairs` is the
   same rule on tensors, used to count pairs that reach the loss unoriented.
2. Loss, with h = r_w - r_l (r = policy - reference log-prob, summed) and s = h_l - h_w:

       margin_scale "beta" (default):  L = -log sigma(beta * (h - Delta * s))
       margin_scale "none":            L = -log sigma(beta * h - Delta * s)

   A pair whose rejected completion is non-factual and chosen factual (s = 1) must win by
   a margin: Delta in h ("beta"), or Delta / beta in h ("none"); other pairs (s = 0) get
   plain DPO. Delta = 0 is DPO "sigmoid" in both forms.

Sources: "none" is the SafeDPO paper's objective with its safety margin (Kim et al. 2025,
"SafeDPO: A Simple Approach to Direct Preference Optimization with Enhanced Safety",
arXiv:2505.20065), the safety indicators read as factuality indicators. "beta" is the form seed 004's own project
documents for its Factual-DPO++ objective; its sweep Delta in [0, 2, ..., 100] at beta = 0.1
assumes it (in the "none" form Delta >= 10 saturates the sigmoid).
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from prospect.errors import ConfigError, DPODataError
from prospect.losses.base import LossOutput, PairedLogps, register_method
from prospect.losses.dpo import PairedLoss, logratios, smoothed_logistic

MARGIN_SCALES = ("beta", "none")


def reorient_pairs(h_w: Tensor, h_l: Tensor) -> Tensor:
    """Boolean swap mask: True where the chosen is non-factual (h_w = 1) and the rejected factual (h_l = 0)."""
    return (h_w == 1) & (h_l == 0)


class FactualDPOLoss(PairedLoss):
    """Factual-DPO++ (seed 004; SafeDPO-style margin, Kim et al. 2025, "SafeDPO", arXiv:2505.20065):

        L = -(1 - eps) log sigma(z) - eps log sigma(-z),  with s = h_l - h_w and
        z = beta * (h - Delta * s)    margin_scale "beta" (seed 004's project; the default)
        z = beta * h - Delta * s      margin_scale "none" (the SafeDPO paper)

    beta: KL strength [dpo.beta]; Delta: factuality margin [method.delta] (>= 0);
    margin_scale: [method.margin_scale]; eps: label smoothing [dpo.label_smoothing] (0 by default).
    Reads h_w and h_l from PairedLogps (required when Delta > 0; missing means 0 when Delta = 0).
    With Delta = 0 this equals `SigmoidLoss` exactly. Pairs must be reoriented first
    (`prospect.data.convert.reorient_factual_pairs`); metrics["factual/unoriented_pairs"] counts any that are not.
    """

    name = "factual_dpo"

    def __init__(
        self, beta: float = 0.1, delta: float = 0.0, label_smoothing: float = 0.0, margin_scale: str = "beta"
    ) -> None:
        super().__init__(beta)
        if delta < 0:
            raise ValueError(f"delta must be >= 0, got {delta}")
        if margin_scale not in MARGIN_SCALES:
            raise ValueError(f"margin_scale must be one of {MARGIN_SCALES}, got {margin_scale!r}")
        self.delta = delta
        self.label_smoothing = label_smoothing
        self.margin_scale = margin_scale

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
        h = r_w - r_l
        h_w, h_l = self._indicators(logps, h)
        if h_w is None or self.delta == 0:
            return smoothed_logistic(self.beta * h, self.label_smoothing)
        margin = (h_l - h_w) * self.delta
        z = self.beta * (h - margin) if self.margin_scale == "beta" else self.beta * h - margin
        return smoothed_logistic(z, self.label_smoothing)

    def __call__(self, logps: PairedLogps) -> LossOutput:
        out = super().__call__(logps)
        if logps.h_w is not None and logps.h_l is not None:
            out.metrics["factual/unoriented_pairs"] = float(reorient_pairs(logps.h_w, logps.h_l).sum())
        return out


@register_method("factual_dpo")
def build_factual_dpo(cfg: Any) -> FactualDPOLoss:
    """method factual_dpo: FactualDPOLoss(dpo.beta, method.delta, dpo.label_smoothing, method.margin_scale)."""
    if cfg.dpo.loss_type not in ("sigmoid", ["sigmoid"]):
        raise ConfigError(
            f"method factual_dpo is a sigmoid-DPO variant; dpo.loss_type must be 'sigmoid', got {cfg.dpo.loss_type!r}"
        )
    return FactualDPOLoss(
        beta=cfg.dpo.beta,
        delta=cfg.method.delta,
        label_smoothing=cfg.dpo.label_smoothing,
        margin_scale=cfg.method.margin_scale,
    )
