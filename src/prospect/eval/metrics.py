"""Evaluation metrics: pure functions of per-sequence log-probs, plus user metrics by reference.

Notation (docs/methods.md): for a completion y of prompt x, with log-probs summed over the
completion tokens, the implicit reward is `r(x, y) = beta * (log pi(y|x) - log pi_ref(y|x))`.

- reward accuracy (pairs): fraction of pairs with r(x, y_w) > r(x, y_l) (ties count as wrong,
  as TRL's `rewards/accuracies`);
- reward accuracy (unpaired): fraction of (desirable, undesirable) combinations with
  r_desirable > r_undesirable (the ranking AUC; ties count one half);
- margin: mean of r(x, y_w) - r(x, y_l) over pairs (unpaired: mean desirable reward minus
  mean undesirable reward);
- KL estimate to the reference: mean over chosen/desirable sequences of
  log pi(y|x) - log pi_ref(y|x) (a Monte-Carlo estimate of KL(pi || pi_ref) when y ~ pi, here
  on the data's completions, as in TRL's logged `kl`);
- perplexity: exp(-(sum of completion-token log-probs) / (number of completion tokens)).

User metrics are named in `evaluation.metrics` as `pkg.module:function` and called as
`function(prompts=[...], generations=[...], references=[...])` (lists of equal length;
a reference is the chosen/desirable completion or None); they return a number or a dict of
numbers (logged as `<function>/<key>`).
"""

from __future__ import annotations

import importlib
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from prospect.errors import ConfigError

# Names in evaluation.metrics that evaluate_run always computes (kept for the seeds' lists).
BUILTIN_METRICS = frozenset({"reward_accuracy", "accuracy", "margin", "kl", "perplexity", "loss"})


def rewards(policy: Tensor, reference: Tensor, beta: float) -> Tensor:
    """beta * (policy - reference), per sequence."""
    return beta * (policy.double() - reference.double())


def reward_accuracy(chosen_rewards: Tensor, rejected_rewards: Tensor) -> float:
    """Fraction of pairs whose chosen reward is strictly greater than the rejected reward."""
    if chosen_rewards.numel() == 0:
        return float("nan")
    return float((chosen_rewards > rejected_rewards).double().mean())


def ranking_accuracy(desirable_rewards: Tensor, undesirable_rewards: Tensor) -> float:
    """P(r_desirable > r_undesirable) over all combinations (ties count 1/2): the AUC."""
    if desirable_rewards.numel() == 0 or undesirable_rewards.numel() == 0:
        return float("nan")
    d = desirable_rewards.double()[:, None]
    u = undesirable_rewards.double()[None, :]
    return float(((d > u).double() + 0.5 * (d == u).double()).mean())


def mean_margin(chosen_rewards: Tensor, rejected_rewards: Tensor) -> float:
    """mean(chosen) - mean(rejected) (for pairs this equals the mean per-pair margin)."""
    if chosen_rewards.numel() == 0 or rejected_rewards.numel() == 0:
        return float("nan")
    return float(chosen_rewards.double().mean() - rejected_rewards.double().mean())


def kl_estimate(policy: Tensor, reference: Tensor) -> float:
    """mean(policy - reference) log-prob over sequences."""
    if policy.numel() == 0:
        return float("nan")
    return float((policy.double() - reference.double()).mean())


def perplexity(logps: Tensor, lengths: Tensor) -> float:
    """exp(-sum(logps) / sum(lengths)): per-token perplexity over all given completions."""
    n = float(lengths.double().sum())
    if n <= 0:
        return float("nan")
    return float(math.exp(-float(logps.double().sum()) / n))


def is_user_metric(name: str) -> bool:
    return ":" in name


def check_metric_names(names: Sequence[str]) -> None:
    """ConfigError for a name that is neither built in nor a `pkg.module:function` reference."""
    for name in names:
        if name in BUILTIN_METRICS or is_user_metric(name):
            continue
        raise ConfigError(
            f"evaluation.metrics: unknown metric '{name}'; built in: {', '.join(sorted(BUILTIN_METRICS))}; "
            "a metric of your own is named by reference as 'pkg.module:function'"
        )


def resolve_metric(ref: str, search_dirs: Sequence[Path] = ()) -> Callable[..., Any]:
    """The function named by 'pkg.module:function'. If the module is not importable as is,
    `search_dirs` (e.g. the working directory and the config's directory) are tried too."""
    module_name, _, func_name = ref.partition(":")
    if not module_name or not func_name:
        raise ConfigError(f"evaluation.metrics: '{ref}' must look like 'pkg.module:function'")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as first:
        extra = [str(Path(d).resolve()) for d in search_dirs if str(Path(d).resolve()) not in sys.path]
        if not extra or (first.name and not module_name.startswith(first.name)):
            raise ConfigError(f"evaluation.metrics: cannot import module '{module_name}' of '{ref}': {first}") from None
        sys.path[:0] = extra
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            raise ConfigError(f"evaluation.metrics: cannot import module '{module_name}' of '{ref}': {exc}") from None
        finally:
            for d in extra:
                if d in sys.path:
                    sys.path.remove(d)
    func = getattr(module, func_name, None)
    if not callable(func):
        raise ConfigError(f"evaluation.metrics: module '{module_name}' has no function '{func_name}'")
    return func


def run_user_metrics(
    names: Sequence[str],
    prompts: Sequence[str],
    generations: Sequence[str],
    references: Sequence[str | None],
    search_dirs: Sequence[Path] = (),
) -> dict[str, float]:
    """Call every `pkg.module:function` in `names`; returns {name or name/key: float}."""
    out: dict[str, float] = {}
    for ref in names:
        if not is_user_metric(ref):
            continue
        func = resolve_metric(ref, search_dirs)
        label = ref.partition(":")[2]
        value = func(prompts=list(prompts), generations=list(generations), references=list(references))
        if isinstance(value, dict):
            for k, v in value.items():
                out[f"{label}/{k}"] = _number(ref, v)
        else:
            out[label] = _number(ref, value)
    return out


def _number(ref: str, value: Any) -> float:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(
            f"evaluation.metrics: '{ref}' returned {type(value).__name__}, expected a number or a dict of numbers"
        )
    return float(value)
