"""Padded compute of a training epoch: transformers' length-grouped order against Prospect's batch plan.

    python bench/bench_order.py            # every profile, 16 / 24 / 128 / 400 rows, KTO and DPO

No model runs: for rows drawn from each length profile (bench/profiles.py, lengths uniform in its
ranges as `make_data` draws them; KTO labels alternate as there), the epoch's batches of 8 are
composed by transformers' `LengthGroupedSampler` (sorted by prompt + longest completion within
megabatches, at least four of them) and by `engine.batch_plan.plan_batches` (Prospect's default),
and each batch's padded compute is counted in the step's layout (`PaddedCost`: prompts once,
B x (P_max + k x S_max); KTO k = 1.5, DPO k = 2). Printed: padded over real token-forwards of
each order (1.00 = no padding) and the ratio stock / plan, the mean over 5 seeds.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

import torch
from transformers.trainer_pt_utils import LengthGroupedSampler

sys.path.insert(0, str(Path(__file__).parent))
from profiles import BATCH, PROFILES  # noqa: E402
from prospect.engine.batch_plan import PaddedCost, plan_batches  # noqa: E402


def shapes_of(profile, n: int, seed: int, paired: bool) -> list[tuple[int, int]]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        prompt, completion = profile.ranges(i)
        p = rng.randint(*prompt)
        suffix = max(rng.randint(*completion) + 1 for _ in range(2 if paired else 1))  # + EOS
        out.append((p, suffix))
    return out


def stock_batches(shapes, seed: int) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    flat = list(LengthGroupedSampler(BATCH, lengths=[p + s for p, s in shapes], generator=g))
    return [flat[i : i + BATCH] for i in range(0, len(flat), BATCH)]


def padded(batches, shapes, cost: PaddedCost) -> float:
    return sum(cost.batch([shapes[i] for i in b]) for b in batches)


def main() -> None:
    print(f"{'method':6s} {'profile':16s} {'rows':>5s} {'stock':>7s} {'plan':>7s} {'stock/plan':>10s}")
    for method, k, paired in (("kto", 1.5, False), ("dpo", 2.0, True)):
        cost = PaddedCost(suffix_weight=k, shared_prompt=True)
        for name, profile in PROFILES.items():
            for n in (16, 24, 128, 400):
                stock = plan = real = 0.0
                for seed in range(5):
                    shapes = shapes_of(profile, n, 1000 + seed, paired)
                    groups = None if paired else [i % 2 == 0 for i in range(n)]
                    real += sum(cost.row(s) for s in shapes)
                    stock += padded(stock_batches(shapes, seed), shapes, cost)
                    plan += padded(plan_batches(shapes, BATCH, seed, cost, groups), shapes, cost)
                print(f"{method:6s} {name:16s} {n:5d} {stock / real:7.3f} {plan / real:7.3f} {stock / plan:9.3f}x")


if __name__ == "__main__":
    main()
