"""Config layer: seed YAML files, aliases, overrides, shortcuts, errors, dumping, secrets.

Expected values are read off the YAML text by hand (the seed files are the seeds' own
blocks); error messages are checked for file:line, key and suggestion.
"""

from __future__ import annotations

import re
import textwrap
import warnings
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prospect.config import (
    ConfigWarning,
    DPOConfig,
    KTOConfig,
    KTODataConfig,
    KTOSpecificConfig,
    RunConfig,
    apply_overrides,
    config_with_overrides,
    dump_config,
    load_config,
    loads_config,
    parse_cli_shortcuts,
    resolve_shortcuts,
    valid_keys,
)
from prospect.config.aliases import DPO_LOSS_TYPES, KTO_LOSS_TYPES, METHOD_NAMES, alias_table_markdown
from prospect.config.loader import REDACTED
from prospect.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
SEEDS = ROOT / "examples" / "seeds"
SEED000_TEXT = Path("/work/shared/seeds/000_3e98dc1b17281f6d.txt")


def write(tmp_path: Path, text: str, name: str = "my.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def error_of(path, overrides=(), **kw) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path, list(overrides), **kw)
    return str(info.value)


# --- seed 000 files -------------------------------------------------------------------
def test_seed000_full_example_loads_as_written():
    c = KTOConfig.from_yaml(str(SEEDS / "seed000_full.yaml"))
    assert isinstance(c, KTOConfig)
    assert c.method.name == "kto"
    assert (c.model.name, c.model.max_length) == ("Qwen/Qwen-7B", 2048)
    assert c.training.learning_rate == 1.0e-6
    assert (c.training.batch_size, c.training.gradient_accumulation_steps, c.training.warmup_steps) == (4, 4, 100)
    assert c.data.validation_file == "data/kto_validation.jsonl"
    assert c.data.balance_labels is True
    assert c.data.label_mapping == {"desirable": 1, "undesirable": 0, "good": 1, "bad": 0}
    assert (c.kto.kto_alpha, c.kto.kto_beta_s, c.kto.kto_gamma, c.kto.kto_lambda) == (1.0, 1.0, 0.88, 2.25)
    assert (c.kto.max_length, c.kto.max_prompt_length) == (2048, 1024)
    assert c.optimization.use_quantization and c.optimization.bf16 and c.optimization.lora_rank == 16
    assert c.logging.use_wandb and c.logging.wandb_project == "arabic-qwen-kto"


def test_seed000_quick_start_reads_1e_minus_6_as_a_number():
    # PyYAML (YAML 1.1) reads `1e-6` as a string; the seed means the number.
    c = KTOConfig.from_yaml(str(SEEDS / "seed000_quick_start.yaml"))
    assert isinstance(c.training.learning_rate, float) and c.training.learning_rate == 1e-6
    assert c.model.name == "Qwen/Qwen-1_8B" and c.model.max_length == 1024
    assert (c.training.batch_size, c.training.gradient_accumulation_steps) == (2, 8)
    assert (c.data.train_file, c.data.max_samples) == ("data/kto_train_small.jsonl", 1000)
    assert c.kto.reference_free is True and c.kto.kto_lambda == 2.0
    assert c.optimization.lora_rank == 8


def test_seed000_production_loads():
    c = KTOConfig.from_yaml(str(SEEDS / "seed000_production.yaml"))
    assert c.training.learning_rate == 5e-7
    assert (c.kto.desirable_weight, c.kto.undesirable_weight) == (1.2, 0.8)
    assert (c.kto.kto_lambda, c.kto.kto_gamma, c.kto.use_weighting) == (2.5, 0.9, True)
    assert c.optimization.use_gradient_checkpointing is True
    assert c.logging.wandb_project == "arabic-qwen-kto-prod"


@pytest.mark.skipif(not SEED000_TEXT.exists(), reason="seed documents not present")
def test_seed000_files_are_verbatim_copies_of_the_seed_blocks():
    blocks = re.findall(r"```yaml\n(.*?)```", SEED000_TEXT.read_text(encoding="utf-8"), re.S)
    files = ["seed000_full.yaml", "seed000_quick_start.yaml", "seed000_production.yaml"]
    assert [(SEEDS / f).read_text(encoding="utf-8") for f in files] == blocks


def test_python_api_names_of_seed000(tmp_path):
    c = KTOConfig()
    assert c.kto.beta == 0.1 and c.kto.kto_lambda == 2.25
    kto = KTOSpecificConfig(
        beta=0.2, desirable_weight=1.2, undesirable_weight=0.8, kto_lambda=2.5, kto_gamma=0.9, use_weighting=True
    )
    config = KTOConfig(kto=kto, data=KTODataConfig(train_file="d.jsonl"))
    text = config.to_yaml(str(tmp_path / "my_kto_config.yaml"))
    assert (tmp_path / "my_kto_config.yaml").read_text(encoding="utf-8") == text
    back = KTOConfig.from_yaml(str(tmp_path / "my_kto_config.yaml"))
    assert back == config and back.kto.kto_lambda == 2.5 and back.data.train_file == "d.jsonl"


# --- round trip and determinism -------------------------------------------------------
@pytest.mark.parametrize(
    "name", ["seed000_full.yaml", "seed000_quick_start.yaml", "seed000_production.yaml", "seed003_schema.yaml"]
)
def test_round_trip_and_deterministic_dump(tmp_path, name):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConfigWarning)
        c = KTOConfig.from_yaml(str(SEEDS / name))
    text = c.to_yaml(str(tmp_path / "resolved.yaml"))
    again = KTOConfig.from_yaml(str(tmp_path / "resolved.yaml"))
    assert again == c
    assert again.to_yaml() == text  # same config, same text
    assert yaml.safe_load(text)["method"]["name"] == c.method.name  # plain YAML readers agree


