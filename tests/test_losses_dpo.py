"""Paired losses (TRL 1.16 DPO loss types, combinations, factual_dpo): hand-worked numbers and
agreement with TRL 1.16's own `DPOTrainer._compute_loss` on the same tensors.

Notation: r_w / r_l = policy - reference log-prob of chosen / rejected, h = r_w - r_l.
Most hand tests use one pair with policy_chosen -10, reference_chosen -20 (r_w = 10),
policy_rejected = reference_rejected = -20 (r_l = 0), beta = 0.1, so beta h = 1, and lengths
len_w = 5, len_l = 2. Handy values: -log sigma(1) = log(1 + e^-1) = 0.3132617,
-log sigma(-1) = 1 + 0.3132617 = 1.3132617, log 2 = 0.6931472, sigma(1) = 0.7310586.
"""

from __future__ import annotations

import inspect
import os
import re
from collections import defaultdict
from types import SimpleNamespace

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch

from prospect.config.schema import RunConfig
from prospect.errors import ConfigError, DPODataError
from prospect.losses import (
    CombinedPairedLoss,
    FactualDPOLoss,
    PairedLogps,
    build_loss,
    build_paired_loss,
    paired_loss_names,
    reorient_pairs,
)
from prospect.losses.dpo import IPOLoss, SigmoidLoss

D = torch.float64
TRL_LOSS_TYPES = {
    "sigmoid",
    "hinge",
    "ipo",
    "exo_pair",
    "nca_pair",
    "robust",
    "bco_pair",
    "sppo_hard",
    "aot",
    "aot_unpaired",
    "apo_zero",
    "apo_down",
    "discopop",
    "sft",
    "sigmoid_norm",
}


def t(v) -> torch.Tensor:
    return torch.tensor(v, dtype=D)


def one_pair(**extra) -> PairedLogps:
    """r_w = 10, r_l = 0, len_w = 5, len_l = 2 (beta = 0.1 gives beta h = 1)."""
    return PairedLogps(
        policy_chosen=t([-10.0]),
        reference_chosen=t([-20.0]),
        policy_rejected=t([-20.0]),
        reference_rejected=t([-20.0]),
        chosen_lengths=torch.tensor([5]),
        rejected_lengths=torch.tensor([2]),
        **extra,
    )


def loss_of(loss_type, logps=None, **settings) -> float:
    return build_paired_loss(loss_type, **settings)(logps or one_pair()).loss.item()


# --------------------------------------------------------------------------- registry
def test_registry_is_exactly_trls_loss_types():
    """The 15 names of TRL 1.16's DPOConfig.loss_type docs, and those its _compute_loss dispatches on."""
    from trl.trainer.dpo_trainer import DPOTrainer

    in_trl = set(re.findall(r'loss_type == "(\w+)"', inspect.getsource(DPOTrainer._compute_loss)))
    assert in_trl == TRL_LOSS_TYPES
    assert set(paired_loss_names()) == TRL_LOSS_TYPES and len(paired_loss_names()) == 15


def test_unknown_and_invalid_settings_are_config_errors():
    with pytest.raises(ConfigError, match="unknown loss type 'dpo2'"):
        build_paired_loss("dpo2")
    with pytest.raises(ConfigError, match="exo_pair"):
        build_paired_loss("exo_pair", label_smoothing=0.0)
    with pytest.raises(ConfigError, match="robust"):
        build_paired_loss("robust", label_smoothing=0.5)
    with pytest.raises(ConfigError, match="2 weights for 3"):
        build_paired_loss(["sigmoid", "sft", "hinge"], [1.0, 1.0])


# --------------------------------------------------------------------------- hand numbers
def test_sigmoid_hand():
    """beta h = 1: -log sigma(1) = 0.3132617.
    cDPO eps = 0.1: 0.9 * 0.3132617 + 0.1 * 1.3132617 = 0.4132617."""
    assert loss_of("sigmoid") == pytest.approx(0.3132617, abs=1e-7)
    assert loss_of("sigmoid", label_smoothing=0.1) == pytest.approx(0.4132617, abs=1e-7)


