"""The prospect loss's bounded weighting (kto.weighting_floor): hand-computed weights and
gradients for the collapse case, NaN and +-inf rows, one-class batches and a batch of one.

Shared numbers, g = 0.88, q_min = 0.01, written with the plain formula
ratio(q) = pi_g(q) / q = q^(g-1) / (q^g + (1-q)^g)^(1/g):
  W = ratio(0.01) = 1.7210253 (the bound), R = ratio(0.5) = 2^(2 - g - 1/g) = 0.9887217.
"""

from __future__ import annotations

import math

import pytest
import torch

from prospect.config.schema import RunConfig
from prospect.losses import ProspectLoss, UnpairedLogps, build_loss

D = torch.float64
G = 0.88


def ratio(q: float, g: float = G) -> float:
    return q ** (g - 1) / (q**g + (1 - q) ** g) ** (1 / g)


W, R = ratio(0.01), ratio(0.5)


def sig(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def rows(policy: list[float], label: list[bool]) -> UnpairedLogps:
    return UnpairedLogps(
        policy=torch.tensor(policy, dtype=D, requires_grad=True),
        reference=torch.zeros(len(policy), dtype=D),
        label=torch.tensor(label, dtype=torch.bool),
        z0=torch.zeros((), dtype=D),
    )


def loss_fn(**kw) -> ProspectLoss:
    settings = {"beta": 0.1, "alpha": 1.0, "beta_s": 1.0, "loss_aversion": 1.0, "gamma": G, "use_weighting": True}
    return ProspectLoss(**{**settings, **kw})


def test_shared_numbers():
    assert W == pytest.approx(1.7210253, abs=1e-7)
    assert R == pytest.approx(2 ** (2 - G - 1 / G), abs=1e-12) and R == pytest.approx(0.9887217, abs=1e-7)


def test_collapse_case_is_bounded():
    """Undesirable r = -3000 at beta 0.1: u = 300, q = e^-300, floored to 0.01, raw weight W.
    The other rows (desirable and undesirable, r = 0) have q = 0.5 and raw weight R.
    Normalised: W / m and R / m with m = (W + 2R) / 3 = 1.2328231: [1.3960, 0.8020, 0.8020].
    Gradient of the desirable r = 0 row: d(q w / 3)/dr = -beta q (1 - q) w / 3 = -0.025 * 0.8020 / 3
    = -6.683e-3 (unbounded weights, w(e^-300) ~ e^36, would make it ~1e-17)."""
    loss = loss_fn()
    logps = rows([-3000.0, 0.0, 0.0], [False, True, False])
    out = loss(logps)
    m = (W + 2 * R) / 3
    w = loss.probability_weights(torch.tensor([300.0, 0.0, 0.0], dtype=D))
    assert w.tolist() == pytest.approx([W / m, R / m, R / m], abs=1e-12)
    assert w.tolist() == pytest.approx([1.3960, 0.8020, 0.8020], abs=1e-4)
    (g,) = torch.autograd.grad(out.loss, logps.policy)
    assert g[1].item() == pytest.approx(-0.025 * (R / m) / 3, rel=1e-10)
    assert g[2].item() == pytest.approx(+0.025 * (R / m) / 3, rel=1e-10)
    assert abs(g[1].item()) > 6e-3
    assert out.metrics["prospect/weight_max"] == pytest.approx(W / m, abs=1e-12)


def test_rows_above_the_floor_are_weighted_as_before():
    """q = 0.05 (desirable r = ln 19, beta 1) lies above q_min: ratio(0.05) = 1.3025 at g = 0.88,
    unchanged by the floor; normalised against R: [ratio(0.05), R] / mean."""
    loss = loss_fn(beta=1.0)
    w = loss.probability_weights(torch.tensor([math.log(19.0), 0.0], dtype=D))
    m = (ratio(0.05) + R) / 2
    assert w.tolist() == pytest.approx([ratio(0.05) / m, R / m], abs=1e-12)


def test_nan_row_is_skipped():
    """[NaN desirable, r = 0 desirable, r = 0 undesirable], lambda 2.25: the NaN row's loss is NaN and
    it is left out of the weight mean, so the others keep weight R / R = 1: losses [nan, 0.5, 1.125],
    loss = nanmean = (0.5 + 1.125) / 2 = 0.8125, finite gradients on the finite rows."""
    logps = rows([float("nan"), 0.0, 0.0], [True, True, False])
    out = loss_fn(loss_aversion=2.25)(logps)
    assert math.isnan(out.losses[0].item())
    assert out.losses[1:].tolist() == pytest.approx([0.5, 1.125], abs=1e-12)
    assert out.loss.item() == pytest.approx(0.8125, abs=1e-12)
    assert out.metrics["prospect/skipped_rows"] == 1.0
    (g,) = torch.autograd.grad(out.loss, logps.policy)
    assert torch.isfinite(g[1:]).all()
    assert g[1].item() == pytest.approx(-0.1 * 0.25 / 2, rel=1e-10)


def test_infinite_rows_give_finite_losses():
    """beta 0.1: desirable r = +inf: u = +inf, q = 0 -> loss 0, weight floored (raw W);
    desirable r = -inf: u = -inf, q = 1 -> loss 1, raw weight ratio(1) = 1;
    undesirable r = 0: q = 0.5, raw R. Mean raw weight m = (W + 1 + R) / 3;
    loss = (0 + 1 / m + 0.5 R / m) / 3 = (1 + 0.5 R) / (W + 1 + R) = 0.4028."""
    logps = rows([float("inf"), float("-inf"), 0.0], [True, True, False])
    out = loss_fn()(logps)
    assert torch.isfinite(out.losses).all()
    assert out.loss.item() == pytest.approx((1 + 0.5 * R) / (W + 1 + R), abs=1e-12)
    assert out.loss.item() == pytest.approx(0.4028, abs=1e-4)
    assert out.metrics["prospect/skipped_rows"] == 0.0
    (g,) = torch.autograd.grad(out.loss, logps.policy)
    assert g[2].item() == pytest.approx(0.025 * (R / ((W + 1 + R) / 3)) / 3, rel=1e-10)


def test_all_desirable_and_all_undesirable():
    """beta 0.1, r = [0, 10]: desirable u = [0, 1], q = [0.5, 1 - sigma(1) = 0.2689414];
    undesirable u = [0, -1], q = [0.5, sigma(1) = 0.7310586] and lambda 2.25.
    loss = mean(q_i ratio(q_i)) / mean(ratio(q_i)) (times lambda for undesirable)."""
    for label, qs, lam in ((True, [0.5, 1 - sig(1)], 1.0), (False, [0.5, sig(1)], 2.25)):
        out = loss_fn(loss_aversion=2.25)(rows([0.0, 10.0], [label, label]))
        ws = [ratio(q) for q in qs]
        expected = lam * sum(q * w for q, w in zip(qs, ws)) / sum(ws)
        assert out.loss.item() == pytest.approx(expected, abs=1e-12)
        assert (out.chosen_rewards.numel(), out.rejected_rewards.numel()) == ((2, 0) if label else (0, 2))


def test_batch_of_one():
    """One row: its normalised weight is 1, whatever q (also below the floor): loss = lambda q."""
    for r, label, expected in ((0.0, True, 0.5), (0.0, False, 2.25 * 0.5), (-3000.0, False, 0.0)):
        loss = loss_fn(loss_aversion=2.25)
        out = loss(rows([r], [label]))
        assert out.loss.item() == pytest.approx(expected, abs=1e-12)
        assert loss.probability_weights(torch.tensor([0.1 * abs(r)], dtype=D)).tolist() == [1.0]


def test_empty_batch_does_not_raise():
    out = loss_fn()(rows([], []))
    assert out.losses.numel() == 0 and math.isnan(out.loss.item())
    assert loss_fn().probability_weights(torch.zeros(0, dtype=D)).numel() == 0


def test_weighting_floor_setting():
    """A higher floor bounds harder: q_min = 0.2 gives raw weight ratio(0.2) for the r = -3000 row."""
    loss = build_loss(RunConfig(method="kto", kto={"loss_type": "prospect", "weighting_floor": 0.2}))
    assert isinstance(loss, ProspectLoss) and loss.weighting_floor == 0.2
    w = loss.probability_weights(torch.tensor([300.0, 0.0], dtype=D))
    assert (w[0] / w[1]).item() == pytest.approx(ratio(0.2) / R, rel=1e-12)
    with pytest.raises(ValueError):
        ProspectLoss(weighting_floor=0.0)
