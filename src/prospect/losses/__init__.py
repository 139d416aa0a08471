"""Preference losses: pure functions of per-sequence log-probs, registered by name.

    loss = build_loss(run_config)  # KTO class weights resolved beforehand (prospect.data.weights)
    loss.kind                      # "unpaired" (kto) or "paired" (the others)
    out = loss(logps)              # UnpairedLogps / PairedLogps -> LossOutput

Three registries, filled when the loss modules are imported below:
- methods (`method.name`): each loss module registers its builder with `@register_method("<name>")`
  (kto.py: kto; dpo.py: dpo, ipo; factual_dpo.py; dpo_kto.py; reference_free.py: orpo, simpo, cpo);
- unpaired loss types (`kto.loss_type`, `@register_unpaired`): kto, apo_zero_unpaired, prospect;
- paired loss types (`dpo.loss_type`, `@register_paired`): TRL 1.16's sigmoid, hinge, ipo (dpo.py),
  exo_pair, nca_pair, robust, bco_pair, sppo_hard, aot, aot_unpaired, apo_zero, apo_down,
  discopop, sft, sigmoid_norm (dpo_types.py); lists combine with dpo.loss_weights.
Every module of the package is imported here (so a new loss module registers itself without an
edit to this file), and the registries are checked against the method table (`prospect.config.methods`: METHODS and
LOSS_TYPES), so a method or loss type cannot exist in one and not the other.
The KTO reference point z0 is estimated by `build_reference_point(kto.reference_point)`.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any, Protocol

from prospect.config.methods import LOSS_TYPES, METHODS
from prospect.losses.base import (
    LossOutput,
    PairedLogps,
    UnpairedLogps,
    method_builder,
    method_names,
    paired_loss_class,
    paired_loss_names,
    register_method,
    register_paired,
    register_unpaired,
    unpaired_loss_class,
    unpaired_loss_names,
)
from prospect.losses.dpo import CombinedPairedLoss, PairedLoss, build_paired_loss
from prospect.losses.dpo_kto import DPOKTOLoss
from prospect.losses.factual_dpo import FactualDPOLoss, reorient_pairs
from prospect.losses.kto import APOZeroUnpairedLoss, KTOLoss, UnpairedLoss, build_unpaired_loss
from prospect.losses.prospect import ProspectLoss
from prospect.losses.reference_free import CPOLoss, ORPOLoss, SimPOLoss
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


def build_loss(run_config: Any) -> PreferenceLoss:
    """The loss of a run (`RunConfig.method.name`): an object with `.kind` and `__call__(logps) -> LossOutput`.

    kto -> kto.loss_type (kto | prospect | apo_zero_unpaired), unpaired;
    dpo -> dpo.loss_type (one name or a list with dpo.loss_weights), paired;
    ipo -> dpo with loss_type ipo; factual_dpo -> FactualDPOLoss(dpo.beta, method.delta, method.margin_scale);
    dpo_kto -> DPOKTOLoss(dpo loss, kto loss, method.kto_weight, kto.reference_point);
    orpo / simpo / cpo -> the reference-free losses (dpo.beta, method.simpo_gamma, method.cpo_*).
    kto.desirable_weight / undesirable_weight must be numbers ("auto" is resolved with the data).
    """
    builder: Any = method_builder(run_config.method.name)
    loss: PreferenceLoss = builder(run_config)
    return loss


def _check_registries() -> None:
    """The registries hold exactly the method table's names (config/methods.py)."""
    pairs = (
        ("methods (@register_method)", method_names(), METHODS),
        ("kto loss types (@register_unpaired)", unpaired_loss_names(), LOSS_TYPES["kto"]),
        ("dpo loss types (@register_paired)", paired_loss_names(), LOSS_TYPES["dpo"]),
    )
    for what, registered, table in pairs:
        if set(registered) != set(table):
            raise RuntimeError(
                f"prospect.losses: the {what} and prospect/config/methods.py disagree: registered only "
                f"{sorted(set(registered) - set(table))}, in the table only {sorted(set(table) - set(registered))}"
            )


# Every module of this package registers what it defines when imported: import them all (a new loss
# module needs no line here), then check the registries against the method table.
for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
_check_registries()

__all__ = [
    "APOZeroUnpairedLoss",
    "BatchMismatch",
    "CPOLoss",
    "CombinedPairedLoss",
    "DPOKTOLoss",
    "FactualDPOLoss",
    "KTOLoss",
    "LossOutput",
    "ORPOLoss",
    "PairedLogps",
    "PairedLoss",
    "PreferenceLoss",
    "ProspectLoss",
    "ReferencePoint",
    "RunningMean",
    "SimPOLoss",
    "UnpairedLogps",
    "UnpairedLoss",
    "WindowMismatch",
    "Zero",
    "build_loss",
    "build_paired_loss",
    "build_reference_point",
    "build_unpaired_loss",
    "method_names",
    "mismatched_indices",
    "paired_loss_class",
    "paired_loss_names",
    "reference_point_names",
    "register_method",
    "register_paired",
    "register_unpaired",
    "reorient_pairs",
    "unpaired_loss_class",
    "unpaired_loss_names",
]
