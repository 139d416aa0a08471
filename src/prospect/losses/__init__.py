"""Preference losses: pure functions of per-sequence log-probs, registered by name.

    loss = build_loss(run_config)  # KTO class weights resolved beforehand (prospect.data.weights)
    loss.kind                      # "unpaired" (kto) or "paired" (dpo, ipo, factual_dpo, dpo_kto)
    out = loss(logps)              # UnpairedLogps / PairedLogps -> LossOutput

Unpaired loss types (kto.loss_type): kto, apo_zero_unpaired, prospect.
Paired loss types (dpo.loss_type): TRL 1.16's sigmoid, hinge, ipo, exo_pair, nca_pair,
robust, bco_pair, sppo_hard, aot, aot_unpaired, apo_zero, apo_down, discopop, sft,
sigmoid_norm (lists combine with dpo.loss_weights).
The KTO reference point z0 is estimated by `build_reference_point(kto.reference_point)`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from prospect.errors import ConfigError
from prospect.losses.base import (
    LossOutput,
    PairedLogps,
    UnpairedLogps,
    paired_loss_class,
    paired_loss_names,
    register_paired,
    register_unpaired,
    unpaired_loss_class,
    unpaired_loss_names,
)
from prospect.losses.dpo import CombinedPairedLoss, PairedLoss, build_paired_loss, construct
from prospect.losses.dpo_kto import DPOKTOLoss
from prospect.losses.factual_dpo import FactualDPOLoss, reorient_pairs
from prospect.losses.kto import APOZeroUnpairedLoss, KTOLoss, UnpairedLoss
from prospect.losses.prospect import ProspectLoss
from prospect.losses.reference_point import (
    BatchMismatch,
    ReferencePoint,
    RunningMean,
    WindowMismatch,
    Zero,
    build_reference_point,
    mismatched_indices,
    reference_point_names,
)


class PreferenceLoss(Protocol):
    """What the engine calls: `.kind` says which inputs to build."""

    kind: str

    def __call__(self, logps: Any) -> LossOutput: ...


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


def _dpo_section_loss(dpo: Any, loss_type: Any = None) -> PairedLoss:
    return build_paired_loss(
        loss_type or dpo.loss_type,
        None if loss_type else dpo.loss_weights,
        beta=dpo.beta,
        label_smoothing=dpo.label_smoothing,
        discopop_tau=dpo.discopop_tau,
    )


def _build_kto(cfg: Any) -> PreferenceLoss:
    return build_unpaired_loss(cfg.kto)


def _build_dpo(cfg: Any) -> PreferenceLoss:
    return _dpo_section_loss(cfg.dpo)


def _build_ipo(cfg: Any) -> PreferenceLoss:
    # method: ipo is DPO with loss_type ipo, whatever dpo.loss_type says.
    return _dpo_section_loss(cfg.dpo, "ipo")


def _build_factual_dpo(cfg: Any) -> PreferenceLoss:
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


def _build_dpo_kto(cfg: Any) -> PreferenceLoss:
    kto = build_unpaired_loss(cfg.kto)
    return DPOKTOLoss(
        _dpo_section_loss(cfg.dpo),
        kto,
        kto_weight=cfg.method.kto_weight,
        reference_point=build_reference_point(cfg.kto.reference_point),
    )


_METHODS: dict[str, Callable[[Any], PreferenceLoss]] = {
    "kto": _build_kto,
    "dpo": _build_dpo,
    "ipo": _build_ipo,
    "factual_dpo": _build_factual_dpo,
    "dpo_kto": _build_dpo_kto,
}


def build_loss(run_config: Any) -> PreferenceLoss:
    """The loss of a run (`RunConfig.method.name`): an object with `.kind` and `__call__(logps) -> LossOutput`.

    kto -> kto.loss_type (kto | prospect | apo_zero_unpaired), unpaired;
    dpo -> dpo.loss_type (one name or a list with dpo.loss_weights), paired;
    ipo -> dpo with loss_type ipo; factual_dpo -> FactualDPOLoss(dpo.beta, method.delta);
    dpo_kto -> DPOKTOLoss(dpo loss, kto loss, method.kto_weight, kto.reference_point).
    kto.desirable_weight / undesirable_weight must be numbers ("auto" is resolved with the data).
    """
    name = run_config.method.name
    if name not in _METHODS:
        raise ConfigError(f"method.name: unknown method {name!r}; known: {', '.join(sorted(_METHODS))}")
    return _METHODS[name](run_config)


__all__ = [
    "APOZeroUnpairedLoss",
    "BatchMismatch",
    "CombinedPairedLoss",
    "DPOKTOLoss",
    "FactualDPOLoss",
    "KTOLoss",
    "LossOutput",
    "PairedLogps",
    "PairedLoss",
    "PreferenceLoss",
    "ProspectLoss",
    "ReferencePoint",
    "RunningMean",
    "UnpairedLogps",
    "UnpairedLoss",
    "WindowMismatch",
    "Zero",
    "build_loss",
    "build_paired_loss",
    "build_reference_point",
    "build_unpaired_loss",
    "mismatched_indices",
    "paired_loss_class",
    "paired_loss_names",
    "reference_point_names",
    "register_paired",
    "register_unpaired",
    "reorient_pairs",
    "unpaired_loss_class",
    "unpaired_loss_names",
]
