"""KTO at any batch size: z0 from mismatched pairs across the gradient-accumulation window."""

from __future__ import annotations

import json
import math

import pytest
import torch

from helpers import learnable_unpaired, sgd_training, write_config, write_jsonl
from prospect.cli import main
from prospect.config.schema import RunConfig
from prospect.engine.window import resolve_reference_point
from prospect.errors import ConfigError
from prospect.io import read_jsonl


def _cfg(**training):
    return RunConfig.model_validate({"method": "kto", "training": training})


def test_batch_one_defaults_to_window_and_explicit_batch_mismatch_is_refused():
    cfg = resolve_reference_point(_cfg(batch_size=1, gradient_accumulation_steps=8), world_size=1)
    assert cfg.kto.reference_point == "window_mismatch"
    assert cfg.training.eval_batch_size == 8  # eval estimates z0 per eval batch: as large as the window
    # several processes also make a window, even without accumulation
    assert resolve_reference_point(_cfg(batch_size=1), world_size=2).kto.reference_point == "window_mismatch"
    with pytest.raises(ConfigError, match="window_mismatch"):
        resolve_reference_point(_cfg(batch_size=1), world_size=1)
    explicit = RunConfig.model_validate(
        {
            "method": "kto",
            "training": {"batch_size": 1, "gradient_accumulation_steps": 8},
            "kto": {"reference_point": "batch_mismatch"},
        }
    )
    with pytest.raises(ConfigError, match="batch_size >= 2"):
        resolve_reference_point(explicit, world_size=1)
    lonely = RunConfig.model_validate(
        {"method": "kto", "training": {"batch_size": 1}, "kto": {"reference_point": "window_mismatch"}}
    )
    with pytest.raises(ConfigError, match="at least 2 rows"):
        resolve_reference_point(lonely, world_size=1)
    # batch >= 2 keeps what was asked for
    assert resolve_reference_point(_cfg(batch_size=2), world_size=1).kto.reference_point == "batch_mismatch"


def _oracle_logp(model, prompt, completion):
    """log pi(completion | prompt), one unpadded sequence, plain log-softmax over the full logits."""
    ids = torch.tensor([list(prompt) + list(completion)])
    with torch.no_grad():
        lp = torch.log_softmax(model(input_ids=ids).logits[0].float(), -1)
    return sum(lp[len(prompt) + t - 1, c].item() for t, c in enumerate(completion))


