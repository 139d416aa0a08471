"""What a loss needs decides the small-batch checks and the mismatched pass (asked of the loss object):

- dpo_kto at training.batch_size 1 is refused before any model loads (its KTO term's in-batch
  z0 would be the pair's own chosen reward), unless its reference point needs no in-batch pairs;
- kto.loss_type apo_zero_unpaired reads no z0: batch size 1 is accepted and the engine builds no
  mismatched (KL) pass; plain kto at batch 1 without a window is still refused.
"""

from __future__ import annotations

import pytest

from helpers import learnable_unpaired, write_config, write_jsonl
from prospect.cli import main
from prospect.config.schema import RunConfig
from prospect.engine.build import builds_mismatched
from prospect.errors import ConfigError
from prospect.losses import build_loss
from prospect.recipes.config import load_run_config
from prospect.recipes.preparation import check_reference_point, prepare
from prospect.recipes.training import add_reference, load_models, make_trainer, tokenize


def _pairs(n: int) -> list[dict]:
    return [{"prompt": f"Q{i}?", "chosen": f"Kind answer {i}.", "rejected": "Go away."} for i in range(n)]


def test_dpo_kto_batch_one_is_refused(tmp_path, capsys):
    data = write_jsonl(tmp_path / "pairs.jsonl", _pairs(6))
    cfg = write_config(
        tmp_path / "run.yaml", method="dpo_kto", data={"train_file": str(data)}, training={"batch_size": 1}
    )
    assert main(["train", str(cfg), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "dpo_kto" in err and "batch_size >= 2" in err and "Traceback" not in err
    assert not (tmp_path / "runs").exists()  # refused before the run directory (and any model)


@pytest.mark.parametrize(
    ("kto", "batch", "ok"),
    [
        ({"reference_point": "batch_mismatch"}, 1, False),
        ({"reference_point": "window_mismatch"}, 1, False),
        ({"reference_point": "running"}, 1, True),
        ({"reference_point": "zero"}, 1, True),
        ({"loss_type": "apo_zero_unpaired"}, 1, True),  # the KTO term reads no z0
        ({"reference_point": "batch_mismatch"}, 2, True),
    ],
)
def test_dpo_kto_small_batch_rule(kto, batch, ok):
    cfg = RunConfig(method="dpo_kto", kto=kto, training={"batch_size": batch, "gradient_accumulation_steps": 4})
    if ok:
        assert check_reference_point(cfg).training.batch_size == batch
    else:
        with pytest.raises(ConfigError, match="batch_size >= 2"):
            check_reference_point(cfg)


def test_auto_class_weights_do_not_block_the_check():
    cfg = RunConfig(method="dpo_kto", kto={"desirable_weight": "auto"}, training={"batch_size": 1})
    with pytest.raises(ConfigError, match="batch_size >= 2"):
        check_reference_point(cfg)


def test_unpaired_batch_one_rules():
    """kto at batch 1 without a window is refused; apo_zero_unpaired is not (it reads no z0)."""
    with pytest.raises(ConfigError, match="window_mismatch"):
        check_reference_point(RunConfig(method="kto", training={"batch_size": 1}))
    apo = RunConfig(method="kto", kto={"loss_type": "apo_zero_unpaired"}, training={"batch_size": 1})
    assert check_reference_point(apo).kto.reference_point == "batch_mismatch"  # untouched: no z0 at all


def test_builds_mismatched_asks_the_loss():
    for kto, expected in (
        ({"loss_type": "kto"}, True),
        ({"loss_type": "prospect"}, True),
        ({"loss_type": "kto", "reference_point": "zero"}, False),
        ({"loss_type": "apo_zero_unpaired"}, False),
    ):
        cfg = RunConfig(method="kto", kto=kto)
        assert builds_mismatched(cfg, build_loss(cfg)) is expected
    dk = RunConfig(method="dpo_kto", kto={"loss_type": "apo_zero_unpaired"})
    assert builds_mismatched(dk, build_loss(dk)) is False
    assert builds_mismatched(RunConfig(method="dpo"), build_loss(RunConfig(method="dpo"))) is False


def test_apo_zero_unpaired_at_batch_one_builds_no_mismatched_pass(tmp_path):
    """Through the recipe's own steps on the tiny model: prepare accepts batch 1, the trainer is the
    plain one without a z0 estimator, its batches carry no kl_* (mismatched) tensors, and a step trains."""
    data = write_jsonl(tmp_path / "train.jsonl", learnable_unpaired(4, seed=3))
    path = write_config(
        tmp_path / "run.yaml",
        data={"train_file": str(data), "validation_split_percentage": 0},
        kto={"loss_type": "apo_zero_unpaired"},
        training={"batch_size": 1, "max_steps": 1},
        evaluation={"num_generation_samples": 0},
    )
    run = prepare(load_run_config(str(path)))
    models = load_models(run)
    data_ = add_reference(run, models, tokenize(run, models))
    trainer = make_trainer(run, models, data_, quiet=True)
    assert type(trainer).__name__ == "PreferenceTrainer" and trainer.z0_estimator is None
    assert trainer.data_collator.build_mismatched is False
    batch = next(iter(trainer.get_train_dataloader()))
    assert not any(k.startswith("kl_") for k in batch)
    trainer.train()
    assert trainer.state.global_step == 1
