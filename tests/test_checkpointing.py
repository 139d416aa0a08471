"""Gradient checkpointing (engine/checkpointing.py): auto decides from the estimated activation memory,
true/false force it, prompt sharing stays on, and the decision is recorded in results.json."""

from __future__ import annotations

import json

import pytest
import torch

from helpers import learnable_unpaired, write_config, write_jsonl
from prospect.cli import main
from prospect.config.schema import RunConfig
from prospect.engine.checkpointing import activation_bytes, enable_checkpointing
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
    assert note["estimated_activation_gb"] > 0 and note["largest_batch_tokens"] > 0
    assert (note["budget_gb"] == budget) is (setting == "auto")


def test_checkpointed_run_trains_like_the_plain_run(tmp_path):
    """Checkpointing recomputes activations: the same losses (to float rounding) with prompt sharing on."""
    data = write_jsonl(tmp_path / "train.jsonl", learnable_unpaired(8, seed=1))
    losses = {}
    for setting in (False, True):
        d = tmp_path / str(setting)
        d.mkdir()
        cfg = write_config(
            d / "run.yaml",
            data={"train_file": str(data), "validation_split_percentage": 0.0},
            training={"max_steps": 3, "save_steps": 3},
            optimization={"use_lora": True, "lora_rank": 4, "lora_dropout": 0.0, "use_gradient_checkpointing": setting},
        )
        assert main(["train", str(cfg), "--quiet"]) == 0
        rows = [json.loads(x) for x in (d / "runs" / "t" / "metrics.jsonl").read_text().splitlines()]
        losses[setting] = [r["loss"] for r in rows if "loss" in r]
    assert len(losses[True]) == 3 and losses[True] == pytest.approx(losses[False], abs=1e-5)