def test_window_z0_equals_independent_computation(tmp_path):
    """z0 = max(0, mean_g [log pi(y_{g-1}|x_g) - log pi_ref(y_{g-1}|x_g)]) over a window of 3 micro-batches."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, TrainingArguments

    from prospect.data.collate import UnpairedCollator
    from prospect.engine.dist import distributed_mean
    from prospect.engine.window import WindowMismatchTrainer, WindowRowsCollator
    from prospect.losses import build_loss, build_reference_point
    from prospect.losses.reference_point import ReferencePoint
    from prospect.testing import tiny_model_dir

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir()))
    # a non-zero adapter, so policy and reference differ
    model = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 2.0)
    cfg = RunConfig.model_validate({"method": "kto"})
    trainer = WindowMismatchTrainer(
        model=model,
        args=TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=2, report_to="none", use_cpu=True),
        data_collator=WindowRowsCollator(UnpairedCollator(pad_id=0)),
        loss_fn=build_loss(cfg),
        z0_estimator=build_reference_point("window_mismatch", reduce=distributed_mean),
    )
    g = torch.Generator().manual_seed(1)
    rows = [
        {
            "prompt_ids": torch.randint(3, 300, (int(torch.randint(2, 9, (1,), generator=g)),), generator=g).tolist(),
            "completion_ids": torch.randint(
                3, 300, (int(torch.randint(1, 7, (1,), generator=g)),), generator=g
            ).tolist(),
        }
        for _ in range(6)
    ]
    micro = [
        {
            "prompt_ids": [r["prompt_ids"] for r in rows[i : i + 2]],
            "completion_ids": [r["completion_ids"] for r in rows[i : i + 2]],
        }
        for i in (0, 2, 4)
    ]
    z0 = float(trainer.window_z0(micro))

    class Unclamped(ReferencePoint):  # the window mean before the clamp, to check the pairing itself
        def estimate(self, kl_policy, kl_reference):
            return self.batch_mean(kl_policy, kl_reference)

    trainer.z0_estimator = Unclamped(reduce=distributed_mean)
    mean = float(trainer.window_z0(micro))

    model.eval()
    diffs = []
    for i in range(6):
        prompt, completion = rows[i]["prompt_ids"], rows[(i - 1) % 6]["completion_ids"]
        pol = _oracle_logp(model, prompt, completion)
        with model.disable_adapter():
            ref = _oracle_logp(model, prompt, completion)
        diffs.append(pol - ref)
    expected = sum(diffs) / 6
    assert max(abs(d) for d in diffs) > 0.1  # the case means something: policy and reference differ
    # ... and the pairing matters: rotating inside each micro-batch of 2 would give another z0
    in_batch = []
    for i in range(6):
        prompt, completion = rows[i]["prompt_ids"], rows[i ^ 1]["completion_ids"]
        with model.disable_adapter():
            ref = _oracle_logp(model, prompt, completion)
        in_batch.append(_oracle_logp(model, prompt, completion) - ref)
    assert abs(sum(in_batch) / 6 - expected) > 1e-3
    assert mean == pytest.approx(expected, rel=1e-4, abs=1e-5)
    assert z0 == pytest.approx(max(0.0, expected), rel=1e-4, abs=1e-5)
    assert trainer.last_window_rows == 6


def _run(tmp_path, name, batch, accum, reference_point, steps=3):
    data = tmp_path / "train.jsonl"
    if not data.exists():
        write_jsonl(data, learnable_unpaired(8, seed=3))
    kto = {"beta": 0.5, "precompute_ref_log_probs": False}
    if reference_point:
        kto["reference_point"] = reference_point
    cfg = write_config(
        tmp_path / f"{name}.yaml",
        data={"train_file": str(data)},
        kto=kto,
        training=sgd_training(name, tmp_path / "runs", batch, gradient_accumulation_steps=accum, max_steps=steps),
    )
    assert main(["train", str(cfg), "--quiet"]) == 0
    run = tmp_path / "runs" / name
    logs = [r for r in read_jsonl(run / "metrics.jsonl") if "loss" in r]
    from safetensors.torch import load_file

    return (
        logs,
        load_file(str(run / "final" / "adapter_model.safetensors")),
        json.loads((run / "results.json").read_text()),
    )


def test_batch_one_with_accumulation_trains_like_one_batch(tmp_path):
    """Per-device batch 1 x accumulation 8 (window z0) == batch 8 x accumulation 1 (in-batch z0), same row order.

    Plain SGD without clipping: equal adapter weights after 3 steps mean equal summed gradients.
    """
    big, w_big, res_big = _run(tmp_path, "b8", 8, 1, "batch_mismatch")
    small, w_small, res_small = _run(tmp_path, "b1", 1, 8, None)  # default reference point -> window_mismatch
    assert res_big["z0_estimator"] == "batch_mismatch" and res_small["z0_estimator"] == "window_mismatch"
    assert res_big["z0_rows_per_estimate"] == 8 and res_small["z0_rows_per_estimate"] == 8
    assert len(big) == len(small) == 3
    for a, b in zip(big, small):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5, abs=1e-7)
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-4, abs=1e-7)
        assert b["kl"] == pytest.approx(a["kl"], rel=1e-4, abs=1e-7)  # z0 averaged over the micro-batches' logs
    # the case means something: the adapter moved and z0 was non-zero after the first step
    assert any(r["kl"] > 1e-6 for r in big[1:])
    assert not math.isclose(big[0]["loss"], big[-1]["loss"], rel_tol=1e-6)
    assert w_big.keys() == w_small.keys()
    for k in w_big:
        torch.testing.assert_close(w_small[k], w_big[k], rtol=1e-4, atol=1e-6)


def test_cli_refuses_batch_one_without_a_window(tmp_path, capsys):
    data = write_jsonl(tmp_path / "train.jsonl", learnable_unpaired(4, seed=3))
    cfg = write_config(tmp_path / "run.yaml", data={"train_file": str(data)}, training={"batch_size": 1})
    assert main(["train", str(cfg), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "window_mismatch" in err and "batch_size" in err
