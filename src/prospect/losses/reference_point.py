"""Estimators of KTO's reference point z0 (Ethayarajh et al. 2024, Eq. 7 and Sec. 4.1).

KTO compares each example's implied reward `r = log pi(y|x) - log pi_ref(y|x)` with a
reference point `z0 = KL(pi(y'|x) || pi_ref(y'|x))`. The paper (and TRL) estimate it from
*mismatched* pairs: prompt x_i with a completion y_j of another row of the same batch,

    z0 = max(0, mean_j [log pi(y_j|x_i) - log pi_ref(y_j|x_i)]),

detached (no gradient flows through z0). The estimators here only see those two vectors of
mismatched log-probs (`kl_policy`, `kl_reference`); which rows are paired, and over which
rows (one micro-batch, a whole accumulation window), is the engine's business.

`reduce` is a hook for the cross-process mean (e.g. `accelerator.gather(x).mean()`); it is
applied to the local scalar before clamping, matching TRL 1.16's KTOTrainer:

    kl = (KL_logps - ref_KL_logps).mean().detach()
    kl = self.accelerator.gather_for_metrics(kl).mean().clamp(min=0)

i.e. local mean -> mean over processes -> clamp at 0.

Estimators are registered by name, matching `KTOSpecificConfig.reference_point`:
"batch_mismatch", "window_mismatch", "running", "zero".
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import torch
from torch import Tensor

Reduce = Callable[[Tensor], Tensor]
E = TypeVar("E", bound="ReferencePoint")
_ESTIMATORS: dict[str, type[ReferencePoint]] = {}


def _identity(x: Tensor) -> Tensor:
    return x


def register_reference_point(name: str) -> Callable[[type[E]], type[E]]:
    """Class decorator: register a z0 estimator under `name` (kto.reference_point)."""

    def deco(cls: type[E]) -> type[E]:
        cls.name = name
        _ESTIMATORS[name] = cls
        return cls

    return deco


def reference_point_names() -> list[str]:
    return sorted(_ESTIMATORS)


def build_reference_point(name: str, reduce: Reduce | None = None, **kwargs: Any) -> ReferencePoint:
    """The estimator registered as `name`, e.g. `build_reference_point("batch_mismatch")`.

    Raises ConfigError (naming the known estimators) for an unknown name.
    """
    if name not in _ESTIMATORS:
        from prospect.errors import ConfigError

        raise ConfigError(
            f"kto.reference_point: unknown estimator {name!r}; known: {', '.join(reference_point_names())}"
        )
    return _ESTIMATORS[name](reduce=reduce, **kwargs)


def mismatched_indices(n: int, device: torch.device | None = None) -> Tensor:
    """TRL's pairing of a batch of n rows: prompt i gets completion (i - 1) mod n.

    Returns the LongTensor `[n-1, 0, 1, ..., n-2]`, so the mismatched pairs are
    (x_1, y_n), (x_2, y_1), ..., (x_n, y_{n-1}) — TRL 1.16's KTOTrainer builds them with
    `KL_completion_ids = [completion_ids[-1]] + completion_ids[:-1]` per batch.
    With n = 1 the only "mismatched" pair is the row itself (index [0]); its estimate is
    the row's own reward, which is why TRL refuses a per-device batch of 1. Use
    "window_mismatch" (pairs across the accumulation window) or "running" there.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    return torch.arange(n, device=device).roll(1)


class ReferencePoint:
    """Base of z0 estimators: `estimate(kl_policy, kl_reference) -> Tensor` (detached 0-d).

    needs_mismatched: whether the engine must compute the mismatched-pair log-probs at all
      (False for "zero", which lets it skip that forward pass).
    min_rows: rows of mismatched pairs needed for an estimate that is not a row's own reward
      (2 for the in-batch estimators; 1 for "running", which averages over steps, and "zero").
    """

    name: str = "reference_point"
    needs_mismatched: bool = True
    min_rows: int = 1

    def __init__(self, reduce: Reduce | None = None) -> None:
        self.reduce: Reduce = reduce or _identity

    def batch_mean(self, kl_policy: Tensor, kl_reference: Tensor) -> Tensor:
        """mean(kl_policy - kl_reference) over the local rows, detached, then `reduce`d across processes."""
        local = (kl_policy.detach() - kl_reference.detach().to(kl_policy.dtype)).mean()
        return self.reduce(local)

    def estimate(self, kl_policy: Tensor, kl_reference: Tensor) -> Tensor:
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        """State to checkpoint (empty for stateless estimators)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


@register_reference_point("batch_mismatch")
class BatchMismatch(ReferencePoint):
    """TRL's estimator: z0 = clamp(reduce(mean_i(kl_policy_i - kl_reference_i)), min=0).

    Fed the mismatched pairs of one micro-batch, this is exactly TRL 1.16's `kl`.
    """

    min_rows = 2

    def estimate(self, kl_policy: Tensor, kl_reference: Tensor) -> Tensor:
        return self.batch_mean(kl_policy, kl_reference).clamp(min=0)


@register_reference_point("window_mismatch")
class WindowMismatch(BatchMismatch):
    """Same formula as BatchMismatch; the engine feeds it the mismatched pairs of every row in the
    gradient-accumulation window, so z0 is defined at any per-device batch size (even 1)."""


@register_reference_point("running")
class RunningMean(ReferencePoint):
    """Exponential moving average of the batch estimate, for small batches.

        m_t = decay * m_{t-1} + (1 - decay) * reduce(mean(kl_policy - kl_reference)),  m_1 = first batch mean
        z0_t = max(0, m_t)

    The average is kept before clamping (clamping each batch first would bias z0 upwards),
    so z0 estimates max(0, E[KL]) with variance cut by about (1 - decay) / (1 + decay).
    `estimate(..., update=False)` reads the current value without moving it (evaluation);
    with no batch seen yet it falls back to that batch's own estimate. Checkpoint the state
    with `state_dict()` / `load_state_dict()` so a resumed run continues the same average.
    """

    def __init__(self, reduce: Reduce | None = None, decay: float = 0.9) -> None:
        super().__init__(reduce)
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must lie in [0, 1), got {decay}")
        self.decay = decay
        self.mean: float | None = None
        self.count = 0

    def estimate(self, kl_policy: Tensor, kl_reference: Tensor, *, update: bool = True) -> Tensor:
        batch = self.batch_mean(kl_policy, kl_reference)
        if self.mean is None:
            value = batch
        else:
            value = self.decay * self.mean + (1.0 - self.decay) * batch
        if update:
            self.mean = float(value)
            self.count += 1
        elif self.mean is not None:
            value = torch.full_like(batch, self.mean)
        return value.clamp(min=0)

    def state_dict(self) -> dict[str, Any]:
        return {"mean": self.mean, "count": self.count, "decay": self.decay}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.mean = state.get("mean")
        self.count = int(state.get("count", 0))

    def __repr__(self) -> str:
        return f"RunningMean(decay={self.decay}, mean={self.mean}, count={self.count})"


@register_reference_point("zero")
class Zero(ReferencePoint):
    """z0 = 0: no mismatched pass (KTO without the KL term)."""

    needs_mismatched = False

    def estimate(self, kl_policy: Tensor, kl_reference: Tensor) -> Tensor:
        return torch.zeros((), dtype=kl_policy.dtype, device=kl_policy.device)
