"""Unpaired losses (kto, apo_zero_unpaired, prospect), the z0 estimators, KTO class weights and
the dpo_kto hybrid: hand-worked numbers, gradient directions derived from the formulas, and
agreement with TRL 1.16's own `KTOTrainer._compute_loss` on the same tensors.

Notation: r = policy - reference (summed log-probs), sigma the logistic function.
Handy values: sigma(1) = 0.7310586, 1 - sigma(1) = 0.2689414, 1 - sigma(2) = 0.1192029,
1 - sigma(0.5) = 0.3775407, -log sigma(1) = log(1 + e^-1) = 0.3132617.
"""

from __future__ import annotations

import math
import os
import types
import typing
from collections import defaultdict
from types import SimpleNamespace

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch

from prospect.config.schema import KTOSpecificConfig, RunConfig
from prospect.data.weights import auto_kto_weights, resolve_kto_weights
from prospect.errors import ConfigError, KTOLabelError
from prospect.losses import (
    APOZeroUnpairedLoss,
    BatchMismatch,
    DPOKTOLoss,
    KTOLoss,
    PairedLogps,
    ProspectLoss,
    RunningMean,
    UnpairedLogps,
    WindowMismatch,
    Zero,
    build_loss,
    build_reference_point,
    build_unpaired_loss,
    mismatched_indices,
    reference_point_names,
    unpaired_loss_names,
)
from prospect.losses.dpo import SigmoidLoss

D = torch.float64


