"""ORPO, SimPO and CPO: hand-worked numbers and TRL 1.16's own loss functions as the oracle.

The oracle: random logits and labels (prompt and padding tokens -100) go through TRL's
`get_batch_logps` (summed and averaged completion log-probs) and its chosen-NLL cross entropy;
TRL's `ORPOTrainer.odds_ratio_loss` / `CPOTrainer.cpo_loss` then give TRL's loss. Prospect's
losses get what its engine hands them: summed completion log-probs and completion lengths.
"""

from __future__ import annotations

import math
import os
from types import SimpleNamespace

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

import pytest
import torch
from torch import nn

from prospect.config.schema import RunConfig
from prospect.engine.build import needs_reference
from prospect.losses import CPOLoss, ORPOLoss, PairedLogps, SimPOLoss, build_loss

D = torch.float64


def hand_logps(s_w: float, len_w: int, s_l: float, len_l: int) -> PairedLogps:
    z = torch.zeros(1, dtype=D)
    return PairedLogps(
        torch.tensor([s_w], dtype=D), torch.tensor([s_l], dtype=D), z, z,
        chosen_lengths=torch.tensor([len_w]), rejected_lengths=torch.tensor([len_l]),
    )  # fmt: skip


# --------------------------------------------------------------------------- hand-worked
def test_orpo_hand():
    """a_w = log 0.5 (odds 1), a_l = log 0.2 (odds 0.25): log OR = log 4, log sigma(log 4) = log 0.8 = -0.2231436.
    NLL = -s_w / len_w = log 2 = 0.6931472. lambda = 0.1: L = 0.6931472 + 0.0223144 = 0.7154615."""
    out = ORPOLoss(beta=0.1)(hand_logps(5 * math.log(0.5), 5, 3 * math.log(0.2), 3))
    assert out.loss.item() == pytest.approx(math.log(2) - 0.1 * math.log(0.8), abs=1e-12)
    assert out.loss.item() == pytest.approx(0.7154615, abs=1e-7)
    assert out.metrics["orpo/log_odds_chosen"] == pytest.approx(math.log(4), abs=1e-12)
    assert out.chosen_rewards.item() == pytest.approx(0.1 * math.log(0.5), abs=1e-12)


def test_simpo_hand():
    """a_w = -10/5 = -2, a_l = -20/5 = -4, beta 2, gamma 0.5: z = 2 (-2 + 4) - 0.5 = 3.5,
    L = log(1 + e^-3.5) = 0.0297504; rewards beta a = -4, -8."""
    out = SimPOLoss(beta=2.0, simpo_gamma=0.5)(hand_logps(-10.0, 5, -20.0, 5))
    assert out.loss.item() == pytest.approx(math.log1p(math.exp(-3.5)), abs=1e-12)
    assert out.loss.item() == pytest.approx(0.0297504, abs=1e-7)
    assert (out.chosen_rewards.item(), out.rejected_rewards.item()) == (-4.0, -8.0)


def test_cpo_hand():
    """sigmoid on summed log-probs: beta 0.1, s_w - s_l = 10, L_prefer = log(1 + e^-1) = 0.3132617;
    NLL = 10 / 5 = 2; alpha 1: L = 2.3132617; alpha 0.5: 1.3132617."""
    logps = hand_logps(-10.0, 5, -20.0, 5)
    assert CPOLoss(beta=0.1)(logps).loss.item() == pytest.approx(2.3132617, abs=1e-7)
    assert CPOLoss(beta=0.1, cpo_alpha=0.5)(logps).loss.item() == pytest.approx(1.3132617, abs=1e-7)
    # simpo variant, alpha 0: the SimPO number above
    simpo = CPOLoss(beta=2.0, cpo_alpha=0.0, loss_type="simpo", simpo_gamma=0.5)(logps)
    assert simpo.loss.item() == pytest.approx(0.0297504, abs=1e-7)