def test_round_trip_keeps_types_of_tricky_values(tmp_path):
    c = DPOConfig(
        training={"run_name": "1e5", "learning_rate": 3e-7},
        model={"model_init_kwargs": {"rope": (1, 2), "label": "yes"}},
        sweep={"dpo.beta": [0.1, 0.5]},
    )
    back = loads_config(dump_config(c), config_cls=DPOConfig)
    assert back.training.run_name == "1e5"  # a string that looks like a float stays a string
    assert back.model.model_init_kwargs == {"rope": [1, 2], "label": "yes"}
    assert back.method.name == "dpo" and back.sweep == {"dpo.beta": [0.1, 0.5]}


def test_dump_is_schema_ordered_yaml(tmp_path):
    text = dump_config(RunConfig())
    assert list(yaml.safe_load(text)) == list(RunConfig.model_fields)


# --- overrides --------------------------------------------------------------------------
def test_set_overrides_every_form(tmp_path):
    path = write(
        tmp_path,
        """
        model:
          name: tiny
        kto:
          beta: 0.1
          kto_lambda: 3.0
        models:
          - id: a/b
            short: ab
    """,
    )
    c = load_config(
        path,
        [
            "kto.beta=0.2",
            "training.learning_rate=5e-6",
            "optimization.lora_target_modules=[q_proj, v_proj]",
            "model.max_length=null",
            "training.lr=4e-6",  # alias in an override key; later one wins
            "model.lora_config.r=4",  # seed 003 nested alias
            "kto={desirable_weight: 1.5}",  # section value merges, keeps kto_lambda
            "models.0.short=abc",
            "training.run_name=@odd",  # not valid YAML: kept as text
            "data.train_file=a=b.jsonl",  # split at the first '='
        ],
    )
    assert c.kto.beta == 0.2 and c.kto.desirable_weight == 1.5 and c.kto.kto_lambda == 3.0
    assert c.training.learning_rate == 4e-6
    assert c.optimization.lora_target_modules == ["q_proj", "v_proj"]
    assert c.model.max_length is None and c.optimization.lora_rank == 4
    assert c.models[0].short == "abc" and c.models[0].id == "a/b"
    assert c.training.run_name == "@odd" and c.data.train_file == "a=b.jsonl"