def sig(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def rows(policy, reference, label, z0=0.0, weight=None) -> UnpairedLogps:
    return UnpairedLogps(
        policy=torch.tensor(policy, dtype=D, requires_grad=True),
        reference=torch.tensor(reference, dtype=D),
        label=torch.tensor(label, dtype=torch.bool),
        z0=torch.as_tensor(z0, dtype=D),
        weight=None if weight is None else torch.tensor(weight, dtype=D),
    )


def per_example_grad(loss, logps: UnpairedLogps) -> torch.Tensor:
    """d losses_i / d policy_i (each example's loss depends on its own policy log-prob only)."""
    out = loss(logps)
    (g,) = torch.autograd.grad(out.losses.sum(), logps.policy)
    return g


# --------------------------------------------------------------------------- TRL oracle
class _Accelerator:
    device = torch.device("cpu")

    @staticmethod
    def gather(x):
        return x

    gather_for_metrics = gather


class _FakeLM:
    """Stands in for the model: returns prescribed per-token log-probs, chosen by sequence width."""

    training = True

    def __init__(self, by_width: dict[int, torch.Tensor]):
        self.by_width = by_width

    def __call__(self, input_ids, **kwargs):
        lp = self.by_width[input_ids.shape[1]]
        zeros = torch.zeros_like(lp)
        return SimpleNamespace(log_probs=lp, entropy=zeros, mean_logits=zeros, is_top1=zeros.bool())


def trl_kto(
    loss_type, beta, desirable_weight, undesirable_weight, per_token, mask, label, ref, kl_per_token, kl_mask, ref_kl
):
    """TRL 1.16's KTOTrainer._compute_loss on given per-token log-probs (reference precomputed)."""
    from trl.trainer.kto_trainer import KTOTrainer

    trainer = object.__new__(KTOTrainer)
    model = _FakeLM({mask.shape[1]: per_token, kl_mask.shape[1]: kl_per_token})
    for k, v in dict(
        model=model,
        accelerator=_Accelerator(),
        calculate_KL=loss_type != "apo_zero_unpaired",
        aux_loss_enabled=False,
        precompute_ref_logps=True,
        loss_type=loss_type,
        beta=beta,
        desirable_weight=desirable_weight,
        undesirable_weight=undesirable_weight,
        _metrics={"train": defaultdict(list), "eval": defaultdict(list)},
        _total_train_tokens=0,
        _tp_size=1,
    ).items():
        setattr(trainer, k, v)
    b = mask.shape[0]
    inputs = dict(
        input_ids=torch.zeros(mask.shape, dtype=torch.long),
        attention_mask=torch.ones_like(mask),
        completion_mask=mask,
        label=label,
        ref_logps=ref,
        KL_input_ids=torch.zeros(kl_mask.shape, dtype=torch.long),
        KL_attention_mask=torch.ones_like(kl_mask),
        KL_completion_mask=kl_mask,
        ref_KL_logps=ref_kl,
    )
    assert inputs["input_ids"].shape[0] == b
    loss = trainer._compute_loss(model, inputs, False)
    return loss, trainer._metrics["train"]


def random_batch(seed: int, b: int = 8, t: int = 7, t_kl: int = 9, kl_offset: float = 0.0, all_desirable=False):
    """Per-token log-probs (zero outside the completion), masks, labels and reference sums."""
    g = torch.Generator().manual_seed(seed)

    def masked(width):
        lengths = torch.randint(1, width, (b,), generator=g)
        mask = (torch.arange(width)[None, :] >= 1) & (torch.arange(width)[None, :] <= lengths[:, None])
        mask = mask.long()
        per_token = -2 * torch.rand(b, width - 1, dtype=D, generator=g) * mask[:, 1:]
        return per_token, mask

    per_token, mask = masked(t)
    kl_per_token, kl_mask = masked(t_kl)
    label = torch.ones(b, dtype=torch.bool) if all_desirable else torch.rand(b, generator=g) < 0.5
    if not all_desirable:
        label[0], label[1] = True, False  # both classes present
    ref = per_token.sum(1) + 3 * torch.randn(b, dtype=D, generator=g)
    ref_kl = kl_per_token.sum(1) + 2 * torch.randn(b, dtype=D, generator=g) - kl_offset
    return per_token, mask, label, ref, kl_per_token, kl_mask, ref_kl


# --------------------------------------------------------------------------- kto: hand numbers
def test_kto_hand_computed():
    """beta = 0.5, lambda_D = 1, lambda_U = 2. Mismatched log-probs: policy [-3, -5], reference [-4, -6]
    -> z0 = max(0, mean(1, 1)) = 1.
    Desirable row: policy -7, reference -10, r = 3: 1 - sigma(0.5 (3 - 1)) = 1 - sigma(1) = 0.2689414.
    Undesirable row: policy -9, reference -8, r = -1: 2 * (1 - sigma(0.5 (1 + 1))) = 0.5378828.
    loss = mean = 0.4034121. Rewards: chosen 0.5 * 3 = 1.5, rejected 0.5 * -1 = -0.5. kl metric 1.
    """
    z0 = BatchMismatch().estimate(torch.tensor([-3.0, -5.0], dtype=D), torch.tensor([-4.0, -6.0], dtype=D))
    assert float(z0) == 1.0
    out = KTOLoss(beta=0.5, desirable_weight=1.0, undesirable_weight=2.0)(rows([-7, -9], [-10, -8], [True, False], z0))
    assert out.losses.tolist() == pytest.approx([0.2689414, 0.5378828], abs=1e-7)
    assert out.loss.item() == pytest.approx(0.4034121, abs=1e-7)
    assert out.chosen_rewards.tolist() == [1.5]
    assert out.rejected_rewards.tolist() == [-0.5]
    assert out.metrics["kl"] == 1.0


def test_kto_data_weights_multiply_losses():
    """Same rows as above with data weights [2, 0.5]: losses [2 * 0.2689414, 0.5 * 0.5378828]
    = [0.5378828, 0.2689414]."""
    out = KTOLoss(beta=0.5, undesirable_weight=2.0)(rows([-7, -9], [-10, -8], [True, False], 1.0, weight=[2, 0.5]))
    assert out.losses.tolist() == pytest.approx([0.5378828, 0.2689414], abs=1e-7)


def test_apo_zero_unpaired_hand_computed():
    """beta = 0.5, z0 = 5 (ignored). Desirable r = 2: 1 - sigma(1) = 0.2689414;
    undesirable r = 2: sigma(1) = 0.7310586."""
    out = APOZeroUnpairedLoss(beta=0.5)(rows([-8, -8], [-10, -10], [True, False], 5.0))
    assert out.losses.tolist() == pytest.approx([0.2689414, 0.7310586], abs=1e-7)
    assert APOZeroUnpairedLoss.needs_reference_point is False


def test_unpaired_registry():
    assert unpaired_loss_names() == ["apo_zero_unpaired", "kto", "prospect"]


# --------------------------------------------------------------------------- kto vs TRL
@pytest.mark.parametrize(
    "loss_type,beta,dw,uw,kl_offset,seed,all_desirable",
    [
        ("kto", 0.1, 1.0, 1.0, 0.0, 0, False),
        ("kto", 0.5, 1.0, 2.94, 3.0, 1, False),  # z0 > 0
        ("kto", 0.2, 1.33, 1.0, -30.0, 2, False),  # mean mismatch negative: z0 clamped to 0
        ("kto", 0.3, 1.0, 1.5, 2.0, 3, True),  # no undesirable rows in this batch
        ("apo_zero_unpaired", 0.1, 1.0, 1.0, 0.0, 4, False),
        ("apo_zero_unpaired", 0.7, 2.0, 0.5, 0.0, 5, False),
    ],
)
def test_unpaired_matches_trl(loss_type, beta, dw, uw, kl_offset, seed, all_desirable):
    per_token, mask, label, ref, kl_per_token, kl_mask, ref_kl = random_batch(
        seed, kl_offset=kl_offset, all_desirable=all_desirable
    )
    trl_leaf = per_token.clone().requires_grad_()
    trl_loss, trl_metrics = trl_kto(loss_type, beta, dw, uw, trl_leaf, mask, label, ref, kl_per_token, kl_mask, ref_kl)
    trl_loss.backward()

    leaf = per_token.clone().requires_grad_()
    loss = build_unpaired_loss(
        KTOSpecificConfig(loss_type=loss_type, beta=beta, desirable_weight=dw, undesirable_weight=uw)
    )
    z0 = (
        BatchMismatch().estimate(kl_per_token.sum(1), ref_kl)
        if loss.needs_reference_point
        else torch.zeros((), dtype=D)
    )
    out = loss(UnpairedLogps(policy=leaf.sum(1), reference=ref, label=label, z0=z0))
    out.loss.backward()

    assert out.loss.item() == pytest.approx(trl_loss.item(), abs=1e-10)
    torch.testing.assert_close(leaf.grad, trl_leaf.grad, atol=1e-10, rtol=0)
    assert out.metrics["kl"] == pytest.approx(trl_metrics["kl"][-1], abs=1e-10)
    assert float(out.chosen_rewards.mean()) == pytest.approx(trl_metrics["rewards/chosen"][-1], abs=1e-10)
    if not all_desirable:
        assert float(out.rejected_rewards.mean()) == pytest.approx(trl_metrics["rewards/rejected"][-1], abs=1e-10)
    if kl_offset < 0:
        assert out.metrics["kl"] == 0.0


# --------------------------------------------------------------------------- prospect
def test_prospect_equals_kto_at_unit_parameters():
    """alpha = beta_s = lambda = 1, no weighting: (1 - sigma(u))^1 with u = beta (r - z0) is KTO's loss."""
    per_token, mask, label, ref, *_ = random_batch(7)
    logps = UnpairedLogps(
        policy=per_token.sum(1),
        reference=ref,
        label=label,
        z0=torch.tensor(0.8, dtype=D),
        weight=torch.rand(8, dtype=D) + 0.5,
    )
    kwargs = dict(beta=0.3, desirable_weight=1.2, undesirable_weight=0.9)
    kto = KTOLoss(**kwargs)(logps)
    pro = ProspectLoss(alpha=1.0, beta_s=1.0, loss_aversion=1.0, use_weighting=False, gamma=0.5, **kwargs)(logps)
    torch.testing.assert_close(pro.losses, kto.losses, atol=1e-14, rtol=1e-12)
    assert torch.equal(pro.chosen_rewards, kto.chosen_rewards) and torch.equal(
        pro.rejected_rewards, kto.rejected_rewards
    )


def test_prospect_hand_computed():
    """beta = 0.5, beta_s = 2, alpha = 0.5, lambda = 2, z0 = 1, no weighting.
    Desirable r = 3: u = 2 * 0.5 * (3 - 1) = 2, q = 1 - sigma(2) = 0.1192029, L = sqrt(q) = 0.3452578.
    Undesirable r = -1: u = 2 * 0.5 * (1 - (-1)) = 2, same q, L = 2 * 0.3452578 = 0.6905155.
    """
    loss = ProspectLoss(beta=0.5, beta_s=2.0, alpha=0.5, loss_aversion=2.0, use_weighting=False)
    out = loss(rows([-7, -9], [-10, -8], [True, False], 1.0))
    assert out.losses.tolist() == pytest.approx([0.3452578, 0.6905155], abs=1e-7)
    assert out.loss.item() == pytest.approx((0.3452578 + 0.6905155) / 2, abs=1e-7)


LN19 = math.log(19.0)  # sigma(-ln 19) = 1/20: u = ln 19 gives q = 0.05


def test_prospect_weighting_hand_computed():
    """beta = beta_s = alpha = lambda = 1, z0 = 0, g = 0.5, T = 1.
    Desirable r = ln 19: u = ln 19, q = 0.05. Undesirable r = 0: u = 0, q = 0.5.
    w(q) = pi_g(q)/q = q^(g-1) / (q^g + (1-q)^g)^(1/g):
      w(0.05) = 0.05^-0.5 / (sqrt(0.05) + sqrt(0.95))^2 = 4.472136 / 1.198288^2 = 3.114540
      w(0.5)  = 0.5^-0.5 / (2 sqrt(0.5))^2 = 1.414214 / 2 = 0.707107
    mean 1.910823 -> normalised weights [1.629947, 0.370053] (mean 1).
    Losses: [0.05 * 1.629947, 0.5 * 0.370053] = [0.0814973, 0.1850267].
    """
    loss = ProspectLoss(beta=1.0, beta_s=1.0, alpha=1.0, loss_aversion=1.0, gamma=0.5, use_weighting=True)
    out = loss(rows([LN19, 0.0], [0.0, 0.0], [True, False], 0.0))
    assert out.losses.tolist() == pytest.approx([0.0814973, 0.1850267], abs=1e-7)
    w = loss.probability_weights(torch.tensor([LN19, 0.0], dtype=D))
    assert w.tolist() == pytest.approx([1.629947, 0.370053], abs=1e-6)
    assert out.metrics["prospect/weight_max"] == pytest.approx(1.629947, abs=1e-6)


def test_prospect_gamma_one_is_no_weighting():
    """g = 1: pi_1(q) = q, so every weight is 1 and the loss is the unweighted one."""
    logps = rows([LN19, 0.0, -2.0], [0.0, 0.0, 1.0], [True, False, False], 0.3)
    a = ProspectLoss(gamma=1.0, use_weighting=True, alpha=0.7, loss_aversion=2.25)(logps)
    b = ProspectLoss(gamma=1.0, use_weighting=False, alpha=0.7, loss_aversion=2.25)(logps)
    torch.testing.assert_close(a.losses, b.losses, atol=1e-14, rtol=1e-12)


def test_prospect_gradient_signs():
    """dL/dr = -c k alpha q^alpha (1-q) for desirable rows (raising pi(y|x) lowers the loss) and
    +c k alpha q^alpha (1-q) for undesirable rows."""
    g = per_example_grad(
        ProspectLoss(alpha=0.6, beta_s=1.5, use_weighting=True),
        rows([1.0, -1.0, 2.0, 0.0], [0.0, 0.0, 0.0, 0.0], [True, True, False, False], 0.2),
    )
    assert (g[:2] < 0).all() and (g[2:] > 0).all()


def test_prospect_loss_aversion_scales_undesirable_gradient():
    """No weighting: the undesirable loss is lambda * q^alpha, the desirable one has no lambda, so going from
    lambda = 1 to 2.25 multiplies the undesirable gradient by exactly 2.25 and leaves the desirable one."""
    logps = rows([0.5, 0.5], [0.0, 0.0], [True, False], 0.0)
    g1 = per_example_grad(ProspectLoss(loss_aversion=1.0, use_weighting=False), logps)
    g2 = per_example_grad(ProspectLoss(loss_aversion=2.25, use_weighting=False), logps)
    assert float(g2[0]) == pytest.approx(float(g1[0]), rel=1e-12)
    assert float(g2[1] / g1[1]) == pytest.approx(2.25, rel=1e-12)
    assert abs(float(g2[1])) > abs(float(g1[1]))


def test_prospect_alpha_below_one_moves_gradient_to_well_fit_examples():
    """beta = beta_s = 1, z0 = 0. Relative to alpha = 1 the gradient is multiplied by alpha q^(alpha-1).
    alpha = 0.5: desirable r = ln 19 (q = 0.05): 0.5 / sqrt(0.05) = 2.236068 (> 1, larger);
    undesirable r = ln 9 (u = -ln 9, q = sigma(ln 9) = 0.9): 0.5 / sqrt(0.9) = 0.527046 (< 1, smaller).
    The loss itself grows: q^0.5 > q for 0 < q < 1."""
    logps = rows([LN19, math.log(9.0)], [0.0, 0.0], [True, False], 0.0)
    plain = ProspectLoss(beta=1.0, alpha=1.0, loss_aversion=1.0, use_weighting=False)
    concave = ProspectLoss(beta=1.0, alpha=0.5, loss_aversion=1.0, use_weighting=False)
    ratio = per_example_grad(concave, logps) / per_example_grad(plain, logps)
    assert ratio.tolist() == pytest.approx([2.236068, 0.527046], abs=1e-6)
    assert (concave(logps).losses > plain(logps).losses).all()


def test_prospect_beta_s_sharpens():
    """|dL/dr| = k q (1-q) with k = beta_s beta (alpha = 1). At r = z0, q = 1/2: |g| = k / 4, so beta_s = 2
    doubles it (0.25 -> 0.5 with beta = 1). Far on the right side (desirable r - z0 = 10):
    beta_s = 1: sigma(-10) sigma(10) = 4.54e-5; beta_s = 2: 2 sigma(-20) sigma(20) = 4.1e-9, smaller."""
    logps = rows([0.0, 10.0], [0.0, 0.0], [True, True], 0.0)
    g1 = per_example_grad(ProspectLoss(beta=1.0, beta_s=1.0, use_weighting=False), logps).abs()
    g2 = per_example_grad(ProspectLoss(beta=1.0, beta_s=2.0, use_weighting=False), logps).abs()
    assert float(g1[0]) == pytest.approx(0.25, rel=1e-12) and float(g2[0]) == pytest.approx(0.5, rel=1e-12)
    assert float(g1[1]) == pytest.approx(sig(-10) * sig(10), rel=1e-9)
    assert float(g2[1]) == pytest.approx(2 * sig(-20) * sig(20), rel=1e-9)
    assert g2[1] < g1[1]


def test_prospect_gamma_weighting_emphasises_low_q_examples():
    """Rows of the weighting hand test (q = 0.05 desirable, q = 0.5 undesirable, beta = 1, alpha = 1).
    The weights are detached, so each weighted gradient is w_i times the unweighted one:
    [1.629947, 0.370053]; the ratio |g_1| / |g_2| grows by w(0.05)/w(0.5) = 4.404624 (g = 0.5).
    A temperature T = 2 takes the square root of that factor: 2.098720 (less emphasis);
    g = 1 gives factor 1."""
    logps = rows([LN19, 0.0], [0.0, 0.0], [True, False], 0.0)

    def grads(**kw):
        return per_example_grad(ProspectLoss(beta=1.0, alpha=1.0, loss_aversion=1.0, **kw), logps)

    plain = grads(use_weighting=False)
    weighted = grads(use_weighting=True, gamma=0.5)
    assert (weighted / plain).tolist() == pytest.approx([1.629947, 0.370053], abs=1e-6)

    def emphasis(g):
        return float((g[0] / g[1]).abs() / (plain[0] / plain[1]).abs())

    assert emphasis(weighted) == pytest.approx(4.404624, abs=1e-6)
    assert emphasis(grads(use_weighting=True, gamma=0.5, weighting_temperature=2.0)) == pytest.approx(
        2.098720, abs=1e-6
    )
    assert emphasis(grads(use_weighting=True, gamma=1.0)) == pytest.approx(1.0, abs=1e-12)


def test_prospect_weights_have_mean_one_and_extremes_stay_finite():
    loss = ProspectLoss(alpha=0.5, gamma=0.61, weighting_temperature=1.0)
    logps = rows([1e4, -1e4, 0.0, 3.0], [0.0, 0.0, 0.0, 0.0], [True, False, True, False], 0.0)
    out = loss(logps)
    (g,) = torch.autograd.grad(out.loss, logps.policy)
    assert torch.isfinite(out.losses).all() and torch.isfinite(g).all()
    u = torch.tensor([1e3, 1e3, 0.0, -0.3], dtype=D)
    assert float(loss.probability_weights(u).mean()) == pytest.approx(1.0, abs=1e-12)


# --------------------------------------------------------------------------- reference points
def _trl_rotation(n: int) -> list[int]:
    """Apply TRL 1.16's own `add_kl_completion_ids` (nested in KTOTrainer._prepare_dataset) to [0..n-1]."""
    from trl.trainer.kto_trainer import KTOTrainer

    code = next(
        c
        for c in KTOTrainer._prepare_dataset.__code__.co_consts
        if isinstance(c, types.CodeType) and c.co_name == "add_kl_completion_ids"
    )
    fn = types.FunctionType(code, {})
    return fn({"completion_ids": list(range(n))})["KL_completion_ids"]


@pytest.mark.parametrize("n", [1, 2, 5])
def test_mismatched_indices_match_trl(n):
    """Prompt i gets completion (i - 1) mod n: n = 5 -> [4, 0, 1, 2, 3]."""
    assert mismatched_indices(n).tolist() == _trl_rotation(n)
    if n == 5:
        assert mismatched_indices(5).tolist() == [4, 0, 1, 2, 3]


def test_batch_mismatch_reduces_before_clamping():
    """Local mismatch mean: mean([-2, 0]) = -1; another process's mean is 3; reduce = mean over processes.
    TRL order (mean -> gather/mean -> clamp): max(0, (-1 + 3)/2) = 1.
    (Clamping first would give (0 + 3)/2 = 1.5.)"""
    est = BatchMismatch(reduce=lambda x: (x + 3.0) / 2)
    z0 = est.estimate(torch.tensor([-5.0, -6.0], dtype=D), torch.tensor([-3.0, -6.0], dtype=D))
    assert float(z0) == 1.0
    assert float(BatchMismatch().estimate(torch.tensor([-5.0]), torch.tensor([-3.0]))) == 0.0
    assert float(WindowMismatch().estimate(torch.tensor([-1.0, -1.0, -1.0]), torch.tensor([-2.0, -3.0, -4.0]))) == 2.0


def test_batch_mismatch_is_detached():
    p = torch.tensor([1.0, 2.0], requires_grad=True)
    assert not BatchMismatch().estimate(p, torch.zeros(2)).requires_grad


def test_running_mean_hand_computed():
    """decay 0.5, batch means 4, 0, -8: m = 4, 0.5*4 + 0.5*0 = 2, 0.5*2 + 0.5*(-8) = -3;
    z0 = 4, 2, max(0, -3) = 0. A read with update=False returns max(0, m) = 0 without moving m."""
    est = RunningMean(decay=0.5)
    out = [float(est.estimate(torch.tensor([m], dtype=D), torch.zeros(1, dtype=D))) for m in (4.0, 0.0, -8.0)]
    assert out == [4.0, 2.0, 0.0]
    assert float(est.estimate(torch.tensor([100.0]), torch.zeros(1), update=False)) == 0.0
    assert est.mean == -3.0 and est.count == 3
    fresh = RunningMean(decay=0.5)
    fresh.load_state_dict(est.state_dict())
    assert float(fresh.estimate(torch.tensor([10.0]), torch.zeros(1))) == 3.5  # 0.5*(-3) + 0.5*10


def test_zero_and_registry():
    z = build_reference_point("zero")
    assert isinstance(z, Zero) and not z.needs_mismatched
    assert float(z.estimate(torch.tensor([5.0]), torch.tensor([-5.0]))) == 0.0
    literal = typing.get_args(KTOSpecificConfig.model_fields["reference_point"].annotation)
    assert sorted(literal) == reference_point_names()
    with pytest.raises(ConfigError, match="window_mismatch"):
        build_reference_point("nope")


# --------------------------------------------------------------------------- class weights
def test_auto_weights_seed_002_example():
    """746 desirable, 254 undesirable: majority (desirable) 1.0, minority 746/254 = 2.937008; ratio
    1.0 * 746 / (2.937008 * 254) = 1, inside [1, 4/3]. Swapped counts swap the weights."""
    d, u, ratio = auto_kto_weights(746, 254)
    assert (d, u) == (1.0, pytest.approx(2.937008, abs=1e-6))
    assert 1 - 1e-9 <= ratio <= 4 / 3
    d, u, ratio = auto_kto_weights(254, 746)
    assert (d, u) == (pytest.approx(2.937008, abs=1e-6), 1.0)
    assert auto_kto_weights(10, 10) == (1.0, 1.0, 1.0)


def test_auto_weights_keep_ones_when_already_in_range():
    """12 desirable / 10 undesirable: ratio 1.2 is in [1, 4/3] -> (1, 1, 1.2).
    10 / 12: ratio 0.833 < 1 -> desirable (minority) upweighted to 12/10 = 1.2, ratio 1.
    40 / 30: ratio 4/3, the upper end -> (1, 1)."""
    assert auto_kto_weights(12, 10) == (1.0, 1.0, 1.2)
    d, u, ratio = auto_kto_weights(10, 12)
    assert (d, u) == (1.2, 1.0) and ratio == pytest.approx(1.0)
    assert auto_kto_weights(40, 30)[:2] == (1.0, 1.0)


def test_auto_weights_need_both_labels():
    with pytest.raises(KTOLabelError, match="no undesirable"):
        auto_kto_weights(5, 0)
    with pytest.raises(KTOLabelError, match="no desirable"):
        resolve_kto_weights("auto", 1.0, 0, 5)


def test_resolve_weights():
    """One auto weight: ratio 1 given the other. undesirable 1.5, 30 desirable / 10 undesirable:
    lambda_D = 1.5 * 10 / 30 = 0.5. Both fixed (1, 1) on 30/10: ratio 3, outside [1, 4/3]."""
    w = resolve_kto_weights("auto", 1.5, 30, 10)
    assert w.desirable_weight == pytest.approx(0.5) and w.in_range and w.auto
    fixed = resolve_kto_weights(1.0, 1.0, 30, 10)
    assert fixed.ratio == 3.0 and not fixed.in_range and not fixed.auto


# --------------------------------------------------------------------------- building from config
def test_build_loss_maps_seed_names():
    cfg = RunConfig(
        method="kto",
        kto={
            "loss_type": "prospect",
            "beta": 0.2,
            "kto_alpha": 0.8,
            "kto_beta_s": 1.5,
            "kto_gamma": 0.7,
            "kto_lambda": 2.0,
            "use_weighting": False,
            "weighting_temperature": 3.0,
            "desirable_weight": "auto",
            "undesirable_weight": "auto",
        },
    )
    w = resolve_kto_weights("auto", "auto", 746, 254)
    resolved = cfg.model_copy(
        update={
            "kto": cfg.kto.model_copy(
                update={"desirable_weight": w.desirable_weight, "undesirable_weight": w.undesirable_weight}
            )
        }
    )
    loss = build_loss(resolved)
    assert isinstance(loss, ProspectLoss) and loss.kind == "unpaired"
    assert (
        loss.beta,
        loss.alpha,
        loss.beta_s,
        loss.gamma,
        loss.loss_aversion,
        loss.use_weighting,
        loss.weighting_temperature,
    ) == (0.2, 0.8, 1.5, 0.7, 2.0, False, 3.0)
    assert loss.desirable_weight == 1.0 and loss.undesirable_weight == pytest.approx(746 / 254)
    with pytest.raises(ConfigError, match="label counts"):
        build_loss(cfg)  # "auto" left unresolved
    with pytest.raises(ConfigError, match="unknown loss type"):
        build_loss(RunConfig(method="kto", kto={"loss_type": "kto2"}))


# --------------------------------------------------------------------------- dpo_kto hybrid
def pairs(pc, rc, pr, rr, **extra) -> PairedLogps:
    t = lambda v: torch.tensor(v, dtype=D)  # noqa: E731
    return PairedLogps(
        policy_chosen=t(pc).requires_grad_(),
        reference_chosen=t(rc),
        policy_rejected=t(pr),
        reference_rejected=t(rr),
        **extra,
    )


def test_dpo_kto_hand_computed():
    """beta = 0.1 for both terms, kto_weight = 0.5. Pair: r_w = -10 - (-20) = 10, r_l = -20 - (-20) = 0.
    DPO: -log sigma(0.1 * 10) = 0.3132617.
    KTO: mismatched policy [-30, -32], reference [-35, -37] -> z0 = 5;
      chosen (desirable) r = 10: 1 - sigma(0.1 (10 - 5)) = 0.3775407;
      rejected (undesirable) r = 0: 1 - sigma(0.1 (5 - 0)) = 0.3775407; mean 0.3775407.
    L = 0.3132617 + 0.5 * 0.3775407 = 0.5020320.
    """
    loss = DPOKTOLoss(SigmoidLoss(beta=0.1), KTOLoss(beta=0.1), kto_weight=0.5)
    logps = pairs(
        [-10.0],
        [-20.0],
        [-20.0],
        [-20.0],
        kl_policy=torch.tensor([-30.0, -32.0], dtype=D),
        kl_reference=torch.tensor([-35.0, -37.0], dtype=D),
    )
    out = loss(logps)
    assert out.loss.item() == pytest.approx(0.5020320, abs=1e-7)
    assert out.metrics["kl"] == 5.0
    assert out.metrics["loss/dpo"] == pytest.approx(0.3132617, abs=1e-7)
    assert out.metrics["loss/kto"] == pytest.approx(0.3775407, abs=1e-7)
    assert out.losses.mean().item() == pytest.approx(out.loss.item(), abs=1e-14)
    # A given z0 takes precedence over the mismatched log-probs.
    out0 = loss(pairs([-10.0], [-20.0], [-20.0], [-20.0], z0=torch.tensor(0.0, dtype=D)))
    assert out0.metrics["kl"] == 0.0
    with pytest.raises(ValueError, match="kl_policy"):
        loss(pairs([-10.0], [-20.0], [-20.0], [-20.0]))


def test_dpo_kto_matches_trl_terms():
    """KTO term against TRL's KTOTrainer on the 2B unpaired rows (chosen desirable, rejected undesirable,
    TRL's z0 from the mismatched rows); DPO term against -log sigma(beta h) worked with math.log."""
    per_token, mask, _, ref, kl_per_token, kl_mask, ref_kl = random_batch(11, b=8)
    label = torch.tensor([True] * 4 + [False] * 4)
    trl_loss, _ = trl_kto("kto", 0.1, 1.0, 1.0, per_token, mask, label, ref, kl_per_token, kl_mask, ref_kl)
    s = per_token.sum(1)
    logps = PairedLogps(
        policy_chosen=s[:4],
        policy_rejected=s[4:],
        reference_chosen=ref[:4],
        reference_rejected=ref[4:],
        kl_policy=kl_per_token.sum(1),
        kl_reference=ref_kl,
    )
    cfg = RunConfig(method={"name": "dpo_kto", "kto_weight": 0.3})
    loss = build_loss(cfg)
    assert isinstance(loss, DPOKTOLoss) and loss.kind == "paired" and loss.needs_mismatched
    h = (s[:4] - ref[:4]) - (s[4:] - ref[4:])
    dpo = sum(math.log1p(math.exp(-0.1 * float(x))) for x in h) / 4
    assert loss(logps).loss.item() == pytest.approx(dpo + 0.3 * trl_loss.item(), abs=1e-10)
