"""Every example YAML loads and validates, names data that exists and fits a CPU; no model is loaded."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from prospect.config.loader import ConfigWarning, load_config
from prospect.losses import build_loss
from prospect.recipes.preparation import paired_kto_weights, resolve_weights

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
# Accelerate launcher configs (examples/accelerate/) are not Prospect configs: tests/test_distributed.py checks them.
ALL_YAML = sorted(
    p for p in EXAMPLES.rglob("*.yaml") if not {"data", "accelerate"} & set(p.relative_to(EXAMPLES).parts)
)

# The per-method and per-seed-layout examples (issue 4): file -> expected method.
METHOD_EXAMPLES = {
    "kto.yaml": "kto",
    "kto_prospect.yaml": "kto",
    "dpo.yaml": "dpo",
    "ipo.yaml": "ipo",
    "dpo_sigmoid_sft.yaml": "dpo",
    "factual_dpo.yaml": "factual_dpo",
    "dpo_kto.yaml": "dpo_kto",
    "orpo.yaml": "orpo",
    "simpo.yaml": "simpo",
    "cpo.yaml": "cpo",
    "seed003_track_a_extended_dpo.yaml": "dpo",
    "seed003_track_b_kto_regularized.yaml": "dpo_kto",
    "seed003_track_c_scaleup.yaml": "dpo",
    "seed004_original_dpo.yaml": "dpo",
    "seed004_factual_dpo.yaml": "factual_dpo",
}


class _Row:
    """A training record as resolve_weights sees it (only the label is read)."""

    def __init__(self, label: bool) -> None:
        self.label = label


def _load(path: Path):
    return load_config(str(path))


def test_every_method_example_exists():
    missing = [name for name in METHOD_EXAMPLES if not (EXAMPLES / name).is_file()]
    assert not missing


@pytest.mark.filterwarnings("ignore::prospect.config.loader.ConfigWarning")  # seed files keep their no-op keys
@pytest.mark.parametrize("path", ALL_YAML, ids=[str(p.relative_to(EXAMPLES)) for p in ALL_YAML])
def test_example_loads_and_validates(path):
    cfg = _load(path)
    # the loss named by the config can be built (loss names and weights agree)
    build_loss(
        resolve_weights(cfg, [_Row(True)] * 3 + [_Row(False)])[0]
        if cfg.method.name == "kto"
        else paired_kto_weights(cfg, 4)
    )
    assert cfg.method.name in ("kto", "dpo", "ipo", "factual_dpo", "dpo_kto", "orpo", "simpo", "cpo")


@pytest.mark.parametrize("name", sorted(METHOD_EXAMPLES))
def test_method_example_runs_here(name):
    """Bundled model and data, sizes a 2-core CPU can train, and no ignored or ineffective keys."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConfigWarning)
        cfg = _load(EXAMPLES / name)
    assert cfg.method.name == METHOD_EXAMPLES[name]
    assert cfg.model.name == "smollm2-135m-instruct"
    for f in (cfg.data.train_file, cfg.data.validation_file):
        assert f and (ROOT / f).is_file(), f
        assert f.startswith("examples/data/")
    assert cfg.effective_max_length <= 512
    assert cfg.training.max_steps > 0 or cfg.training.num_epochs <= 1
    assert cfg.training.batch_size * cfg.training.gradient_accumulation_steps <= 16
    assert not cfg.logging.report_to and not cfg.logging.use_wandb  # no network
    assert not cfg.optimization.use_quantization  # the examples train in float32; QLoRA is opt-in
    assert cfg.optimization.use_lora


