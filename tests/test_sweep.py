"""Sweeps: grid expansion and run names, the results table, and end-to-end sweeps on tiny models
(skip on re-run, a failed run recorded and retrained alone, an interrupted sweep resumed)."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest
import yaml

from prospect.config.loader import loads_config
from prospect.errors import ConfigError
from prospect.io import read_jsonl
from prospect.recipes.sweep.grid import expand_grid, format_value, name_keys, sweep_directory
from prospect.recipes.sweep.results import STATUS_DONE, STATUS_FAILED, STATUS_SKIPPED, run_row, write_tables

PAIRS = [
    ("What is two plus two?", "Two plus two is four.", "It is five.", 0, 1),
    ("Name a primary colour.", "Red is a primary colour.", "Green, always.", 0, 1),
    ("What is the capital of France?", "Paris is the capital of France.", "Lyon.", 0, 1),
    ("Say hello politely.", "Hello, nice to meet you.", "Go away.", 0, 0),
    ("How many legs has a cat?", "A cat has four legs.", "Cats have six legs.", 0, 1),
    ("What colour is the sky?", "The sky looks blue by day.", "It is green.", 1, 0),
]
VALIDATION = [
    ("What is three plus one?", "Three plus one is four.", "It is seven.", 0, 1),
    ("Greet a friend.", "Hi, good to see you!", "Whatever.", 0, 0),
]


def write_pairs(path: Path, rows: list[tuple]) -> Path:
    path.write_text(
        "".join(
            json.dumps({"prompt": p, "chosen": c, "rejected": r, "h_w": hw, "h_l": hl}) + "\n"
            for p, c, r, hw, hl in rows
        ),
        encoding="utf-8",
    )
    return path


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("prospect-cache")


@pytest.fixture
def env(cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROSPECT_CACHE", str(cache_dir))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")


def tiny_models() -> tuple[Path, Path]:
    from prospect.testing import tiny_model_dir

    return tiny_model_dir(seed=0), tiny_model_dir(seed=1)


def base_config(tmp: Path, **sections: dict) -> dict:
    cfg = {
        "method": {"name": "factual_dpo"},
        "model": {"name": "unused", "max_length": 64},
        "training": {
            "learning_rate": 1e-3,
            "batch_size": 2,
            "max_steps": 2,
            "logging_steps": 1,
            "save_steps": 2,
            "eval_steps": 2,
            "output_dir": str(tmp / "out"),
            "seed": 0,
        },
        "data": {"train_file": str(tmp / "train.jsonl"), "validation_file": str(tmp / "val.jsonl")},
        "dpo": {"beta": 0.1, "max_length": 64, "max_prompt_length": 32, "max_target_length": 32},
        "optimization": {
            "use_lora": True,
            "lora_rank": 4,
            "lora_dropout": 0.0,
            "lora_target_modules": ["q_proj", "v_proj"],
        },
        "evaluation": {
            "num_generation_samples": 1,
            "max_new_tokens": 4,
            "metric_for_best_model": "eval_rewards/accuracies",
        },
    }
    for k, v in sections.items():
        cfg[k] = {**cfg.get(k, {}), **v} if isinstance(v, dict) and isinstance(cfg.get(k), dict) else v
    return cfg


def load(d: dict):
    return loads_config(yaml.safe_dump(d, sort_keys=False), source="<test>")


# --------------------------------------------------------------------------- grid (no training)
def test_grid_names_values_and_directories(tmp_path: Path) -> None:
    cfg = load(
        base_config(
            tmp_path,
            models=[{"id": "org/Model-A", "short": "tiny-a"}, {"id": "/x/model-b"}],
            sweep={"method.delta": [0, 10], "dpo.beta": [0.05]},
        )
    )
    runs = expand_grid(cfg)
    # models outermost, grid in listed order; key = last dotted component; 10.0 -> "10"
    assert [r.name for r in runs] == [
        "tiny-a_factual_dpo_delta0_beta0.05",
        "tiny-a_factual_dpo_delta10_beta0.05",
        "model-b_factual_dpo_delta0_beta0.05",
        "model-b_factual_dpo_delta10_beta0.05",
    ]
    sweep_dir = tmp_path / "out" / "factual_dpo_delta_beta"
    assert sweep_directory(cfg) == sweep_dir.resolve()
    r = runs[1]
    assert r.cfg.method.delta == 10 and r.cfg.dpo.beta == 0.05 and r.cfg.model.name == "org/Model-A"
    assert r.cfg.training.output_dir == str(sweep_dir.resolve()) and r.cfg.training.run_name == r.name
    assert r.cfg.sweep is None and r.cfg.models is None  # each run's config.yaml describes one run
    assert r.run_dir == sweep_dir.resolve() / r.name
    assert runs[2].cfg.model.name == "/x/model-b" and runs[2].values == {"method.delta": 0, "dpo.beta": 0.05}
    # the base config is not modified
    assert cfg.method.delta == 0 and cfg.sweep == {"method.delta": [0, 10], "dpo.beta": [0.05]}


def test_grid_without_registry_uses_the_model_and_run_name_names_the_sweep(tmp_path: Path) -> None:
    cfg = load(
        base_config(
            tmp_path,
            model={"name": "HuggingFaceTB/SmolLM2-135M-Instruct"},
            training={"run_name": "my sweep"},
            sweep={"training.learning_rate": [1e-5, 2.5e-4]},
        )
    )
    runs = expand_grid(cfg)
    assert [r.name for r in runs] == [
        "smollm2-135m-instruct_factual_dpo_learning_rate1e-05",
        "smollm2-135m-instruct_factual_dpo_learning_rate0.00025",
    ]
    assert sweep_directory(cfg).name == "my-sweep"
    assert runs[1].cfg.training.learning_rate == 2.5e-4


def test_value_and_key_labels() -> None:
    assert [format_value(v) for v in (10.0, 0.05, 3, True, "cosine", [1, 2.0], None)] == [
        "10",
        "0.05",
        "3",
        "true",
        "cosine",
        "1-2",
        "none",
    ]
    assert name_keys(["kto.beta", "dpo.beta", "method.delta"]) == {
        "kto.beta": "kto-beta",
        "dpo.beta": "dpo-beta",
        "method.delta": "delta",
    }


def test_two_models_with_one_short_name_are_refused(tmp_path: Path) -> None:
    cfg = load(base_config(tmp_path, models=[{"id": "a/x", "short": "same"}, {"id": "b/y", "short": "same"}]))
    with pytest.raises(ConfigError, match="both be named 'same_factual_dpo'"):
        expand_grid(cfg)


def test_dry_run_lists_runs_and_trains_nothing(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from prospect.recipes.sweep import run_sweep

    cfg = load(base_config(tmp_path, models=[{"id": "a/x", "short": "xa"}], sweep={"method.delta": [0, 2]}))
    assert run_sweep(cfg, dry_run=True) == 0
    out = capsys.readouterr().out
    assert "xa_factual_dpo_delta0" in out and "xa_factual_dpo_delta2" in out and "2 to train" in out
    assert not (tmp_path / "out").exists()


def test_finished_run_with_a_changed_config_is_skipped_and_flagged(tmp_path: Path, count_trainings: list[str]) -> None:
    from prospect.recipes.sweep import run_sweep

    cfg = load(base_config(tmp_path, models=[{"id": "a/x", "short": "xa"}], sweep={"method.delta": [2]}))
    (run,) = expand_grid(cfg)
    run.run_dir.mkdir(parents=True)
    old = run.cfg.model_copy(update={"training": run.cfg.training.model_copy(update={"learning_rate": 0.5})})
    old.to_yaml(str(run.run_dir / "config.yaml"))
    (run.run_dir / "results.json").write_text(json.dumps({"global_step": 7, "metrics": {"eval_loss": 0.25}}))
    assert run_sweep(cfg) == 0
    assert count_trainings == []
    (row,) = csv.DictReader((sweep_directory(cfg) / "results.csv").open())
    assert row["status"] == STATUS_SKIPPED and row["config_changed"] == "training.learning_rate"
    assert row["global_step"] == "7" and row["eval_loss"] == "0.25"


# --------------------------------------------------------------------------- results table (no training)
def test_results_row_final_and_best_metrics(tmp_path: Path) -> None:
    run = tmp_path / "r1"
    run.mkdir()
    (run / "results.json").write_text(
        json.dumps(
            {
                "global_step": 30,
                "wall_time_s": 12.5,
                "metrics": {
                    "train_loss": 0.61,
                    "eval_loss": 0.6,
                    "eval_rewards/accuracies": 0.75,
                    "eval_runtime": 1.0,
                    "train_samples_per_second": 9.0,
                },
            }
        )
    )
    rows = [
        {"step": 10, "loss": 0.69},
        {"step": 10, "eval_loss": 0.7, "eval_rewards/accuracies": 0.5},
        {"step": 20, "eval_loss": 0.5, "eval_rewards/accuracies": 1.0},
        {"step": 30, "eval_loss": 0.6, "eval_rewards/accuracies": 0.75},
    ]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    row = run_row(
        run, name="r1", status=STATUS_DONE, model="m", values={"method.delta": 10.0}, preferred="eval_reward_accuracy"
    )
    # final: from results.json (bookkeeping like runtime left out); best: min loss 0.5, max accuracy 1.0 at step 20
    assert row["eval_loss"] == 0.6 and row["train_loss"] == 0.61 and "eval_runtime" not in row
    assert row["best_eval_loss"] == 0.5 and row["best_eval_rewards/accuracies"] == 1.0 and row["best_step"] == 20
    failed = run_row(
        tmp_path / "missing",
        name="r2",
        status=STATUS_FAILED,
        model="m",
        values={"method.delta": 20},
        error="KTODataError: bad | row",
    )
    csv_path, md_path = write_tables(tmp_path, [row, failed], ["method.delta"])
    table = list(csv.DictReader(csv_path.open()))
    assert [t["run"] for t in table] == ["r1", "r2"]
    assert table[0]["method.delta"] == "10.0" and table[0]["global_step"] == "30" and table[0]["best_step"] == "20"
    assert (
        table[1]["status"] == "failed" and table[1]["eval_loss"] == "" and table[1]["error"].startswith("KTODataError")
    )
    md = md_path.read_text()
    assert "| r1 | done | m | 10 | 30 | 12.5 |" in md and "bad \\| row" in md


# --------------------------------------------------------------------------- end to end on tiny models
@pytest.fixture
def count_trainings(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    import prospect.recipes.sweep.runner as runner

    calls: list[str] = []
    real = runner.train

    def counting(cfg, **kw):
        calls.append(cfg.training.run_name)
        kw["quiet"] = True
        return real(cfg, **kw)

    monkeypatch.setattr(runner, "train", counting)
    return calls


def test_two_models_by_two_deltas_then_rerun_skips(tmp_path: Path, env: None, count_trainings: list[str]) -> None:
    from prospect.recipes.sweep import run_sweep

    a, b = tiny_models()
    write_pairs(tmp_path / "train.jsonl", PAIRS)
    write_pairs(tmp_path / "val.jsonl", VALIDATION)
    cfg = load(
        base_config(
            tmp_path,
            models=[{"id": str(a), "short": "tiny-a"}, {"id": str(b), "short": "tiny-b"}],
            sweep={"method.delta": [0, 10]},
        )
    )
    assert run_sweep(cfg) == 0
    names = [
        "tiny-a_factual_dpo_delta0",
        "tiny-a_factual_dpo_delta10",
        "tiny-b_factual_dpo_delta0",
        "tiny-b_factual_dpo_delta10",
    ]
    assert count_trainings == names
    sweep_dir = tmp_path / "out" / "factual_dpo_delta"
    for n in names:
        res = json.loads((sweep_dir / n / "results.json").read_text())
        assert res["global_step"] == 2 and res["run_name"] == n
    assert yaml.safe_load((sweep_dir / names[3] / "config.yaml").read_text())["method"]["delta"] == 10

    table = list(csv.DictReader((sweep_dir / "results.csv").open()))
    assert [t["run"] for t in table] == names
    assert [t["model"] for t in table] == ["tiny-a", "tiny-a", "tiny-b", "tiny-b"]
    assert [float(t["method.delta"]) for t in table] == [0, 10, 0, 10]
    assert {t["status"] for t in table} == {STATUS_DONE} and {t["global_step"] for t in table} == {"2"}
    for t, n in zip(table, names):
        evals = [r["eval_loss"] for r in read_jsonl(sweep_dir / n / "metrics.jsonl") if "eval_loss" in r]
        final = json.loads((sweep_dir / n / "results.json").read_text())["metrics"]["eval_loss"]
        assert float(t["eval_loss"]) == pytest.approx(final)
        assert float(t["best_eval_loss"]) == pytest.approx(min(evals))
        assert 0.0 <= float(t["eval_rewards/accuracies"]) <= 1.0
    md = (sweep_dir / "results.md").read_text()
    assert all(f"| {n} |" in md for n in names)
    for png in ("eval_vs_method-delta.png", "training_curves.png"):
        p = sweep_dir / "plots" / png
        assert p.stat().st_size > 1000 and p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # Second invocation: nothing trains, finished results are untouched, the table says skipped.
    mtimes = {n: os.stat(sweep_dir / n / "results.json").st_mtime_ns for n in names}
    assert run_sweep(cfg) == 0
    assert count_trainings == names
    assert {n: os.stat(sweep_dir / n / "results.json").st_mtime_ns for n in names} == mtimes
    table2 = list(csv.DictReader((sweep_dir / "results.csv").open()))
    assert {t["status"] for t in table2} == {STATUS_SKIPPED}
    assert [t["eval_loss"] for t in table2] == [t["eval_loss"] for t in table]


def test_failed_run_is_recorded_and_only_it_trains_again(
    tmp_path: Path, env: None, count_trainings: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from prospect.recipes.sweep import run_sweep

    a, _ = tiny_models()
    monkeypatch.chdir(tmp_path)
    write_pairs(tmp_path / "good.jsonl", PAIRS)
    (tmp_path / "bad.jsonl").write_text('{"prompt": "q", "chosen": \n', encoding="utf-8")  # not JSON at all
    write_pairs(tmp_path / "val.jsonl", VALIDATION)
    cfg = load(
        base_config(
            tmp_path,
            models=[{"id": str(a), "short": "tiny"}],
            data={"train_file": "good.jsonl", "validation_file": "val.jsonl"},
            sweep={"data.train_file": ["good.jsonl", "bad.jsonl"]},
        )
    )
    assert run_sweep(cfg) == 1  # the sweep went on past the failure, and says so
    sweep_dir = tmp_path / "out" / "factual_dpo_train_file"
    good, bad = "tiny_factual_dpo_train_filegood.jsonl", "tiny_factual_dpo_train_filebad.jsonl"
    assert count_trainings == [good, bad]
    table = {t["run"]: t for t in csv.DictReader((sweep_dir / "results.csv").open())}
    assert table[good]["status"] == STATUS_DONE and table[bad]["status"] == STATUS_FAILED
    assert "bad.jsonl" in table[bad]["error"] and table[bad]["global_step"] == ""
    assert not (sweep_dir / bad / "results.json").exists()

    write_pairs(tmp_path / "bad.jsonl", PAIRS[:4])  # fixed
    good_mtime = os.stat(sweep_dir / good / "results.json").st_mtime_ns
    assert run_sweep(cfg) == 0
    assert count_trainings == [good, bad, bad]
    assert os.stat(sweep_dir / good / "results.json").st_mtime_ns == good_mtime
    table = {t["run"]: t for t in csv.DictReader((sweep_dir / "results.csv").open())}
    assert table[good]["status"] == STATUS_SKIPPED and table[bad]["status"] == STATUS_DONE
    assert "error" not in table[bad] or table[bad]["error"] == ""


def test_interrupted_sweep_resumes_from_the_last_checkpoint(
    tmp_path: Path, env: None, count_trainings: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from prospect.engine.trainer import PreferenceTrainer
    from prospect.recipes.sweep import run_sweep

    a, _ = tiny_models()
    write_pairs(tmp_path / "train.jsonl", PAIRS)
    write_pairs(tmp_path / "val.jsonl", VALIDATION)
    cfg = load(
        base_config(
            tmp_path,
            models=[{"id": str(a), "short": "tiny"}],
            method={"name": "dpo"},
            training={"max_steps": 4, "save_steps": 2, "eval_steps": 4},
            sweep={"dpo.beta": [0.1, 0.2]},
        )
    )
    resumed_from: list = []
    real_train, real_step = PreferenceTrainer.train, PreferenceTrainer.training_step

    def spy_train(self, resume_from_checkpoint=None, **kw):
        resumed_from.append(resume_from_checkpoint)
        return real_train(self, resume_from_checkpoint=resume_from_checkpoint, **kw)

    def ctrl_c_at_step_3(self, *args, **kw):
        if self.state.global_step == 2:  # checkpoint-2 has just been saved
            raise KeyboardInterrupt
        return real_step(self, *args, **kw)

    monkeypatch.setattr(PreferenceTrainer, "train", spy_train)
    monkeypatch.setattr(PreferenceTrainer, "training_step", ctrl_c_at_step_3)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(cfg)
    sweep_dir = tmp_path / "out" / "dpo_beta"
    first, second = "tiny_dpo_beta0.1", "tiny_dpo_beta0.2"
    assert (sweep_dir / first / "checkpoints" / "checkpoint-2").is_dir()
    assert not (sweep_dir / first / "results.json").exists()
    table = {t["run"]: t["status"] for t in csv.DictReader((sweep_dir / "results.csv").open())}
    assert table == {first: "interrupted", second: "pending"}

    monkeypatch.setattr(PreferenceTrainer, "training_step", real_step)
    assert run_sweep(cfg) == 0
    assert count_trainings == [first, first, second]
    assert resumed_from[0] is None and Path(resumed_from[1]).name == "checkpoint-2" and resumed_from[2] is None
    res = json.loads((sweep_dir / first / "results.json").read_text())
    assert res["global_step"] == 4
    steps = [r["step"] for r in read_jsonl(sweep_dir / first / "metrics.jsonl") if "loss" in r]
    assert steps == [1, 2, 3, 4]  # steps 1-2 before the interruption, 3-4 after resuming (none repeated)


def test_runs_that_differ_in_lora_settings_share_the_reference_cache(tmp_path: Path, monkeypatch) -> None:
    """The reference is the base model (adapter disabled): a sweep over LoRA ranks computes its log-probs once."""
    from prospect.recipes.sweep import run_sweep

    monkeypatch.setenv("PROSPECT_CACHE", str(tmp_path / "fresh-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    a, _ = tiny_models()
    write_pairs(tmp_path / "train.jsonl", PAIRS)
    write_pairs(tmp_path / "val.jsonl", VALIDATION)
    cfg = load(
        base_config(
            tmp_path,
            method={"name": "dpo"},
            models=[{"id": str(a), "short": "tiny"}],
            sweep={"optimization.lora_rank": [2, 4]},
            evaluation={"num_generation_samples": 0},
        )
    )
    assert run_sweep(cfg, quiet=True) == 0
    runs = sorted(p for p in (tmp_path / "out").glob("*/tiny_dpo_*") if p.is_dir())
    caches = [json.loads((r / "results.json").read_text())["reference"]["cache"] for r in runs]
    assert caches == [{"train": "miss", "validation": "miss"}, {"train": "hit", "validation": "hit"}]


def test_reference_cache_key_covers_what_defines_the_reference(tmp_path: Path) -> None:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from prospect.data.tokenize import tokenizer_fingerprint
    from prospect.engine.model import base_weights_fingerprint
    from prospect.engine.reference import reference_cache_key
    from prospect.testing import load_tiny_tokenizer

    a, b = tiny_models()
    base = AutoModelForCausalLM.from_pretrained(str(a))
    fp = base_weights_fingerprint(base)
    lora = get_peft_model(
        AutoModelForCausalLM.from_pretrained(str(a)),
        LoraConfig(r=2, target_modules=["q_proj"], init_lora_weights=False),
    )
    assert base_weights_fingerprint(lora) == fp  # the adapter is not the reference
    assert base_weights_fingerprint(AutoModelForCausalLM.from_pretrained(str(b))) != fp
    tok = load_tiny_tokenizer()
    tk = tokenizer_fingerprint(tok)
    tok.chat_template = tok.chat_template.replace("<|im_start|>", "<|im_start|> ")
    assert tokenizer_fingerprint(tok) != tk  # another chat template renders other ids
    key = dict(base_fingerprint=fp, tokenizer_key=tk, data_key="d1", settings={"max_length": 64})
    ref = reference_cache_key(**key)
    assert reference_cache_key(**key) == ref
    for change in (
        {"tokenizer_key": "other"},
        {"data_key": "d2"},
        {"settings": {"max_length": 65}},
        {"base_fingerprint": "other"},
    ):
        assert reference_cache_key(**{**key, **change}) != ref, change
