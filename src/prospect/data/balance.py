"""Label balance for unpaired (KTO) data: weights by the KTO rule, or resampling.

The KTO paper's rule (Ethayarajh et al. 2024, §4; TRL's KTOTrainer docs): choose the
desirable and undesirable weights lambda_D, lambda_U so that

    1 <= lambda_D * n_D / (lambda_U * n_U) <= 4/3,

keeping the majority label's weight at 1.0 and upweighting the minority.

Strategies (`data.balance_strategy`; `data.balance_labels: true` is seed 001's downsampling):
- `auto` (default): keep every row; training weights the minority label by the rule (unless
  `kto.desirable_weight` / `undesirable_weight` are set to other numbers) and the report says so;
- `downsample`: keep int(min * (1 + label_imbalance_tolerance)) rows of the majority label
  (a seeded sample, file order kept), all rows of the minority;
- `upsample`: repeat minority rows until both labels have the majority's count (whole copies
  first, then a seeded sample for the remainder);
- `none`: keep every row, no weights suggested beyond the rule's numbers.
"""

from __future__ import annotations

import random
from typing import Any

from prospect.data.records import UnpairedRecord
from prospect.data.weights import auto_kto_weights as rule_weights


def auto_kto_weights(n_d: int, n_u: int) -> tuple[float, float]:
    """(desirable_weight, undesirable_weight) by the rule (`prospect.data.weights.auto_kto_weights`);
    (1.0, 1.0) when a label is absent, where the report has nothing to suggest."""
    if n_d <= 0 or n_u <= 0:
        return 1.0, 1.0
    return rule_weights(n_d, n_u)[:2]


def weights_dict(n_d: int, n_u: int) -> dict[str, float]:
    """auto_kto_weights as the report's {'desirable_weight', 'undesirable_weight'} (rounded to 4 places)."""
    w_d, w_u = auto_kto_weights(n_d, n_u)
    return {"desirable_weight": round(w_d, 4), "undesirable_weight": round(w_u, 4)}


def effective_strategy(cfg: Any) -> str:
    """The balance strategy in force: seed 001's balance_labels=true means downsample."""
    return "downsample" if cfg.balance_labels else cfg.balance_strategy


def balance_unpaired(
    records: list[UnpairedRecord], *, strategy: str, tolerance: float = 0.1, seed: int = 42
) -> tuple[list[UnpairedRecord], dict[str, Any]]:
    """Resample `records` by `strategy` (see module doc); returns (records, account)."""
    desirable = [r for r in records if r.label]
    undesirable = [r for r in records if not r.label]
    before = {"desirable": len(desirable), "undesirable": len(undesirable)}
    info: dict[str, Any] = {"strategy": strategy, "before": before}
    rng = random.Random(seed)
    out = records
    if strategy in ("downsample", "upsample") and (not desirable or not undesirable):
        info["note"] = "one label is absent: nothing to balance"
    elif strategy == "downsample":
        target = int(min(len(desirable), len(undesirable)) * (1 + tolerance))
        info["target"] = target
        keep: set[int] = set()
        for group in (desirable, undesirable):
            if len(group) > target:
                keep.update(id(r) for r in rng.sample(group, target))
            else:
                keep.update(id(r) for r in group)
        out = [r for r in records if id(r) in keep]
    elif strategy == "upsample":
        minority, majority = (desirable, undesirable) if len(desirable) < len(undesirable) else (undesirable, desirable)
        copies, rest = divmod(len(majority) - len(minority), len(minority))
        info["target"] = len(majority)
        out = records + minority * copies + rng.sample(minority, rest)
    n_d = sum(r.label for r in out)
    info["after"] = {"desirable": n_d, "undesirable": len(out) - n_d}
    info["dropped"] = max(0, len(records) - len(out))
    info["added"] = max(0, len(out) - len(records))
    return out, info