def test_override_method_decides_where_training_beta_lands(tmp_path):
    path = write(
        tmp_path,
        """
        training:
          beta: 0.5
    """,
    )
    assert load_config(path).kto.beta == 0.5
    c = load_config(path, ["method=dpo"])
    assert c.method.name == "dpo" and c.dpo.beta == 0.5 and c.kto.beta == 0.1


def test_apply_overrides_on_a_dict_and_config_with_overrides():
    base = RunConfig().model_dump()
    out = apply_overrides(base, ["kto.beta=0.3", "model.base_model=m"])
    assert out["kto"]["beta"] == 0.3 and out["model"]["name"] == "m"
    assert base["kto"]["beta"] == 0.1  # input untouched
    c = config_with_overrides(DPOConfig(), ["method.delta=10", "method.name=factual_dpo"])
    assert isinstance(c, DPOConfig) and c.method.delta == 10.0 and c.method.name == "factual_dpo"
    with pytest.raises(ConfigError, match=r"--set dpo\.bta=1: unknown key \(did you mean 'dpo\.beta'\?\)"):
        config_with_overrides(DPOConfig(), ["dpo.bta=1"])


# --- shortcuts ------------------------------------------------------------------------
def test_cli_shortcuts_map_to_dotted_overrides():
    argv = [
        "--lr",
        "5e-5",
        "--beta=0.3",
        "--delta",
        "10",
        "--model",
        "m/x",
        "--output_dir",
        "out",
        "--seed",
        "7",
        "--max_steps",
        "3",
        "--batch_size",
        "2",
        "--set",
        "kto.kto_gamma=0.7",
    ]
    assert parse_cli_shortcuts(argv, "dpo") == [
        "training.learning_rate=5e-5",
        "dpo.beta=0.3",
        "method.delta=10",
        "model.name=m/x",
        "training.output_dir=out",
        "training.seed=7",
        "training.max_steps=3",
        "training.batch_size=2",
        "kto.kto_gamma=0.7",
    ]
    assert parse_cli_shortcuts({"beta": 0.3, "lr": None}, "kto") == ["kto.beta=0.3"]  # argparse None skipped


def test_kto_lambda_shortcut_depends_on_method():
    assert parse_cli_shortcuts(["--kto_lambda", "0.05"], "dpo_kto") == ["method.kto_weight=0.05"]
    assert parse_cli_shortcuts(["--lambda", "0.1"], "dpo_kto") == ["method.kto_weight=0.1"]
    assert parse_cli_shortcuts(["--kto_lambda", "2.5"], "kto") == ["kto.kto_lambda=2.5"]
    assert parse_cli_shortcuts(["--method", "dpo_kto", "--lambda", "0.1"]) == [
        "method.name=dpo_kto",
        "method.kto_weight=0.1",
    ]
    with pytest.warns(ConfigWarning, match="no effect with method dpo"):
        assert parse_cli_shortcuts(["--kto_lambda", "2.5"], "dpo") == ["kto.kto_lambda=2.5"]


def test_shortcuts_applied_when_loading(tmp_path):
    path = write(
        tmp_path,
        """
        method: dpo_kto
        training:
          learning_rate: 1.0e-6
    """,
    )
    c = load_config(path, ["training.learning_rate=2e-6"], shortcuts={"lr": "5e-5", "lambda": "0.05", "beta": 0.2})
    assert c.training.learning_rate == 5e-5  # shortcuts after --set
    assert c.method.kto_weight == 0.05 and c.kto.kto_lambda == 2.25
    assert c.dpo.beta == 0.2 and c.kto.beta == 0.1
    assert resolve_shortcuts(c, {"kto_lambda": "0.3"}) == ["method.kto_weight=0.3"]
    assert resolve_shortcuts(KTOConfig(), {"kto_lambda": "0.3"}) == ["kto.kto_lambda=0.3"]