def test_reference_free_methods_read_no_reference():
    """A reference changes nothing, and the engine computes none (needs_reference False)."""
    logps = hand_logps(-10.0, 5, -20.0, 5)
    with_ref = PairedLogps(**{**vars(logps), "reference_chosen": torch.tensor([-3.0], dtype=D)})
    for name in ("orpo", "simpo", "cpo"):
        cfg = RunConfig(method=name)
        loss = build_loss(cfg)
        assert loss.needs_reference is False and loss.needs_lengths and not needs_reference(cfg, loss)
        assert loss(with_ref).loss.item() == loss(logps).loss.item()
    with pytest.raises(ValueError, match="lengths"):
        ORPOLoss()(PairedLogps(*(torch.zeros(1, dtype=D) for _ in range(4))))


def test_config_reaches_the_losses():
    cfg = RunConfig(
        method={"name": "cpo", "cpo_alpha": 0.3, "cpo_loss_type": "simpo", "simpo_gamma": 1.5}, dpo={"beta": 2.5}
    )
    loss = build_loss(cfg)
    assert isinstance(loss, CPOLoss) and (loss.cpo_alpha, loss.loss_type, loss.simpo_gamma, loss.beta) == (
        0.3, "simpo", 1.5, 2.5,
    )  # fmt: skip
    simpo = build_loss(RunConfig(method={"name": "simpo", "simpo_gamma": 1.0}, dpo={"beta": 2.0}))
    assert isinstance(simpo, SimPOLoss) and simpo.simpo_gamma == 1.0 and simpo.cpo_alpha == 0.0
    assert isinstance(build_loss(RunConfig(method="orpo", dpo={"beta": 0.25})), ORPOLoss)


