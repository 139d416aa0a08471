"""KTO's training batches planned before the first step, and their mismatched pairs' reference precomputed.

With the micro-batches composed once (engine/order.py), the in-batch mismatched pairs that z0 is
estimated from are known before training, so their reference log-probs are precomputed (prompt
run once for the row's own and its mismatched completion) instead of a reference pass per step.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from helpers import learnable_unpaired, write_config, write_jsonl
from prospect.cli import main
from prospect.data.collate import UnpairedCollator
from prospect.data.layout import mismatched_pairs, mismatched_partners
from prospect.engine.batch_plan import PaddedCost
from prospect.engine.order import FixedBatchSampler, PlannedLengthSampler, planned_train_batches
from prospect.errors import TrainingError
from prospect.io import read_jsonl


def test_mismatched_partners_rotate_inside_each_batch():
    # batches [4, 0, 2] and [1, 3]: in a batch the i-th row gets the completion of row i-1 (mod n)
    # -> 4 <- 2, 0 <- 4, 2 <- 0 ; 1 <- 3, 3 <- 1
    assert mismatched_partners([[4, 0, 2], [1, 3]], 5) == [4, 3, 0, 1, 2]
    prompts = [[10 + i] for i in range(5)]
    completions = [[20 + i, 30 + i] for i in range(5)]
    # row 0's prompt with row 4's completion, cut to max_length 2: [10] + [24]
    pairs = mismatched_pairs(prompts, completions, [[4, 0, 2], [1, 3]], max_length=2)
    assert pairs[0] == ([10], [24]) and pairs[3] == ([13], [21])
    with pytest.raises(ValueError, match="every row"):
        mismatched_pairs(prompts, completions, [[4, 0, 2]], max_length=None)


def _args(strategy: str, batch: int = 4, accumulation: int = 1) -> SimpleNamespace:
    return SimpleNamespace(
        train_sampling_strategy=strategy,
        train_batch_size=batch,
        gradient_accumulation_steps=accumulation,
        data_seed=7,
        seed=0,
    )


def test_planned_batches_are_epoch_0_of_the_length_grouped_order_and_keep_their_rows_every_epoch():
    shapes = [((11 * i) % 37 + 3, (5 * i) % 13 + 1) for i in range(30)]  # batch 4: seven full batches, one of 2
    cost = PaddedCost(suffix_weight=1.5)
    planned = planned_train_batches(_args("group_by_length"), shapes, cost)
    stock = PlannedLengthSampler(shapes, 4, seed=7, cost=cost)
    stock.set_epoch(0)
    flat = list(stock)
    assert planned == [flat[i : i + 4] for i in range(0, 30, 4)]  # epoch 0: what the stock sampler yields
    sampler = FixedBatchSampler(planned, seed=7)
    epochs = []
    for epoch in (0, 1, 2, 1):
        sampler.set_epoch(epoch)
        order = list(sampler)
        epochs.append([order[i : i + 4] for i in range(0, len(order), 4)])
    assert epochs[0] == planned and epochs[1] == epochs[3]  # a function of (seed, epoch)
    assert epochs[1] != planned and epochs[2] != epochs[1]  # later epochs reorder the batches ...
    for batches in epochs:  # ... never their rows, and the short batch stays last
        assert sorted(map(tuple, batches)) == sorted(map(tuple, planned))
        assert batches[-1] == planned[-1] and len(sampler) == 30
    assert planned_train_batches(_args("sequential"), shapes, cost)[1] == [4, 5, 6, 7]
    shuffled = planned_train_batches(_args("random"), shapes, cost)
    assert sorted(i for b in shuffled for i in b) == list(range(30)) and shuffled[0] != [0, 1, 2, 3]
    with pytest.raises(ValueError, match="same size"):
        FixedBatchSampler([[0, 1], [2], [3, 4]], seed=0)


def test_the_collator_refuses_a_batch_whose_pairs_were_precomputed_for_other_batches():
    rows = [
        {"prompt_ids": [1, 2], "completion_ids": [3], "label": True, "ref_logps": -1.0, "ref_kl_logps": -2.0}
        for _ in range(3)
    ]
    for i, (row, partner) in enumerate(zip(rows, [2, 0, 1])):  # planned batch [0, 1, 2]
        row.update(kl_row=i, kl_partner=partner)
    collate = UnpairedCollator(pad_id=0, max_length=16)
    assert collate(rows)["ref_kl_logps"].tolist() == [-2.0, -2.0, -2.0]
    with pytest.raises(TrainingError, match="planned"):
        collate([rows[1], rows[0], rows[2]])  # same rows, another order: other pairs


def _direct_logp(model, prompt: list[int], completion: list[int]) -> float:
    """log p(completion | prompt), one unpadded forward pass (independent of engine.prefix / layouts)."""
    ids = torch.tensor([prompt + completion])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, len(prompt) - 1 : -1].double()
    return float(torch.log_softmax(logits, -1).gather(-1, torch.tensor(completion)[:, None]).sum())


def test_precomputed_mismatched_reference_equals_a_direct_forward_of_each_pair(tmp_path, monkeypatch):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from prospect.data.tokenize import TokenizeSettings
    from prospect.engine.reference import attach_reference
    from prospect.testing import tiny_model_dir

    monkeypatch.setenv("PROSPECT_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir())).eval()
    tok = AutoTokenizer.from_pretrained(str(tiny_model_dir()))
    g = torch.Generator().manual_seed(1)
    prompts = [torch.randint(5, 200, (int(n),), generator=g).tolist() for n in (3, 9, 5, 12, 7)]
    completions = [torch.randint(5, 200, (int(n),), generator=g).tolist() for n in (6, 2, 14, 4, 9)]
    ds = Dataset.from_dict({"prompt_ids": prompts, "completion_ids": completions, "label": [True] * 5})
    settings = TokenizeSettings(max_length=20, max_prompt_length=12, max_completion_length=14)
    batches = [[3, 0, 4], [1, 2]]

    def context():
        import contextlib

        return contextlib.nullcontext(model)

    out, notes = attach_reference(context, tok, settings, {"train": ds}, "unpaired", pair_batches={"train": batches})
    got = out["train"]
    partner = [3, 2, 1, 4, 0]  # batch [3, 0, 4]: 3 <- 4, 0 <- 3, 4 <- 0; batch [1, 2]: 1 <- 2, 2 <- 1
    assert got["kl_partner"] == partner and got["kl_row"] == [0, 1, 2, 3, 4]
    for i in range(5):
        room = settings.max_length - len(prompts[i])  # the mismatched completion is cut to max_length
        kl = completions[partner[i]][:room]
        assert got["ref_kl_logps"][i] == pytest.approx(_direct_logp(model, prompts[i], kl), abs=2e-5)
        assert got["ref_logps"][i] == pytest.approx(_direct_logp(model, prompts[i], completions[i]), abs=2e-5)
    # other batches -> other pairs -> another cache entry, never the first one's values
    again, notes2 = attach_reference(context, tok, settings, {"train": ds}, "unpaired", pair_batches={"train": batches})
    other, notes3 = attach_reference(
        context, tok, settings, {"train": ds}, "unpaired", pair_batches={"train": [[0, 1, 2], [3, 4]]}
    )
    assert (notes, notes2, notes3) == ({"train": "miss"}, {"train": "hit"}, {"train": "miss"})
    assert again["train"]["ref_kl_logps"] == got["ref_kl_logps"]
    assert other["train"]["kl_partner"] == [2, 0, 1, 4, 3]


def test_kto_with_precomputed_mismatched_pairs_trains_like_the_on_the_fly_run_and_skips_the_reference_pass(
    tmp_path, monkeypatch
):
    """Two epochs (later epochs reorder the planned batches): losses and z0 of each step equal the run that
    computes every reference log-prob in the step, and no reference pass runs during training."""
    from prospect.engine.trainer import PreferenceTrainer

    calls = {"n": 0}
    original = PreferenceTrainer.reference_logps

    def counted(self, batch, prefix, n):
        calls["n"] += 1
        return original(self, batch, prefix, n)

    monkeypatch.setattr(PreferenceTrainer, "reference_logps", counted)
    rows = [r for r in learnable_unpaired(8, seed=1) if r["label"]] + learnable_unpaired(3, seed=3, offset=20)
    data = write_jsonl(tmp_path / "train.jsonl", rows)  # 14 rows, batch 4: batches of 4, 4, 4, 2
    out, reference_calls = {}, {}
    for name, pre in (("pre", True), ("fly", False)):
        calls["n"] = 0
        cfg = write_config(
            tmp_path / f"{name}.yaml",
            data={"train_file": str(data)},
            training={"learning_rate": 3e-2, "num_epochs": 2, "max_steps": -1, "run_name": name},
            kto={"precompute_ref_log_probs": pre},
        )
        assert main(["train", str(cfg), "--quiet"]) == 0
        out[name] = [r for r in read_jsonl(tmp_path / "runs" / name / "metrics.jsonl") if "loss" in r]
        reference_calls[name] = calls["n"]
    assert len(out["pre"]) == len(out["fly"]) == 8
    assert reference_calls["pre"] == 0 and reference_calls["fly"] >= 2 * 8  # main + mismatched, each step
    assert any(r["kl"] > 1e-4 for r in out["fly"])  # z0 is not trivially 0
    assert any("rewards/chosen" in r for r in out["pre"])  # (a batch of undesirable rows alone logs none)
    for a, b in zip(out["pre"], out["fly"]):
        assert {"loss", "kl"} <= a.keys() and a.keys() == b.keys()
        for k in ("loss", "kl", "rewards/chosen", "rewards/rejected"):
            if k in a:
                assert a[k] == pytest.approx(b[k], rel=1e-4, abs=1e-5), (a["step"], k)
    results = json.loads((tmp_path / "runs" / "pre" / "results.json").read_text())
    assert results["reference"]["mismatched_pairs"] == ["train", "validation"]  # (a held-out split is made)