def test_bad_shortcuts_raise_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"--lrr: unknown option \(did you mean --lr\?\)"):
        parse_cli_shortcuts(["--lrr", "1"])
    with pytest.raises(ConfigError, match="--config names the config file"):
        parse_cli_shortcuts({"config": "x.yaml"})
    with pytest.raises(ConfigError, match="--lr: missing value"):
        parse_cli_shortcuts(["--lr"])
    path = write(tmp_path, "model: {name: m}\n")
    assert error_of(path, shortcuts={"lr": "fast"}) == (
        "--lr fast: training.learning_rate: input should be a valid number, got 'fast'"
    )


# --- errors ---------------------------------------------------------------------------
def test_misspelt_key_names_file_line_key_and_suggestion(tmp_path):
    path = write(
        tmp_path,
        """
        model:
          name: tiny
        kto:
          beta: 0.1
          betta: 0.2
    """,
    )
    assert error_of(path) == f"{path}:5: kto.betta: unknown key (did you mean 'kto.beta'?)"


def test_wrong_type_names_file_line_key_and_value(tmp_path):
    path = write(
        tmp_path,
        """
        model:
          name: tiny
        training:
          batch_size: 2
          learning_rate: fast
    """,
    )
    assert error_of(path) == f"{path}:5: training.learning_rate: input should be a valid number, got 'fast'"


def test_several_errors_one_line_each_in_file_order(tmp_path):
    path = write(
        tmp_path,
        """
        optimisation:
          lora_rank: 3
        kto:
          desirable_weight: abc
        training:
          lora_rank: 8
    """,
    )
    assert error_of(path).splitlines() == [
        f"{path}:1: optimisation: unknown key (did you mean 'optimization'?)",
        f"{path}:4: kto.desirable_weight: input should be a valid number or 'auto', got 'abc'",
        f"{path}:6: training.lora_rank: unknown key (did you mean 'optimization.lora_rank'?)",
    ]


def test_override_errors_name_the_option(tmp_path):
    path = write(tmp_path, "model: {name: m}\n")
    assert error_of(path, ["kto.betta=0.2"]) == "--set kto.betta=0.2: unknown key (did you mean 'kto.beta'?)"
    assert error_of(path, ["training.lr=x"]) == (
        "--set training.lr=x: training.lr (= training.learning_rate): input should be a valid number, got 'x'"
    )
    assert "expected KEY=VALUE" in error_of(path, ["kto.beta"])
    assert "expected KEY=VALUE" in error_of(path, ["kto..beta=1"])


def test_alias_errors_point_at_the_seed_key(tmp_path):
    path = write(
        tmp_path,
        """
        model:
          lora_config:
            r: many
    """,
    )
    assert error_of(path) == (
        f"{path}:3: model.lora_config.r (= optimization.lora_rank): input should be a valid integer, got 'many'"
    )


