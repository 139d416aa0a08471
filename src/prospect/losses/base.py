"""Loss interface: typed inputs of per-sequence log-probs in, a small dataclass out.

A loss never sees a model. The engine computes per-sequence log-probs (summed over
completion tokens) and hands them over in `UnpairedLogps` (KTO family) or
`PairedLogps` (DPO family). Losses are registered by name; the config's name is
checked against the registry when the config loads.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
from torch import Tensor

from prospect.errors import ConfigError


@dataclass
class UnpairedLogps:
    """Per-example inputs of an unpaired (KTO-family) loss. Shapes are (B,).

    policy / reference: log pi(y|x), log pi_ref(y|x), summed over completion tokens.
    label: bool, True = desirable.
    z0: scalar reference point (detached), from a `prospect.losses.reference_point` estimator.
    weight: optional per-example weight (from data); multiplies the per-example loss.
    lengths: completion token counts.
    """

    policy: Tensor
    reference: Tensor
    label: Tensor
    z0: Tensor
    weight: Tensor | None = None
    lengths: Tensor | None = None


@dataclass
class PairedLogps:
    """Per-pair inputs of a paired (DPO-family) loss. Shapes are (B,).

    *_chosen / *_rejected: summed completion log-probs; *_lengths: completion token counts.
    h_w / h_l: factuality indicators (1 = non-factual/unsafe), for factual_dpo.
    margin: optional per-pair target margin (carried from the data; no TRL loss type reads it).
    kl_policy / kl_reference: policy / reference log-probs of mismatched (prompt, completion)
      pairs, for the KTO term of the dpo_kto hybrid (its reference point z0); any length.
    z0: the reference point itself (detached scalar), when the engine already estimated it;
      takes precedence over kl_policy / kl_reference.
    """

    policy_chosen: Tensor
    policy_rejected: Tensor
    reference_chosen: Tensor
    reference_rejected: Tensor
    chosen_lengths: Tensor | None = None
    rejected_lengths: Tensor | None = None
    h_w: Tensor | None = None
    h_l: Tensor | None = None
    margin: Tensor | None = None
    kl_policy: Tensor | None = None
    kl_reference: Tensor | None = None
    z0: Tensor | None = None


@dataclass
class LossOutput:
    """What every loss returns.

    loss: scalar to backpropagate.
    losses: per-example losses (B,) before the final reduction.
    chosen_rewards / rejected_rewards: beta * log-ratio of desirable/chosen and
      undesirable/rejected examples (detached; may be empty tensors).
    metrics: extra scalars to log (floats), e.g. {"kl": ..., "weights/desirable": ...}.
    """

    loss: Tensor
    losses: Tensor
    chosen_rewards: Tensor
    rejected_rewards: Tensor
    metrics: dict[str, float] = field(default_factory=dict)


L = TypeVar("L")
B = TypeVar("B", bound=Callable[[Any], Any])
_UNPAIRED: dict[str, type] = {}
_PAIRED: dict[str, type] = {}
_METHODS: dict[str, Callable[[Any], Any]] = {}


def register_method(name: str) -> Callable[[B], B]:
    """Function decorator: register the loss builder of method `name` (a row of config/methods.py METHODS).

    The builder takes the run config and returns the loss object. `prospect.losses` checks at import
    that the registered names are exactly the method table's.
    """

    def deco(builder: B) -> B:
        if name in _METHODS:
            raise RuntimeError(f"method {name!r} registered twice ({_METHODS[name].__module__}, {builder.__module__})")
        _METHODS[name] = builder
        return builder

    return deco


def method_names() -> list[str]:
    return sorted(_METHODS)


def method_builder(name: str) -> Callable[[Any], Any]:
    """The loss builder registered for method `name`; ConfigError naming the known methods otherwise."""
    if name not in _METHODS:
        raise ConfigError(f"method.name: unknown method {name!r}; known: {', '.join(method_names())}")
    return _METHODS[name]


def construct(cls: type, **settings: Any) -> Any:
    """`cls(**settings)`, passing only the settings its __init__ takes (each loss declares its own)."""
    accepted = inspect.signature(cls.__init__).parameters
    return cls(**{k: v for k, v in settings.items() if k in accepted})


def register_unpaired(name: str) -> Callable[[type[L]], type[L]]:
    """Class decorator: register an unpaired loss under `name` (kto.loss_type)."""

    def deco(cls: type[L]) -> type[L]:
        _UNPAIRED[name] = cls
        return cls

    return deco


def register_paired(name: str) -> Callable[[type[L]], type[L]]:
    """Class decorator: register a paired loss under `name` (dpo.loss_type)."""

    def deco(cls: type[L]) -> type[L]:
        _PAIRED[name] = cls
        return cls

    return deco


def unpaired_loss_names() -> list[str]:
    return sorted(_UNPAIRED)


def paired_loss_names() -> list[str]:
    return sorted(_PAIRED)


def unpaired_loss_class(name: str) -> type:
    """The unpaired loss class registered as `name`; ConfigError naming the known ones otherwise."""
    return _lookup(_UNPAIRED, name, "kto.loss_type")


def paired_loss_class(name: str) -> type:
    """The paired loss class registered as `name`; ConfigError naming the known ones otherwise."""
    return _lookup(_PAIRED, name, "dpo.loss_type")


def _lookup(registry: dict[str, type], name: str, field_name: str) -> type:
    if name not in registry:
        raise ConfigError(f"{field_name}: unknown loss type {name!r}; known: {', '.join(sorted(registry))}")
    return registry[name]


def empty() -> Tensor:
    return torch.zeros(0)
