"""Gradient checkpointing (engine/checkpointing.py): auto decides from the estimated activation memory,
true/false force it, prompt sharing stays on, and the decision is recorded in results.json."""

from __future__ import annotations

import json

import pytest
import torch

from helpers import learnable_unpaired, write_config, write_jsonl
from prospect.cli import main
from prospect.config.schema import RunConfig
from prospect.engine.checkpointing import activation_bytes, checkpointed_layers_for, enable_checkpointing
from prospect.engine.model import load_policy_and_reference
from prospect.testing import tiny_model_dir


def test_estimate_follows_the_documented_formula():
    """layers x tokens x (10 hidden + 2 intermediate) x 4 bytes for a float32 model."""
    cfg = RunConfig.model_validate({"model": {"name": str(tiny_model_dir())}})
    policy, _, _ = load_policy_and_reference(cfg)
    text = policy.get_base_model().config
    want = text.num_hidden_layers * 1000 * (10 * text.hidden_size + 2 * text.intermediate_size) * 4
    assert activation_bytes(policy, 1000) == want


def test_checkpointing_with_lora_still_gives_adapter_gradients():
    cfg = RunConfig.model_validate(
        {"model": {"name": str(tiny_model_dir())}, "optimization": {"use_lora": True, "lora_rank": 2}}
    )
    policy, _, _ = load_policy_and_reference(cfg)
    enable_checkpointing(policy, share_prompt=True)
    assert policy.base_model.model.is_activation_checkpointing
    policy.train()
    ids = torch.tensor([[2, 40, 41, 42, 43, 44, 3]])
    policy(input_ids=ids, labels=ids).loss.backward()
    # B starts at zero, so the gradient reaches B (A gets none until B moves).
    grads = [p.grad for n, p in policy.named_parameters() if "lora_B" in n]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


def _tiny_policy():
    cfg = RunConfig.model_validate(
        {"model": {"name": str(tiny_model_dir())}, "optimization": {"use_lora": True, "lora_rank": 2}}
    )
    return load_policy_and_reference(cfg)[0]


def test_auto_checkpoints_the_fewest_layers_that_fit_the_budget():
    """kept(k) = (L - k) a + k c <= budget, worked for the tiny model (L layers, hidden h, intermediate i)."""
    policy = _tiny_policy()
    text = policy.get_base_model().config
    L, h, i, tokens = text.num_hidden_layers, text.hidden_size, text.intermediate_size, 1000
    a = tokens * (10 * h + 2 * i) * 4  # one layer's activations, float32
    c = tokens * h * 4  # what a checkpointed layer keeps: its input
    gib = 1024**3
    assert checkpointed_layers_for(policy, tokens, budget_gb=L * a / gib) == 0  # everything fits
    assert checkpointed_layers_for(policy, tokens, budget_gb=1e-9) == L  # nothing fits
    # Room for all but 1.5 layers' activations: two layers must go (one is not enough).
    budget = (L * a - 1.5 * a) / gib
    k = checkpointed_layers_for(policy, tokens, budget_gb=budget)
    assert k == 2
    assert (L - k) * a + k * c <= budget * gib < (L - k + 1) * a + (k - 1) * c


def test_partial_checkpointing_marks_the_first_layers_and_keeps_gradients():
    from prospect.engine.prefix import decoder_layers

    ids = torch.tensor([[2, 40, 41, 42, 43, 44, 3]])
    grads = {}
    for layers in (None, 1, 0):
        torch.manual_seed(0)
        policy = _tiny_policy()
        with torch.no_grad():  # B = 0 at init: move it so that every adapter gets a gradient
            for n, p in policy.named_parameters():
                if "lora_B" in n:
                    p.normal_(0, 0.1)
        if layers != 0:
            enable_checkpointing(policy, share_prompt=True, layers=layers)
        flags = [layer.gradient_checkpointing for layer in decoder_layers(policy)]
        want = len(flags) if layers is None else layers
        assert flags == [True] * want + [False] * (len(flags) - want)
        policy.train()
        policy(input_ids=ids, labels=ids).loss.backward()
        grads[layers] = {n: p.grad.clone() for n, p in policy.named_parameters() if p.requires_grad}
    for layers in (None, 1):
        assert grads[layers].keys() == grads[0].keys()
        for n, g in grads[0].items():
            torch.testing.assert_close(grads[layers][n], g, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize(
    ("setting", "budget", "enabled"),
    [("auto", 0.5, False), ("auto", 1e-6, True), (True, 0.5, True), (False, 1e-6, False)],
)
def test_decision_is_recorded_and_training_runs(tmp_path, setting, budget, enabled):
    data = write_jsonl(tmp_path / "train.jsonl", learnable_unpaired(8, seed=1))
    cfg = write_config(
        tmp_path / "run.yaml",
        data={"train_file": str(data), "validation_split_percentage": 0.0},
        training={"max_steps": 2, "save_steps": 2},
        optimization={
            "use_lora": True,
            "lora_rank": 4,
            "lora_dropout": 0.0,
            "use_gradient_checkpointing": setting,
            "activation_budget_gb": budget,
        },
    )
    assert main(["train", str(cfg), "--quiet"]) == 0
    results = json.loads((tmp_path / "runs" / "t" / "results.json").read_text())
    note = results["gradient_checkpointing"]
    assert note["enabled"] is enabled and note["setting"] == setting
    assert note["layers"] == (note["of_layers"] if enabled else 0) and note["of_layers"] > 0
    assert note["estimated_activation_gb"] > 0 and note["largest_batch_tokens"] > 0
    assert (note["budget_gb"] == budget) is (setting == "auto")


def test_checkpointed_run_trains_like_the_plain_run(tmp_path):
    """Checkpointing recomputes activations: the same losses (to float rounding) with prompt sharing on,
    whether every layer is checkpointed or, under auto with 0.6 of the estimate as budget, some of them."""
    data = write_jsonl(tmp_path / "train.jsonl", learnable_unpaired(8, seed=1))
    losses, notes = {}, {}
    for setting in ("off", "all", "part"):
        d = tmp_path / setting
        d.mkdir()
        opt = {"use_lora": True, "lora_rank": 4, "lora_dropout": 0.0, "use_gradient_checkpointing": setting == "all"}
        if setting == "part":
            opt.update(
                use_gradient_checkpointing="auto", activation_budget_gb=0.6 * notes["off"]["estimated_activation_gb"]
            )
        cfg = write_config(
            d / "run.yaml",
            data={"train_file": str(data), "validation_split_percentage": 0.0},
            training={"max_steps": 3, "save_steps": 3},
            optimization=opt,
        )
        assert main(["train", str(cfg), "--quiet"]) == 0
        rows = [json.loads(x) for x in (d / "runs" / "t" / "metrics.jsonl").read_text().splitlines()]
        losses[setting] = [r["loss"] for r in rows if "loss" in r]
        notes[setting] = json.loads((d / "runs" / "t" / "results.json").read_text())["gradient_checkpointing"]
    assert notes["off"]["layers"] == 0 and notes["all"]["layers"] == notes["all"]["of_layers"]
    assert 0 < notes["part"]["layers"] < notes["part"]["of_layers"]
    assert len(losses["all"]) == 3
    assert losses["all"] == pytest.approx(losses["off"], abs=1e-5)
    assert losses["part"] == pytest.approx(losses["off"], abs=1e-5)