@pytest.mark.parametrize(
    "text, expected",
    [
        ("", "the config is empty"),
        ("- a\n- b\n", "the top level must be a mapping of sections"),
        ("model:\n  name: [x\n", "expected ',' or ']' (while parsing a flow sequence started at line 2)"),
        (
            "a: 1\n---\nb: 2\n",
            ":2: invalid YAML: expected a single document in the stream (at line 1), but found another document",
        ),
        ("model: !!python/object:os.system {}\n", ":1: invalid YAML: could not determine a constructor"),
        ("kto:\n  beta: 1\nkto:\n  beta: 2\n", ":3: duplicate key 'kto' (first at line 1)"),
        (
            "method: ktoo\n",
            ":1: method: unknown method 'ktoo' (did you mean 'kto'?); valid methods: "
            "kto, dpo, ipo, factual_dpo, dpo_kto, orpo, simpo, cpo",
        ),
        ("training:\n  method: sft\n", "unknown method 'sft'"),
        ("kto:\n  loss_type: ktoo\n", ":2: kto.loss_type: unknown KTO loss type 'ktoo' (did you mean 'kto'?)"),
        ("dpo:\n  loss_type: [sigmoid, hinj]\n", "unknown DPO loss type 'hinj' (did you mean 'hinge'?)"),
        ("dpo:\n  loss_type: [sigmoid, sft]\n  loss_weights: [1.0]\n", ":3: dpo.loss_weights: 1 weights for 2"),
        ("dpo:\n  loss_weights: [1.0, 2.0]\n", "2 weights for 1 loss types"),
        ("model:\n  name: a\n  base_model: b\n", ":3: model.base_model: conflicts with model.name"),
        ("sweep:\n  kto.betta: [0.1]\n", ":2: sweep.kto.betta: unknown key in sweep (did you mean 'kto.beta'?)"),
        ("sweep:\n  kto.beta: [0.1, -1]\n", "value 1 (-1): input should be greater than 0"),
        ("original_dpo:\n  hyperparams: {}\n", ":1: original_dpo: unknown key: seed 004 keeps several runs"),
        (
            "model:\n  lora_config:\n    bias: none\n",
            ":3: model.lora_config.bias: unknown key in the model.lora_config",
        ),
        ("models:\n  - short: x\n", ":2: models.0.id: required key missing"),
    ],
)
def test_config_errors(tmp_path, text, expected):
    path = tmp_path / "c.yaml"
    path.write_text(text, encoding="utf-8")
    message = error_of(path)
    assert expected in message
    assert message.startswith(str(path))
    assert ConfigError(message).exit_code == 2


def test_missing_unreadable_and_binary_files(tmp_path):
    assert error_of(tmp_path / "nope.yaml") == f"{tmp_path / 'nope.yaml'}: config file not found"
    assert "is a directory" in error_of(tmp_path)
    (tmp_path / "bin.yaml").write_bytes(b"\xff\xfe\x00bad")
    assert "not UTF-8" in error_of(tmp_path / "bin.yaml")


# --- aliases --------------------------------------------------------------------------
def test_seed003_schema_block_maps_to_canonical_keys():
    with pytest.warns(ConfigWarning) as record:
        c = load_config(str(SEEDS / "seed003_schema.yaml"))
    assert c.method.name == "dpo"
    assert c.model.name == "Qwen/Qwen2.5-0.5B-Instruct"
    assert (c.optimization.lora_rank, c.optimization.lora_alpha) == (16, 32)
    assert c.optimization.lora_target_modules == ["q_proj", "v_proj"]
    assert c.data.train_file == "data/preferences_v14_100pairs.jsonl"
    assert c.dpo.beta == 0.1
    assert c.dpo.reference_model_name == "checkpoints/v12_lora/adapter_model" and c.kto.reference_model_name is None
    assert c.method.kto_weight == 0.1 and c.kto.kto_lambda == 2.25  # seed 003 meaning, not loss aversion
    assert c.evaluation.metrics == ["spiral_score", "perplexity", "subtlety"]
    assert c.evaluation.eval_interval == 100 and c.evaluation.save_best_only is True
    messages = [str(w.message) for w in record]
    assert any(":3: model.use_phase_attention: ignored" in m for m in messages)
    assert any(
        ":17: training.kto_lambda: sets method.kto_weight, which has no effect with method dpo" in m for m in messages
    )


