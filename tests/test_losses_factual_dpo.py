"""Factual-DPO's margin scale (method.margin_scale) and the both-non-factual rule
(method.both_nonfactual): hand-worked numbers, the config path and the data report.

One pair, as in test_losses_dpo.py: r_w = 10, r_l = 0, so h = 10 and beta h = 1 at beta 0.1.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from prospect.config.schema import RunConfig
from prospect.data.convert import reorient_factual_pairs
from prospect.data.pipeline import load_records
from prospect.data.records import PairedRecord
from prospect.losses import FactualDPOLoss, PairedLogps, build_loss

D = torch.float64


def pairs_logps(h_w: list[int], h_l: list[int]) -> PairedLogps:
    n = len(h_w)
    return PairedLogps(
        torch.full((n,), -10.0, dtype=D),
        torch.full((n,), -20.0, dtype=D),
        torch.full((n,), -20.0, dtype=D),
        torch.full((n,), -20.0, dtype=D),
        h_w=torch.tensor(h_w),
        h_l=torch.tensor(h_l),
    )


def test_margin_scale_beta_is_the_default_and_scales_delta_by_beta():
    """beta form: z = beta (h - Delta (h_l - h_w)). beta 0.1, h 10, Delta 10:
    (0, 1): z = 0.1 (10 - 10) = 0, L = log 2 = 0.6931472;
    (0, 0), (1, 1): z = 1, L = log(1 + e^-1) = 0.3132617."""
    loss = FactualDPOLoss(beta=0.1, delta=10.0)
    assert loss.margin_scale == "beta"
    out = loss(pairs_logps([0, 0, 1], [1, 0, 1]))
    assert out.losses.tolist() == pytest.approx([math.log(2), 0.3132617, 0.3132617], abs=1e-7)


def test_margin_scale_none_is_the_safedpo_form():
    """none form: z = beta h - Delta (h_l - h_w). beta 0.1, h 10, Delta 10, (0, 1):
    z = 1 - 10 = -9, L = -log sigma(-9) = 9 + log(1 + e^-9) = 9.0001234."""
    out = FactualDPOLoss(beta=0.1, delta=10.0, margin_scale="none")(pairs_logps([0], [1]))
    assert out.loss.item() == pytest.approx(9 + math.log1p(math.exp(-9)), abs=1e-9)
    assert out.loss.item() == pytest.approx(9.0001234, abs=1e-7)


def test_beta_form_does_not_saturate_on_the_seed_grid():
    """Seed 004's grid at beta 0.1: in the none form Delta 10 and 50 give losses 9.0001 and 49.0
    whose gradients dL/dh = beta (1 - sigma(z)) are both ~beta (saturated); in the beta form the
    gradient at h = 10 is 0.1 sigma(0) = 0.05 at Delta 10 and 0.1 sigma(4) = 0.0982 at Delta 50."""
    grads = {}
    for delta in (10.0, 50.0):
        policy = torch.tensor([-10.0], dtype=D, requires_grad=True)
        logps = PairedLogps(
            policy, torch.tensor([-20.0], dtype=D), torch.tensor([-20.0], dtype=D), torch.tensor([-20.0], dtype=D),
            h_w=torch.tensor([0]), h_l=torch.tensor([1]),
        )  # fmt: skip
        FactualDPOLoss(beta=0.1, delta=delta)(logps).loss.backward()
        grads[delta] = -policy.grad.item()
    assert grads[10.0] == pytest.approx(0.05, abs=1e-12)
    assert grads[50.0] == pytest.approx(0.1 / (1 + math.exp(-4)), abs=1e-12)


def test_config_reaches_the_loss():
    cfg = RunConfig(method={"name": "factual_dpo", "delta": 2, "margin_scale": "none"})
    loss = build_loss(cfg)
    assert isinstance(loss, FactualDPOLoss) and loss.margin_scale == "none" and loss.delta == 2
    assert build_loss(RunConfig(method={"name": "factual_dpo"})).margin_scale == "beta"
    assert RunConfig().method.both_nonfactual == "keep"
    with pytest.raises(ValueError):
        RunConfig(method={"name": "factual_dpo", "margin_scale": "paper"})


def _pair(i: int, h_w: int, h_l: int) -> PairedRecord:
    return PairedRecord(prompt=f"q{i}", chosen=f"c{i}", rejected=f"r{i}", h_w=h_w, h_l=h_l)


def test_reorient_keep_and_drop_both_nonfactual():
    """(1, 0) is swapped in both modes; (1, 1) is kept by keep and dropped by drop; (0, 1), (0, 0) stay."""
    pairs = [_pair(0, 1, 0), _pair(1, 1, 1), _pair(2, 0, 1), _pair(3, 0, 0)]
    kept, swapped = reorient_factual_pairs(pairs)
    assert swapped == 1 and [p.prompt for p in kept] == ["q0", "q1", "q2", "q3"]
    assert (kept[0].chosen, kept[0].h_w, kept[0].h_l) == ("r0", 0, 1)
    dropped, swapped = reorient_factual_pairs(pairs, "drop")
    assert swapped == 1 and [p.prompt for p in dropped] == ["q0", "q2", "q3"]
    with pytest.raises(ValueError):
        reorient_factual_pairs(pairs, "maybe")


def test_dropped_pairs_are_counted_in_the_data_report(tmp_path):
    rows = [{"prompt": f"q{i}", "chosen": f"c{i}", "rejected": f"r{i}", "h_w": hw, "h_l": hl}
            for i, (hw, hl) in enumerate([(1, 1), (1, 1), (0, 1), (1, 0), (0, 0), (1, 1)])]  # fmt: skip
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    cfg = RunConfig(method={"name": "factual_dpo"}, data={"train_file": str(path), "validation_split_percentage": 0})
    for mode, train_pairs in (("keep", 6), ("drop", 3)):
        data = load_records(cfg.data, kind="paired", method="factual_dpo", delta_reorient=True, both_nonfactual=mode)
        report = data.report.to_dict()
        assert len(data.train) == train_pairs
        assert report["both_nonfactual"] == {"setting": mode, "dropped": {"train": 6 - train_pairs, "validation": 0}}
        assert report["reoriented"] == 1
        assert not any(p.h_w == 1 and p.h_l == 1 for p in data.train) or mode == "keep"