def test_hinge_hand():
    """max(0, 1 - beta h): beta 0.1 -> 1 - 1 = 0; beta 0.05 -> 1 - 0.5 = 0.5."""
    assert loss_of("hinge") == 0.0
    assert loss_of("hinge", beta=0.05) == pytest.approx(0.5)


def test_ipo_hand():
    """h_avg = 10/5 - 0/2 = 2; (2 - 1/(2 * 0.1))^2 = (2 - 5)^2 = 9. Lengths are required."""
    assert loss_of("ipo") == pytest.approx(9.0)
    with pytest.raises(ValueError, match="lengths"):
        IPOLoss()(PairedLogps(t([-1.0]), t([-2.0]), t([-1.0]), t([-2.0])))


def test_exo_pair_hand():
    """eps = 0.1, beta h = 1: q_w = sigma(1) = 0.7310586, q_l = 0.2689414;
    q_w (log q_w - log 0.9) + q_l (log q_l - log 0.1)
    = 0.7310586 (-0.3132617 + 0.1053605) + 0.2689414 (-1.3132617 + 2.3025851)
    = -0.1519879 + 0.2660700 = 0.1140821."""
    assert loss_of("exo_pair", label_smoothing=0.1) == pytest.approx(0.1140821, abs=1e-7)


def test_nca_pair_hand():
    """beta r_w = 1, beta r_l = 0: -log sigma(1) - 0.5 log sigma(-1) - 0.5 log sigma(0)
    = 0.3132617 + 0.6566309 + 0.3465736 = 1.3164661."""
    assert loss_of("nca_pair") == pytest.approx(1.3164661, abs=1e-7)


def test_robust_hand():
    """eps = 0.1: (0.9 * 0.3132617 - 0.1 * 1.3132617) / 0.8 = 0.1506094 / 0.8 = 0.1882617.
    eps = 0: plain sigmoid."""
    assert loss_of("robust", label_smoothing=0.1) == pytest.approx(0.1882617, abs=1e-7)
    assert loss_of("robust") == pytest.approx(0.3132617, abs=1e-7)


def test_bco_pair_hand():
    """-log sigma(1) - log sigma(-0) = 0.3132617 + 0.6931472 = 1.0064089."""
    assert loss_of("bco_pair") == pytest.approx(1.0064089, abs=1e-7)


def test_sppo_hard_hand():
    """(r_w - 1/(2 beta))^2 + (r_l + 1/(2 beta))^2 = (10 - 5)^2 + (0 + 5)^2 = 50."""
    assert loss_of("sppo_hard") == pytest.approx(50.0)


def test_apo_hand():
    """apo_zero: 1 - sigma(1) + sigma(0) = 0.2689414 + 0.5 = 0.7689414.
    apo_down: sigma(beta r_w) + 1 - sigma(beta h) = sigma(1) + 1 - sigma(1) = 1."""
    assert loss_of("apo_zero") == pytest.approx(0.7689414, abs=1e-7)
    assert loss_of("apo_down") == pytest.approx(1.0, abs=1e-12)


def test_discopop_hand():
    """tau = 0.05. beta h = 1: m = sigma(20) = 1 - 2.06e-9, loss = 0.3132617 (1 - m) + e^-1 m = 0.3678794.
    beta h = 0 (r_w = 0): m = 1/2, loss = 0.5 log 2 + 0.5 = 0.8465736."""
    assert loss_of("discopop") == pytest.approx(0.3678794, abs=1e-7)
    zero = PairedLogps(t([-20.0]), t([-20.0]), t([-20.0]), t([-20.0]))
    assert loss_of("discopop", zero) == pytest.approx(0.8465736, abs=1e-7)