def test_seed003_track_b_with_dpo_kto_has_no_kto_lambda_warning():
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        c = load_config(str(SEEDS / "seed003_schema.yaml"), ["training.method=dpo_kto", "training.kto_lambda=0.5"])
    assert c.method.name == "dpo_kto" and c.method.kto_weight == 0.5
    assert not any("kto_lambda" in str(w.message) for w in record)


def test_kto_lambda_means_loss_aversion_in_kto_and_kto_weight_in_training(tmp_path):
    c = loads_config("kto:\n  kto_lambda: 3.0\n")
    assert c.kto.kto_lambda == 3.0 and c.method.kto_weight == 0.1
    c = loads_config("method: dpo_kto\ntraining:\n  kto_lambda: 0.01\n")
    assert c.method.kto_weight == 0.01 and c.kto.kto_lambda == 2.25
    with pytest.raises(ConfigError, match="ambiguous.*kto.kto_lambda.*method.kto_weight"):
        loads_config("kto_lambda: 0.1\n")
    with pytest.raises(ConfigError, match=r"--set lambda=0.1: 'lambda' is ambiguous"):
        loads_config("model: {name: m}\n", ["lambda=0.1"])


def test_seed004_blocks_map_to_canonical_keys(tmp_path):
    path = write(
        tmp_path,
        """
        models:
          - id: "google/gemma-2-9b-it"
            short: "gemma2-9b"
          - id: "meta-llama/Llama-3.2-1B-Instruct"
            short: "llama3.2-1b"
        paths:
          train_file: "train_final_flipped.jsonl"
          eval_file:  "eval_final_flipped.jsonl"
          output_root: "Models"
        hyperparams:
          max_seq_length: 2048
          load_in_4bit: true
          lora_r: 32
          lora_alpha: 64
          lora_dropout: 0.05
          batch_size: 2
          grad_accumulation: 16
          num_epochs: 3
          learning_rate: 1.8e-6
          warmup_ratio: 0.25
          beta: 0.1
          save_steps: 100
          logging_steps: 20
          seed: 3407
        deltas: [0, 2, 4, 6, 8, 10, 20, 30, 50, 100]
        wandb:
          project: "aixpert"
          entity: "vector-institute-aieng"
          run_prefix: "FactualDPO"
    """,
    )
    c = load_config(path)
    assert c.method.name == "factual_dpo"  # implied by deltas
    assert c.sweep == {"method.delta": [0, 2, 4, 6, 8, 10, 20, 30, 50, 100]}
    assert [m.short for m in c.models] == ["gemma2-9b", "llama3.2-1b"]
    assert (c.data.train_file, c.data.validation_file, c.training.output_dir) == (
        "train_final_flipped.jsonl",
        "eval_final_flipped.jsonl",
        "Models",
    )
    assert c.model.max_length == 2048 and c.optimization.use_quantization is True
    assert (c.optimization.lora_rank, c.optimization.lora_alpha, c.optimization.lora_dropout) == (32, 64, 0.05)
    assert (c.training.batch_size, c.training.gradient_accumulation_steps, c.training.num_epochs) == (2, 16, 3)
    assert (c.training.learning_rate, c.training.warmup_ratio, c.training.seed) == (1.8e-6, 0.25, 3407)
    assert (c.training.save_steps, c.training.logging_steps, c.dpo.beta) == (100, 20, 0.1)
    assert (c.logging.wandb_project, c.logging.entity, c.logging.run_prefix) == (
        "aixpert",
        "vector-institute-aieng",
        "FactualDPO",
    )
    # an explicit method wins over the one implied by deltas
    assert load_config(path, ["method.name=dpo"]).method.name == "dpo"


