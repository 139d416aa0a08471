"""Class weights lambda_D / lambda_U for imbalanced KTO data (Ethayarajh et al. 2024, Eq. 8).

The KTO paper (and TRL's documentation, seed 002) asks that, with n_D desirable and n_U
undesirable examples,

    ratio = (lambda_D * n_D) / (lambda_U * n_U)   lies in [1, 4/3].

The auto rule (seed 002): if n_D / n_U already lies in [1, 4/3], both weights stay 1.0.
Otherwise keep the majority class at 1.0 and upweight the minority class so the ratio is
exactly 1 (the effective counts are equal). E.g. 746 desirable / 254 undesirable ->
lambda_D = 1.0, lambda_U = 746/254 ≈ 2.937; 12 / 10 -> (1.0, 1.0), ratio 1.2; 10 / 12 ->
lambda_D = 1.2, ratio 1. A class with no example cannot be weighted: training KTO
needs both labels, so that raises KTOLabelError.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

from prospect.errors import KTOLabelError

KTO_RATIO_RANGE: tuple[float, float] = (1.0, 4.0 / 3.0)
# Float rounding can put an exact ratio of 1 a hair below 1.
_TOL = 1e-9

WeightSetting = float | Literal["auto"]


def kto_weight_ratio(desirable_weight: float, undesirable_weight: float, n_desirable: int, n_undesirable: int) -> float:
    """(lambda_D * n_D) / (lambda_U * n_U); inf when there are no undesirable examples."""
    den = undesirable_weight * n_undesirable
    return float("inf") if den == 0 else desirable_weight * n_desirable / den


def ratio_in_range(ratio: float) -> bool:
    """Whether `ratio` lies in the KTO paper's range [1, 4/3] (up to float rounding)."""
    lo, hi = KTO_RATIO_RANGE
    return lo - _TOL <= ratio <= hi + _TOL


def _check_counts(n_desirable: int, n_undesirable: int) -> None:
    if n_desirable < 0 or n_undesirable < 0:
        raise ValueError(f"label counts must be >= 0, got {n_desirable} desirable, {n_undesirable} undesirable")
    if n_desirable == 0 or n_undesirable == 0:
        missing = "desirable (label true)" if n_desirable == 0 else "undesirable (label false)"
        raise KTOLabelError(
            f"the training data has no {missing} examples ({n_desirable} desirable, {n_undesirable} undesirable): "
            "KTO needs both labels; check data.label_column / label_mapping or the score/rating threshold"
        )


def auto_kto_weights(n_desirable: int, n_undesirable: int) -> tuple[float, float, float]:
    """(lambda_D, lambda_U, ratio) by the auto rule: (1, 1) if n_D / n_U is already in [1, 4/3];
    else the majority class 1.0 and the minority n_major / n_minor (ratio 1).

    >>> auto_kto_weights(746, 254)[:2]
    (1.0, 2.937007874015748)

    Raises KTOLabelError if either count is 0.
    """
    _check_counts(n_desirable, n_undesirable)
    if ratio_in_range(n_desirable / n_undesirable):
        lam_d, lam_u = 1.0, 1.0
    elif n_desirable > n_undesirable:
        lam_d, lam_u = 1.0, n_desirable / n_undesirable
    else:
        lam_d, lam_u = n_undesirable / n_desirable, 1.0
    return lam_d, lam_u, kto_weight_ratio(lam_d, lam_u, n_desirable, n_undesirable)


@dataclass(frozen=True)
class KTOWeights:
    """Resolved class weights, for the data report and the run record."""

    desirable_weight: float
    undesirable_weight: float
    ratio: float
    n_desirable: int
    n_undesirable: int
    auto: bool

    @property
    def in_range(self) -> bool:
        return ratio_in_range(self.ratio)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "in_range": self.in_range, "range": list(KTO_RATIO_RANGE)}


def resolve_kto_weights(
    desirable_weight: WeightSetting, undesirable_weight: WeightSetting, n_desirable: int, n_undesirable: int
) -> KTOWeights:
    """Turn config settings (numbers or "auto") into numbers.

    - both "auto": `auto_kto_weights`;
    - one "auto": it is chosen so the ratio is 1 given the other, fixed weight
      (lambda_D = lambda_U * n_U / n_D, or lambda_U = lambda_D * n_D / n_U);
    - both numbers: kept as given (check `.in_range` and tell the user if not).
    Raises KTOLabelError if either count is 0 and a weight is "auto".
    """
    d_auto, u_auto = desirable_weight == "auto", undesirable_weight == "auto"
    if d_auto or u_auto:
        _check_counts(n_desirable, n_undesirable)
    if d_auto and u_auto:
        lam_d, lam_u, _ = auto_kto_weights(n_desirable, n_undesirable)
    elif d_auto:
        lam_u = float(undesirable_weight)
        lam_d = lam_u * n_undesirable / n_desirable
    elif u_auto:
        lam_d = float(desirable_weight)
        lam_u = lam_d * n_desirable / n_undesirable
    else:
        lam_d, lam_u = float(desirable_weight), float(undesirable_weight)
    return KTOWeights(
        lam_d,
        lam_u,
        kto_weight_ratio(lam_d, lam_u, n_desirable, n_undesirable),
        n_desirable,
        n_undesirable,
        d_auto or u_auto,
    )