def test_sft_hand():
    """Token-level mean NLL of the chosen completions over the batch: chosen log-probs [-10, -6],
    lengths [5, 3] -> -(-10 - 6) / (5 + 3) = 2 for each pair; reference and rejected unused."""
    logps = PairedLogps(
        t([-10.0, -6.0]),
        t([-1.0, -2.0]),
        t([0.0, 0.0]),
        t([0.0, 0.0]),
        chosen_lengths=torch.tensor([5, 3]),
        rejected_lengths=torch.tensor([1, 1]),
    )
    out = build_paired_loss("sft")(logps)
    assert out.losses.tolist() == [2.0, 2.0] and out.loss.item() == 2.0


def test_sigmoid_norm_hand():
    """h_avg = 10/5 - 0/2 = 2; -log sigma(0.1 * 2) = log(1 + e^-0.2) = 0.5981389."""
    assert loss_of("sigmoid_norm") == pytest.approx(0.5981389, abs=1e-7)


def test_aot_sorts_margins_hand():
    """aot, beta 0.2. Policy margins pc - pr: [5, -5]; reference margins rc - rr: [-10, 0].
    Sorted separately: [-5, 5] - [-10, 0] = [5, 5] (unsorted they would be [15, -5]);
    each loss -log sigma(0.2 * 5) = 0.3132617."""
    logps = PairedLogps(
        policy_chosen=t([0.0, -5.0]),
        policy_rejected=t([-5.0, 0.0]),
        reference_chosen=t([-10.0, 0.0]),
        reference_rejected=t([0.0, 0.0]),
    )
    out = build_paired_loss("aot", beta=0.2)(logps)
    assert out.losses.tolist() == pytest.approx([0.3132617, 0.3132617], abs=1e-7)


def test_aot_unpaired_hand():
    """aot_unpaired, beta 1. r_w = [3, -1], r_l = [0, 2]; sorted: [-1, 3] - [0, 2] = [-1, 1];
    losses [-log sigma(-1), -log sigma(1)] = [1.3132617, 0.3132617], mean 0.8132617."""
    logps = PairedLogps(
        policy_chosen=t([3.0, -1.0]),
        policy_rejected=t([0.0, 2.0]),
        reference_chosen=t([0.0, 0.0]),
        reference_rejected=t([0.0, 0.0]),
    )
    assert loss_of("aot_unpaired", logps, beta=1.0) == pytest.approx(0.8132617, abs=1e-7)


def test_combined_hand():
    """[sigmoid, sppo_hard] weights [0.8, 0.2]: 0.8 * 0.3132617 + 0.2 * 50 = 10.2506094."""
    loss = build_paired_loss(["sigmoid", "sppo_hard"], [0.8, 0.2])
    assert isinstance(loss, CombinedPairedLoss)
    out = loss(one_pair())
    assert out.loss.item() == pytest.approx(10.2506094, abs=1e-7)
    assert out.metrics["loss/sppo_hard"] == pytest.approx(50.0)


def test_rewards_are_beta_logratios():
    """Rewards beta r: chosen 0.1 * 10 = 1, rejected 0.1 * 0 = 0, whatever the loss type."""
    out = build_paired_loss("ipo")(one_pair())
    assert out.chosen_rewards.tolist() == [1.0] and out.rejected_rewards.tolist() == [0.0]


# --------------------------------------------------------------------------- TRL oracle
class _Accelerator:
    device = torch.device("cpu")

    @staticmethod
    def gather(x):
        return x

    gather_for_metrics = gather


class _FakeLM:
    training = True

    def __init__(self, per_token):
        self.per_token = per_token

    def __call__(self, input_ids, **kwargs):
        zeros = torch.zeros_like(self.per_token)
        return SimpleNamespace(log_probs=self.per_token, entropy=zeros, mean_logits=zeros, is_top1=zeros.bool())