def test_other_aliases(tmp_path):
    c = loads_config("""
model: {model_name: m, max_seq_length: 512}
training: {per_device_train_batch_size: 3, num_train_epochs: 2, grad_accumulation: 5, lr: 2.0e-5}
optimization: {lora_r: 4, target_modules: [q_proj], load_in_4bit: true, gradient_checkpointing: true}
dpo: {max_completion_length: 300}
""")
    assert (c.model.name, c.model.max_length) == ("m", 512)
    assert (c.training.batch_size, c.training.num_epochs, c.training.gradient_accumulation_steps) == (3, 2, 5)
    assert c.training.learning_rate == 2e-5
    assert (c.optimization.lora_rank, c.optimization.lora_target_modules) == (4, ["q_proj"])
    assert c.optimization.use_quantization and c.optimization.use_gradient_checkpointing
    assert c.dpo.max_target_length == 300
    # same value under alias and canonical key is fine
    assert loads_config("model: {name: m, id: m}\n").model.name == "m"


def test_alias_docs_match_the_table():
    assert (ROOT / "docs" / "config_aliases.md").read_text(encoding="utf-8") == alias_table_markdown()


def test_name_lists():
    assert set(METHOD_NAMES) == {"kto", "dpo", "ipo", "factual_dpo", "dpo_kto", "orpo", "simpo", "cpo"}
    assert KTO_LOSS_TYPES == ("kto", "prospect", "apo_zero_unpaired")
    assert len(DPO_LOSS_TYPES) == 15 and "sigmoid_norm" in DPO_LOSS_TYPES
    keys = valid_keys()
    assert "kto.beta" in keys and "optimization.lora_rank" in keys and "models" in keys


# --- secrets --------------------------------------------------------------------------
def test_secrets_redacted_in_dumps(tmp_path):
    hf = "hf_" + "a1B2c3D4" * 5
    sha = "0123456789abcdef0123456789abcdef01234567"
    c = RunConfig(
        model={
            "name": "m",
            "revision": sha,
            "model_init_kwargs": {
                "token": "plain-secret",
                "HFApiKey": "x",
                "use_auth_token": True,
                "note": f"key {hf}",
            },
        },
        logging={"mlflow_tracking_uri": "https://bob:pa55word@mlflow.example.com/", "wandb_project": sha},
        data={"cache_dir": hf},
    )
    text = dump_config(c, tmp_path / "config.yaml")
    assert (tmp_path / "config.yaml").read_text(encoding="utf-8") == text
    for secret in (hf, "plain-secret", "pa55word"):
        assert secret not in text
    back = yaml.safe_load(text)
    kwargs = back["model"]["model_init_kwargs"]
    assert kwargs["token"] == REDACTED and kwargs["HFApiKey"] == REDACTED
    assert kwargs["use_auth_token"] is True  # a flag, not a secret
    assert kwargs["note"] == f"key {REDACTED}"
    assert back["logging"]["mlflow_tracking_uri"] == f"https://bob:{REDACTED}@mlflow.example.com/"
    assert back["logging"]["wandb_project"] == REDACTED  # 40 hex characters: a W&B key
    assert back["model"]["revision"] == sha  # ... but a commit id under `revision`
    assert back["data"]["cache_dir"] == REDACTED
    # names that merely contain "token" are kept
    assert back["evaluation"]["max_new_tokens"] == 48 and back["data"]["add_special_tokens"] is True
    assert "tokenizer_name" in back["model"]


# --- property: only ConfigError, never another exception ------------------------------
_KEYS = st.sampled_from(
    [
        "model",
        "training",
        "kto",
        "dpo",
        "method",
        "data",
        "optimization",
        "logging",
        "evaluation",
        "models",
        "sweep",
        "deltas",
        "wandb",
        "hyperparams",
        "paths",
        "kto_lambda",
        "name",
        "beta",
        "lr",
        "learning_rate",
        "lora_config",
        "r",
        "base_model",
        "loss_type",
        "loss_weights",
        "label_mapping",
        "max_completion_length",
        "id",
        "kto.beta",
        "method.delta",
        "<<",
        "1",
        "true",
        "null",
    ]
)
_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**20), 10**20),
    st.floats(allow_nan=True),
    st.sampled_from(["kto", "dpo", "dpo_kto", "sigmoid", "auto", "1e-6", "x", ""]),
    st.text(max_size=8),
)
_TREES = st.recursive(
    _SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.one_of(_KEYS, st.text(max_size=5)), children, max_size=5)
    ),
    max_leaves=20,
)
_OVERRIDES = st.lists(
    st.one_of(
        st.builds(
            lambda k, v: f"{k}={v}",
            st.lists(_KEYS, min_size=1, max_size=3).map(".".join),
            st.one_of(st.text(max_size=10), st.sampled_from(["0.2", "[a, b]", "{beta: 1}", "null", "5e-6", "dpo"])),
        ),
        st.text(max_size=15),
    ),
    max_size=3,
)