# --------------------------------------------------------------------------- TRL oracle
def _trl_batch(seed: int, n: int = 4, t: int = 10, v: int = 13):
    """Logits (2n, t, v), labels with prompt and right padding at -100; chosen rows first, as TRL concatenates."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(2 * n, t, v, generator=g, dtype=D).requires_grad_(True)
    labels = torch.randint(0, v, (2 * n, t), generator=g)
    for i in range(2 * n):
        prompt = int(torch.randint(1, 4, (1,), generator=g))
        pad = int(torch.randint(0, 3, (1,), generator=g))
        labels[i, :prompt] = -100
        if pad:
            labels[i, t - pad :] = -100
    return logits, labels


def _trl_terms(logits, labels, n):
    from trl.experimental.cpo import CPOTrainer

    summed = CPOTrainer.get_batch_logps(logits, labels, average_log_prob=False)
    average = CPOTrainer.get_batch_logps(logits, labels, average_log_prob=True)
    # TRL's chosen NLL (CPOTrainer.concatenated_forward's cross_entropy_loss on the completion labels)
    nll = nn.CrossEntropyLoss()(logits[:n, :-1, :].reshape(-1, logits.shape[-1]), labels[:n, 1:].reshape(-1))
    return summed, average, nll


def _ours(logits, labels, n) -> PairedLogps:
    """What the engine gives a loss: summed completion log-probs and completion token counts."""
    targets = labels[:, 1:]
    mask = targets != -100
    token = torch.log_softmax(logits[:, :-1, :], -1).gather(-1, targets.clamp(min=0)[..., None]).squeeze(-1)
    summed = (token * mask).sum(-1)
    lengths = mask.sum(-1)
    zero = torch.zeros(n, dtype=D)
    return PairedLogps(summed[:n], summed[n:], zero, zero, chosen_lengths=lengths[:n], rejected_lengths=lengths[n:])


def _namespace(**kw) -> SimpleNamespace:
    return SimpleNamespace(accelerator=SimpleNamespace(device=torch.device("cpu")), alpha=0.0, **kw)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("beta", [0.1, 0.5])
def test_orpo_matches_trl(seed, beta):
    from trl.experimental.orpo import ORPOTrainer

    n = 4
    logits, labels = _trl_batch(seed, n)
    _, average, nll = _trl_terms(logits, labels, n)
    losses, chosen_r, rejected_r, ratio, log_odds = ORPOTrainer.odds_ratio_loss(
        _namespace(beta=beta), average[:n], average[n:]
    )
    trl_loss = nll - losses.mean()  # ORPOTrainer.get_batch_loss_metrics
    (trl_grad,) = torch.autograd.grad(trl_loss, logits)
    out = ORPOLoss(beta=beta)(_ours(logits, labels, n))
    (grad,) = torch.autograd.grad(out.loss, logits)
    # TRL casts the log-probs to float32 (`.float()`) before the odds ratio: agreement to float32 rounding.
    torch.testing.assert_close(out.loss, trl_loss.to(D), atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(grad, trl_grad, atol=1e-7, rtol=1e-5)
    torch.testing.assert_close(out.chosen_rewards, chosen_r.to(D), atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(out.rejected_rewards, rejected_r.to(D), atol=1e-6, rtol=1e-6)
    assert out.metrics["orpo/log_odds_ratio"] == pytest.approx(float(ratio.detach()), abs=1e-6)
    assert out.metrics["orpo/log_odds_chosen"] == pytest.approx(float(log_odds.detach()), abs=1e-6)
    # the same in float32 on both sides
    out32 = ORPOLoss(beta=beta)(
        PairedLogps(
            **{
                k: (v.float() if v.is_floating_point() else v)
                for k, v in vars(_ours(logits, labels, n)).items()
                if v is not None
            }
        )
    )
    torch.testing.assert_close(out32.loss, trl_loss.float(), atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("loss_type", ["sigmoid", "hinge", "ipo", "simpo"])
@pytest.mark.parametrize(("label_smoothing", "cpo_alpha"), [(0.0, 1.0), (0.1, 0.5), (0.0, 0.0)])
def test_cpo_matches_trl(loss_type, label_smoothing, cpo_alpha):
    from trl.experimental.cpo import CPOTrainer

    n, beta, gamma = 4, 0.3, 0.7
    logits, labels = _trl_batch(7, n)
    summed, average, nll = _trl_terms(logits, labels, n)
    logps = average if loss_type in ("ipo", "simpo") else summed  # CPOTrainer.concatenated_forward
    ns = _namespace(beta=beta, loss_type=loss_type, simpo_gamma=gamma, label_smoothing=label_smoothing)
    losses, chosen_r, rejected_r = CPOTrainer.cpo_loss(ns, logps[:n], logps[n:])
    trl_loss = losses.mean() + cpo_alpha * nll  # CPOTrainer.get_batch_loss_metrics
    (trl_grad,) = torch.autograd.grad(trl_loss, logits)
    ours = CPOLoss(beta, label_smoothing, cpo_alpha=cpo_alpha, loss_type=loss_type, simpo_gamma=gamma)
    out = ours(_ours(logits, labels, n))
    (grad,) = torch.autograd.grad(out.loss, logits)
    torch.testing.assert_close(out.loss, trl_loss, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(grad, trl_grad, atol=1e-12, rtol=1e-10)
    torch.testing.assert_close(out.chosen_rewards, chosen_r, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(out.rejected_rewards, rejected_r, atol=1e-12, rtol=1e-12)


def test_simpo_is_trls_cpo_simpo_without_nll():
    from trl.experimental.cpo import CPOTrainer

    n = 4
    logits, labels = _trl_batch(3, n)
    _, average, _ = _trl_terms(logits, labels, n)
    ns = _namespace(beta=2.0, loss_type="simpo", simpo_gamma=0.5, label_smoothing=0.0)
    losses, _, _ = CPOTrainer.cpo_loss(ns, average[:n], average[n:])
    out = SimPOLoss(beta=2.0, simpo_gamma=0.5)(_ours(logits, labels, n))
    torch.testing.assert_close(out.losses, losses, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(out.loss, losses.mean(), atol=1e-12, rtol=1e-12)