def trl_dpo(loss_types, loss_weights, beta, label_smoothing, discopop_tau, per_token, mask, ref):
    """TRL 1.16's DPOTrainer._compute_loss; rows are [chosen; rejected], reference precomputed."""
    from trl.trainer.dpo_trainer import DPOTrainer

    trainer = object.__new__(DPOTrainer)
    model = _FakeLM(per_token)
    for k, v in dict(
        model=model,
        accelerator=_Accelerator(),
        aux_loss_enabled=False,
        precompute_ref_logps=True,
        ld_alpha=None,
        f_divergence_type="reverse_kl",
        loss_types=list(loss_types),
        loss_weights=loss_weights or [1.0] * len(loss_types),
        beta=beta,
        label_smoothing=label_smoothing,
        use_weighting=False,
        args=SimpleNamespace(discopop_tau=discopop_tau),
        _metrics={"train": defaultdict(list), "eval": defaultdict(list)},
        _total_train_tokens=0,
        _tp_size=1,
    ).items():
        setattr(trainer, k, v)
    b = mask.shape[0] // 2
    inputs = dict(
        input_ids=torch.zeros(mask.shape, dtype=torch.long),
        attention_mask=torch.ones_like(mask),
        completion_mask=mask,
        ref_chosen_logps=ref[:b],
        ref_rejected_logps=ref[b:],
    )
    return trainer._compute_loss(model, inputs, False)


def random_pairs(seed: int, b: int = 6, width: int = 8):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, width, (2 * b,), generator=g)
    pos = torch.arange(width)[None, :]
    mask = ((pos >= 1) & (pos <= lengths[:, None])).long()  # position 0 is the prompt
    per_token = -2 * torch.rand(2 * b, width - 1, dtype=D, generator=g) * mask[:, 1:]
    ref = per_token.sum(1) + 3 * torch.randn(2 * b, dtype=D, generator=g)
    return per_token, mask, ref


CASES = [
    (name, 0.1 if name in {"exo_pair", "robust", "aot", "aot_unpaired"} else 0.0) for name in sorted(TRL_LOSS_TYPES)
]


@pytest.mark.parametrize(
    "loss_types,loss_weights,label_smoothing",
    [([n], None, ls) for n, ls in CASES]
    + [
        (["sigmoid", "bco_pair", "sft"], [0.8, 0.2, 1.0], 0.0),  # MPO
        (["sigmoid", "sft"], [1.0, 0.5], 0.0),
        (["ipo", "sigmoid_norm", "discopop"], None, 0.0),
    ],
)
@pytest.mark.parametrize("beta,seed", [(0.1, 0), (0.5, 1)])
def test_paired_matches_trl(loss_types, loss_weights, label_smoothing, beta, seed):
    """Loss and d loss / d (per-token policy log-prob) agree with TRL on random float64 inputs."""
    per_token, mask, ref = random_pairs(seed)
    b = mask.shape[0] // 2
    trl_leaf = per_token.clone().requires_grad_()
    trl_loss = trl_dpo(loss_types, loss_weights, beta, label_smoothing, 0.05, trl_leaf, mask, ref)
    trl_loss.backward()

    leaf = per_token.clone().requires_grad_()
    sums, lengths = leaf.sum(1), mask[:, 1:].sum(1)
    logps = PairedLogps(
        policy_chosen=sums[:b],
        policy_rejected=sums[b:],
        reference_chosen=ref[:b],
        reference_rejected=ref[b:],
        chosen_lengths=lengths[:b],
        rejected_lengths=lengths[b:],
    )
    loss = build_paired_loss(loss_types, loss_weights, beta=beta, label_smoothing=label_smoothing)
    out = loss(logps)
    out.loss.backward()

    assert out.loss.item() == pytest.approx(trl_loss.item(), abs=1e-6, rel=1e-9)
    on_tokens = mask[:, 1:].bool()  # TRL's sft reads completion tokens only
    torch.testing.assert_close(leaf.grad[on_tokens], trl_leaf.grad[on_tokens], atol=1e-6, rtol=1e-9)
    assert out.losses.shape == (b,)
    assert out.losses.mean().item() == pytest.approx(out.loss.item(), abs=1e-12)