def _loads_or_config_error(text: str, overrides: list[str]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            config = loads_config(text, overrides)
        except ConfigError as exc:
            assert str(exc)
            return
    assert isinstance(config, RunConfig)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=st.text(max_size=120), overrides=_OVERRIDES)
def test_arbitrary_yaml_text_raises_only_config_error(text, overrides):
    _loads_or_config_error(text, overrides)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tree=st.dictionaries(_KEYS, _TREES, max_size=6), overrides=_OVERRIDES)
def test_arbitrary_config_trees_raise_only_config_error(tree, overrides):
    _loads_or_config_error(yaml.safe_dump(tree, allow_unicode=True), overrides)


@pytest.mark.parametrize(
    "text",
    [
        "a: &x [*x]\n",  # recursive structure
        "model: &m {name: x}\nkto: *m\n",
        "base: &b {beta: 0.3}\nkto:\n  <<: *b\n  kto_lambda: 2\n",
        "model:\n  name: 2020-02-30\n",  # timestamp that is not a date
        "\x00",
        "model: {name: m}\n" + "x: [" * 200 + "]" * 200 + "\n",
    ],
)
def test_edge_yaml_inputs_raise_only_config_error(text):
    _loads_or_config_error(text, [])


_VALID_OVERRIDES = [
    "kto.beta=0.3",
    "method.name=dpo",
    "method=dpo_kto",
    "training.beta=0.7",
    "training.run_name='1e3'",
    "model.model_init_kwargs={a: [1, 2.5, null, '1e5'], b: {c: true}}",
    "sweep={kto.beta: [0.1, 0.2]}",
    "deltas=[0, 2]",
    "data.label_mapping={ok: 1, nope: 0}",
    "optimization.lora_target_modules=[q, v]",
    "kto.desirable_weight=auto",
    "training.resume=true",
    "kto.max_completion_length=100",
    "data.validation_split_percentage=10",
    "logging.report_to=[tensorboard]",
    "model.revision=main",
    "training.learning_rate=1e-7",
    "models=[{id: a/b, short: ab}]",
    "dpo.loss_type=[sigmoid, sft]",
    "dpo.loss_weights=[0.5, 1]",
    "model.name=ünïcode/模型",
    "kto.kto_gamma=1",
    "training.max_steps=-1",
]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.sampled_from(_VALID_OVERRIDES), max_size=6))
def test_round_trip_property(overrides):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            config = loads_config("model: {name: m}\n", overrides)
        except ConfigError:  # e.g. loss_weights without the matching loss_type list
            return
    text = dump_config(config)
    assert loads_config(text) == config
    assert dump_config(loads_config(text)) == text


def test_unknown_key_in_a_list_item_suggests_indexed_key():
    with pytest.raises(ConfigError, match=r"<string>:2: models.0.idd: unknown key \(did you mean 'models.0.id'\?\)"):
        loads_config("models:\n  - idd: x\n")


def test_merge_keys_are_not_duplicates():
    c = loads_config("kto: &k\n  beta: 0.3\ndpo:\n  <<: *k\n  beta: 0.4\n")
    assert c.kto.beta == 0.3 and c.dpo.beta == 0.4