def test_method_specific_settings():
    kto = _load(EXAMPLES / "kto.yaml")
    assert kto.kto.loss_type == "kto" and kto.kto.desirable_weight == "auto"
    assert kto.data.train_file.endswith("kto_train.jsonl")
    pro = _load(EXAMPLES / "kto_prospect.yaml")
    assert pro.kto.loss_type == "prospect"
    assert (pro.kto.kto_alpha, pro.kto.kto_beta_s, pro.kto.kto_gamma, pro.kto.kto_lambda) == (1.0, 1.0, 0.88, 2.25)
    assert _load(EXAMPLES / "dpo.yaml").dpo.loss_type == "sigmoid"
    mix = _load(EXAMPLES / "dpo_sigmoid_sft.yaml")
    assert mix.dpo.loss_type == ["sigmoid", "sft"] and mix.dpo.loss_weights == [1.0, 0.5]
    assert type(build_loss(mix)).__name__ == "CombinedPairedLoss"
    assert type(build_loss(_load(EXAMPLES / "ipo.yaml"))).__name__ == "IPOLoss"
    fact = _load(EXAMPLES / "factual_dpo.yaml")
    assert fact.method.delta > 0
    assert type(build_loss(_load(EXAMPLES / "orpo.yaml"))).__name__ == "ORPOLoss"
    simpo = _load(EXAMPLES / "simpo.yaml")
    assert type(build_loss(simpo)).__name__ == "SimPOLoss" and simpo.dpo.beta == 2.0 and simpo.method.simpo_gamma == 0.5
    cpo = build_loss(_load(EXAMPLES / "cpo.yaml"))
    assert type(cpo).__name__ == "CPOLoss" and cpo.cpo_alpha == 1.0 and cpo.loss_type == "sigmoid"
    hybrid = _load(EXAMPLES / "dpo_kto.yaml")
    assert hybrid.method.kto_weight == 0.1 and hybrid.data.train_file.endswith("dpo_train.jsonl")


def test_seed003_layouts_map_to_canonical_keys():
    a = _load(EXAMPLES / "seed003_track_a_extended_dpo.yaml")
    assert a.dpo.curriculum == "reference_margin" and a.dpo.precompute_ref_log_probs
    assert a.optimization.lora_rank == 16 and a.optimization.lora_alpha == 32
    assert a.optimization.lora_target_modules == ["q_proj", "v_proj"]
    assert a.data.train_file == "examples/data/dpo_train.jsonl" and a.dpo.beta == 0.1
    assert a.evaluation.eval_interval == 10 and a.evaluation.save_best_only
    b = _load(EXAMPLES / "seed003_track_b_kto_regularized.yaml")
    assert b.method.name == "dpo_kto" and b.method.kto_weight == 0.1  # training.kto_lambda (seed 003 meaning)
    assert b.kto.kto_lambda == 2.25  # seed 000's loss aversion untouched
    assert b.sweep == {"method.kto_weight": [0.01, 0.1, 0.5]}
    # the seed's command-line override lands on the DPO+KTO weight
    assert (
        load_config(
            str(EXAMPLES / "seed003_track_b_kto_regularized.yaml"), shortcuts={"lambda": "0.5"}
        ).method.kto_weight
        == 0.5
    )
    c = _load(EXAMPLES / "seed003_track_c_scaleup.yaml")
    assert c.optimization.use_gradient_checkpointing and c.method.name == "dpo"


@pytest.mark.parametrize("name", ["seed004_original_dpo.yaml", "seed004_factual_dpo.yaml"])
def test_seed004_keeps_its_hyperparameters(name):
    cfg = _load(EXAMPLES / name)
    t, o = cfg.training, cfg.optimization
    assert t.learning_rate == 1.8e-6 and t.warmup_ratio == 0.25 and t.seed == 3407
    assert t.batch_size == 2 and t.save_steps == 100
    assert (o.lora_rank, o.lora_alpha, o.lora_dropout) == (32, 64, 0.05)
    assert cfg.dpo.beta == 0.1
    assert cfg.model.max_length == 256  # scaled from 2048
    assert cfg.logging.wandb_project == "aixpert"
    if name == "seed004_factual_dpo.yaml":
        assert cfg.method.delta == 10 and cfg.logging.run_prefix == "FactualDPO"
        assert t.run_name == "smollm2-135m_delta10"
    else:
        assert t.run_name == "smollm2-135m_OriginalDPO"