def test_build_loss_methods():
    assert isinstance(build_loss(RunConfig(method="dpo", dpo={"loss_type": "sigmoid", "beta": 0.3})), SigmoidLoss)
    ipo = build_loss(RunConfig(method="ipo", dpo={"beta": 0.5}))
    assert isinstance(ipo, IPOLoss) and ipo.beta == 0.5 and ipo.kind == "paired"
    fd = build_loss(RunConfig(method={"name": "factual_dpo", "delta": 10}))
    assert isinstance(fd, FactualDPOLoss) and fd.delta == 10
    with pytest.raises(ConfigError, match="sigmoid"):
        build_loss(RunConfig(method="factual_dpo", dpo={"loss_type": "hinge"}))
    combo = build_loss(RunConfig(method="dpo", dpo={"loss_type": ["sigmoid", "sft"], "loss_weights": [1, 0.1]}))
    assert isinstance(combo, CombinedPairedLoss) and combo.weights == [1.0, 0.1] and combo.needs_lengths


# --------------------------------------------------------------------------- factual_dpo
def test_factual_dpo_hand():
    """margin_scale none (SafeDPO paper), z = beta h - (h_l - h_w) Delta; beta 0.1, Delta 1, three pairs each with beta h = 1:
    (h_w, h_l) = (0, 1): -log sigma(1 - 1) = log 2 = 0.6931472;
    (0, 0) and (1, 1): -log sigma(1) = 0.3132617.
    Mean (0.6931472 + 2 * 0.3132617) / 3 = 0.4398902."""
    logps = PairedLogps(
        t([-10.0] * 3),
        t([-20.0] * 3),
        t([-20.0] * 3),
        t([-20.0] * 3),
        h_w=torch.tensor([0, 0, 1]),
        h_l=torch.tensor([1, 0, 1]),
    )
    out = FactualDPOLoss(beta=0.1, delta=1.0, margin_scale="none")(logps)
    assert out.losses.tolist() == pytest.approx([0.6931472, 0.3132617, 0.3132617], abs=1e-7)
    assert out.loss.item() == pytest.approx(0.4398902, abs=1e-7)
    assert out.metrics["factual/unoriented_pairs"] == 0.0


def test_factual_dpo_delta_zero_is_dpo():
    per_token, mask, ref = random_pairs(3)
    s = per_token.sum(1)
    g = torch.Generator().manual_seed(0)
    logps = PairedLogps(
        s[:6],
        ref[:6],
        s[6:],
        ref[6:],
        h_w=torch.randint(0, 2, (6,), generator=g),
        h_l=torch.randint(0, 2, (6,), generator=g),
    )
    for eps in (0.0, 0.2):
        a = FactualDPOLoss(beta=0.3, delta=0.0, label_smoothing=eps)(logps)
        b = SigmoidLoss(beta=0.3, label_smoothing=eps)(logps)
        assert torch.equal(a.losses, b.losses)


def test_factual_dpo_margin_direction():
    """z = beta h - (h_l - h_w) Delta: a larger Delta lowers z, so -log sigma(z) rises, only where h_l > h_w."""
    logps = PairedLogps(
        t([-10.0, -10.0]),
        t([-20.0, -20.0]),
        t([-20.0, -20.0]),
        t([-20.0, -20.0]),
        h_w=torch.tensor([0, 1]),
        h_l=torch.tensor([1, 1]),
    )
    for scale in ("beta", "none"):
        small = FactualDPOLoss(delta=2.0, margin_scale=scale)(logps).losses
        large = FactualDPOLoss(delta=10.0, margin_scale=scale)(logps).losses
        assert large[0] > small[0] and large[1] == small[1]


def test_factual_dpo_needs_indicators():
    with pytest.raises(DPODataError, match="h_w and h_l"):
        FactualDPOLoss(delta=1.0)(one_pair())
    assert FactualDPOLoss(delta=0.0)(one_pair()).loss.item() == pytest.approx(0.3132617, abs=1e-7)


def test_reorient_pairs_mask():
    """Swap only where the chosen is non-factual (1) and the rejected factual (0)."""
    mask = reorient_pairs(torch.tensor([1, 1, 0, 0]), torch.tensor([0, 1, 0, 1]))
    assert mask.tolist() == [True, False, False, False]
