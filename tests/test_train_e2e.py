"""End to end through the CLI on a tiny model: run directory, metrics, final model, learning, bad input."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch
import yaml

from helpers import learnable_unpaired, write_config, write_jsonl
from prospect.cli import main
from prospect.io import read_jsonl


def test_train_cli_writes_complete_run_directory(tmp_path, capsys):
    data = write_jsonl(tmp_path / "train.jsonl", learnable_unpaired(8, seed=1))
    val = write_jsonl(tmp_path / "val.jsonl", learnable_unpaired(3, seed=2, offset=50))
    cfg = write_config(
        tmp_path / "run.yaml",
        data={"train_file": str(data), "validation_file": str(val)},
        kto={"desirable_weight": "auto", "undesirable_weight": "auto"},
    )
    rc = main(["train", str(cfg), "--set", "kto.beta=0.2", "--lr", "5e-3", "--quiet"])
    assert rc == 0
    run = tmp_path / "runs" / "t"
    for name in ("config.yaml", "data_report.json", "metrics.jsonl", "results.json", "final", "checkpoints", "plots"):
        assert (run / name).exists(), name
    resolved = yaml.safe_load((run / "config.yaml").read_text())
    assert resolved["kto"]["beta"] == 0.2 and resolved["training"]["learning_rate"] == 5e-3
    # auto weights resolved by the rule and written into the resolved config: 8 desirable, 8 undesirable -> 1, 1
    assert resolved["kto"]["desirable_weight"] == 1.0 and resolved["kto"]["undesirable_weight"] == 1.0
    report = json.loads((run / "data_report.json").read_text())
    assert report["rows_read"] == 16 and report["accepted"] + len(report["rejected"]) == report["rows_read"]
    assert report["tokenization"]["train"]["rows"] == 16
    rows = read_jsonl(run / "metrics.jsonl")
    train_rows = [r for r in rows if "loss" in r]
    assert len(train_rows) == 4
    for key in (
        "loss",
        "rewards/chosen",
        "rewards/rejected",
        "rewards/margins",
        "kl",
        "logps/chosen",
        "logps/rejected",
        "perplexity",
        "learning_rate",
        "grad_norm",
    ):
        assert any(key in r for r in train_rows), key
    assert not any(k.startswith("sum/") for r in rows for k in r)
    assert any("eval_loss" in r for r in rows)
    results = json.loads((run / "results.json").read_text())
    assert results["global_step"] == 4 and results["z0_estimator"] == "batch_mismatch"
    assert (run / "plots" / "loss.png").stat().st_size > 1000

    # final/ loads back with transformers + peft and generates text
    from peft import AutoPeftModelForCausalLM
    from transformers import AutoTokenizer

    model = AutoPeftModelForCausalLM.from_pretrained(str(run / "final"))
    tok = AutoTokenizer.from_pretrained(str(run / "final"))
    ids = tok.apply_chat_template(
        [{"role": "user", "content": "Tell me about rain."}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    out = model.generate(**ids, max_new_tokens=5, do_sample=False)
    assert out.shape[1] == ids["input_ids"].shape[1] + 5


def _held_out_rewards(run_dir, rows):
    """beta * (log pi - log pi_ref) of each held-out row, computed independently of the trainer."""
    from peft import AutoPeftModelForCausalLM
    from transformers import AutoTokenizer

    model = AutoPeftModelForCausalLM.from_pretrained(str(run_dir / "final")).eval()
    tok = AutoTokenizer.from_pretrained(str(run_dir / "final"))

    def logp(m, prompt, completion):
        p = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False)
        full = tok.apply_chat_template(
            [{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}], tokenize=False
        )
        p_ids = tok(p, add_special_tokens=False)["input_ids"]
        ids = tok(full, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            lp = torch.log_softmax(m(torch.tensor([ids])).logits[0].float(), -1)
        return sum(lp[t - 1, ids[t]].item() for t in range(len(p_ids), len(ids)))

    out = []
    for r in rows:
        pol = logp(model, r["prompt"], r["completion"])
        with model.disable_adapter():
            ref = logp(model, r["prompt"], r["completion"])
        out.append((r["label"], pol - ref))
    return out


def test_kto_learns_held_out_preference(tmp_path):
    """After training, held-out desirable completions get higher implicit rewards than undesirable ones."""
    data = write_jsonl(tmp_path / "train.jsonl", learnable_unpaired(16, seed=3))
    held = learnable_unpaired(4, seed=4, offset=100)
    cfg = write_config(
        tmp_path / "run.yaml",
        data={"train_file": str(data), "validation_split_percentage": 0.0},
        training={"max_steps": 24, "batch_size": 8, "learning_rate": 1e-2, "save_steps": 100, "warmup_steps": 0},
        kto={"beta": 0.5},
    )
    assert main(["train", str(cfg), "--quiet"]) == 0
    rewards = _held_out_rewards(tmp_path / "runs" / "t", held)
    desirable = [r for lab, r in rewards if lab]
    undesirable = [r for lab, r in rewards if not lab]
    assert min(desirable) > max(undesirable), rewards
    assert sum(desirable) / len(desirable) > 0 > sum(undesirable) / len(undesirable)


@pytest.mark.parametrize("case", ["missing_file", "bad_key", "bad_method", "missing_model", "bad_type"])
def test_user_errors_are_one_line_without_traceback(tmp_path, case):
    data = write_jsonl(tmp_path / "train.jsonl", learnable_unpaired(2, seed=1))
    cfg = write_config(tmp_path / "run.yaml", data={"train_file": str(data)})
    args = [str(cfg)]
    if case == "missing_file":
        args = [str(tmp_path / "nope.yaml")]
    elif case == "bad_key":
        args += ["--set", "kto.betta=0.3"]
    elif case == "bad_method":
        args += ["--set", "method.name=ppo"]
    elif case == "missing_model":
        args += ["--set", "model.name=no-such-org/no-such-model"]
    elif case == "bad_type":
        args += ["--set", "training.learning_rate=fast"]
    proc = subprocess.run(
        [sys.executable, "-m", "prospect", "train", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"},
    )
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr, proc.stderr
    err = [line for line in proc.stderr.splitlines() if line.startswith("prospect: error:")]
    assert err, proc.stderr
    if case == "bad_key":
        assert "kto.beta" in err[0]
    if case in ("bad_key", "bad_type", "bad_method"):
        assert proc.returncode == 2


@pytest.mark.parametrize("eval_steps, expected_eval_steps", [(2, [2, 4]), (3, [3, 4])])
def test_final_metrics_reuse_an_evaluation_of_the_last_step(tmp_path, eval_steps, expected_eval_steps):
    """The held-out pass runs once per evaluated step: at the last step, scheduled or final, never twice."""
    data = write_jsonl(tmp_path / "train.jsonl", learnable_unpaired(8, seed=1))
    val = write_jsonl(tmp_path / "val.jsonl", learnable_unpaired(3, seed=2, offset=50))
    cfg = write_config(
        tmp_path / "run.yaml",
        data={"train_file": str(data), "validation_file": str(val)},
        training={"eval_steps": eval_steps},
    )
    assert main(["train", str(cfg), "--quiet"]) == 0
    run = tmp_path / "runs" / "t"
    evals = [r for r in read_jsonl(run / "metrics.jsonl") if "eval_loss" in r]
    assert [r["step"] for r in evals] == expected_eval_steps
    final = json.loads((run / "results.json").read_text())["metrics"]
    assert final["eval_loss"] == pytest.approx(evals[-1]["eval_loss"])
    assert final["eval_rewards/accuracies"] == pytest.approx(evals[-1]["eval_rewards/accuracies"])


def test_save_best_only_keeps_and_finishes_with_the_best_checkpoint(tmp_path):
    """save_best_only with save_steps not a multiple of eval_interval (seed 003's layout): checkpoints at every
    evaluation, and final/ holds the weights of the evaluation with the best metric."""
    from safetensors.torch import load_file

    data = write_jsonl(tmp_path / "train.jsonl", learnable_unpaired(8, seed=1))
    val = write_jsonl(tmp_path / "val.jsonl", learnable_unpaired(3, seed=2, offset=50))
    cfg = write_config(
        tmp_path / "run.yaml",
        data={"train_file": str(data), "validation_file": str(val)},
        training={"max_steps": 6, "save_steps": 5, "learning_rate": 5e-2},
        evaluation={
            "eval_interval": 2,
            "save_best_only": True,
            "metric_for_best_model": "eval_loss",
            "greater_is_better": False,
        },
    )
    assert main(["train", str(cfg), "--quiet"]) == 0
    run = tmp_path / "runs" / "t"
    evals = {r["step"]: r["eval_loss"] for r in read_jsonl(run / "metrics.jsonl") if "eval_loss" in r}
    assert sorted(evals)[:3] == [2, 4, 6]
    best = min((2, 4, 6), key=lambda s: evals[s])
    best_weights = load_file(str(run / "checkpoints" / f"checkpoint-{best}" / "adapter_model.safetensors"))
    final_weights = load_file(str(run / "final" / "adapter_model.safetensors"))
    assert best_weights.keys() == final_weights.keys()
    assert all(torch.equal(best_weights[k], final_weights[k]) for k in best_weights)
    final = json.loads((run / "results.json").read_text())["metrics"]
    assert final["eval_loss"] == pytest.approx(evals[best], rel=1e-5)


def test_early_stopping_stops_when_the_metric_stops_improving(tmp_path):
    data = write_jsonl(tmp_path / "train.jsonl", learnable_unpaired(8, seed=1))
    val = write_jsonl(tmp_path / "val.jsonl", learnable_unpaired(3, seed=2, offset=50))
    # A learning rate this small leaves the held-out metric unchanged: no evaluation improves on the first.
    cfg = write_config(
        tmp_path / "run.yaml",
        data={"train_file": str(data), "validation_file": str(val)},
        training={"max_steps": 20, "learning_rate": 1e-30, "early_stopping_patience": 2, "save_steps": 100},
        evaluation={"eval_interval": 1, "metric_for_best_model": "eval_loss", "greater_is_better": False},
    )
    assert main(["train", str(cfg), "--quiet"]) == 0
    results = json.loads((tmp_path / "runs" / "t" / "results.json").read_text())
    assert results["global_step"] == 3  # the first evaluation, then two without improvement


@pytest.mark.parametrize("section, key", [("training", "early_stopping_patience"), ("evaluation", "save_best_only")])
def test_best_model_settings_without_evaluations_are_refused(tmp_path, capsys, section, key):
    cfg = write_config(
        tmp_path / "run.yaml",
        data={"train_file": str(tmp_path / "none.jsonl")},
        **{section: {key: 2 if key == "early_stopping_patience" else True}},
    )
    assert main(["train", str(cfg), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert key in err and "eval_interval" in err


@pytest.mark.parametrize("setting", ["training.optim=nonsense", "training.lr_scheduler_type=sideways"])
def test_settings_transformers_refuses_are_one_line_before_the_model_loads(tmp_path, capsys, setting):
    data = write_jsonl(tmp_path / "train.jsonl", learnable_unpaired(4, seed=1))
    cfg = write_config(tmp_path / "run.yaml", data={"train_file": str(data)})
    assert main(["train", str(cfg), "--dry-run", "--set", setting]) == 2  # --dry-run loads no model
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("prospect: error:")]
    assert len(err) == 1 and "TrainingArguments" in err[0] and setting.split("=")[1] in err[0]


def _adapter(run):
    from safetensors.torch import load_file

    return load_file(str(run / "final" / "adapter_model.safetensors"))


def test_rerunning_a_run_directory_never_trains_it_twice_or_mixes_settings(tmp_path, capsys, caplog):
    data = write_jsonl(tmp_path / "train.jsonl", learnable_unpaired(8, seed=1))
    cfg = write_config(
        tmp_path / "run.yaml",
        data={"train_file": str(data), "validation_split_percentage": 0.0},
        training={"max_steps": 2, "save_steps": 2},
    )
    run = tmp_path / "runs" / "t"
    assert main(["train", str(cfg), "--quiet"]) == 0
    first = _adapter(run)
    steps = [r["step"] for r in read_jsonl(run / "metrics.jsonl") if "loss" in r]

    # The same command again: finished, nothing trained, nothing rewritten.
    caplog.set_level("INFO", logger="prospect")
    assert main(["train", str(cfg), "--quiet"]) == 0
    assert "finished earlier (step 2)" in caplog.text
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["checkpoint-2"]
    assert [r["step"] for r in read_jsonl(run / "metrics.jsonl") if "loss" in r] == steps
    assert all(torch.equal(first[k], v) for k, v in _adapter(run).items())

    # Other settings on top of these weights: refused, naming the key; config.yaml keeps the trained values.
    assert main(["train", str(cfg), "--quiet", "--set", "kto.beta=0.5"]) == 2
    err = capsys.readouterr().err
    assert "kto.beta" in err and "--no-resume" in err
    assert yaml.safe_load((run / "config.yaml").read_text())["kto"]["beta"] == 0.1

    # More steps: training goes on from the checkpoint.
    assert main(["train", str(cfg), "--quiet", "--set", "training.max_steps=4"]) == 0
    assert [r["step"] for r in read_jsonl(run / "metrics.jsonl") if "loss" in r] == [1, 2, 3, 4]

    # --no-resume trains again from step 0.
    assert main(["train", str(cfg), "--quiet", "--no-resume", "--set", "kto.beta=0.5"]) == 0
    assert [r["step"] for r in read_jsonl(run / "metrics.jsonl") if "loss" in r] == [1, 2]


@pytest.mark.parametrize("strategy, expected", [("auto", (1.0, 3.0)), ("none", (1.0, 1.0))])
def test_default_balance_weights_the_minority_label(tmp_path, strategy, expected):
    """3:1 data with the seed's neutral weights (1.0, 1.0): by default every row is kept and the minority is
    weighted by the KTO rule (lambda_D n_D / lambda_U n_U = 1); balance_strategy none keeps the weights."""
    rows = learnable_unpaired(12, seed=1)
    rows = [r for r in rows if r["label"]] + [r for r in rows if not r["label"]][:4]  # 12 desirable, 4 undesirable
    data = write_jsonl(tmp_path / "train.jsonl", rows)
    cfg = write_config(
        tmp_path / "run.yaml",
        training={"max_steps": 1},
        data={"train_file": str(data), "validation_split_percentage": 0.0, "balance_strategy": strategy},
    )
    assert main(["train", str(cfg), "--quiet"]) == 0
    run = tmp_path / "runs" / "t"
    resolved = yaml.safe_load((run / "config.yaml").read_text())["kto"]
    assert (resolved["desirable_weight"], resolved["undesirable_weight"]) == expected
    note = json.loads((run / "results.json").read_text())["kto_weights"]
    assert (note["n_desirable"], note["n_undesirable"]) == (12, 4)
    assert note["weighted_ratio"] == pytest.approx(12 * expected[0] / (4 * expected[1]))


def test_eval_perplexity_and_logps_match_an_independent_forward(tmp_path):
    """eval_perplexity = exp(-sum log pi(y|x) / #tokens) over the desirable held-out completions, and
    eval_logps/chosen their mean log-prob, recomputed here from final/ (the weights of the last evaluation)."""
    from peft import AutoPeftModelForCausalLM
    from transformers import AutoTokenizer

    data = write_jsonl(tmp_path / "train.jsonl", learnable_unpaired(8, seed=1))
    held = learnable_unpaired(3, seed=2, offset=50)
    val = write_jsonl(tmp_path / "val.jsonl", held)
    cfg = write_config(
        tmp_path / "run.yaml",
        data={"train_file": str(data), "validation_file": str(val)},
        training={"eval_steps": 4, "eval_batch_size": 8, "learning_rate": 1e-2},
    )
    assert main(["train", str(cfg), "--quiet"]) == 0
    run = tmp_path / "runs" / "t"
    last = [r for r in read_jsonl(run / "metrics.jsonl") if "eval_loss" in r][-1]

    model = AutoPeftModelForCausalLM.from_pretrained(str(run / "final")).eval()
    tok = AutoTokenizer.from_pretrained(str(run / "final"))
    total, tokens, per_row = 0.0, 0, []
    for r in (r for r in held if r["label"]):
        msgs = [{"role": "user", "content": r["prompt"]}]
        p_ids = tok(
            tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False), add_special_tokens=False
        )["input_ids"]
        ids = tok(
            tok.apply_chat_template(msgs + [{"role": "assistant", "content": r["completion"]}], tokenize=False),
            add_special_tokens=False,
        )["input_ids"]
        with torch.no_grad():
            lp = torch.log_softmax(model(torch.tensor([ids])).logits[0].double(), -1)
        row = sum(lp[t - 1, ids[t]].item() for t in range(len(p_ids), len(ids)))
        total, tokens = total + row, tokens + len(ids) - len(p_ids)
        per_row.append(row)
    assert last["eval_perplexity"] == pytest.approx(math.exp(-total / tokens), rel=1e-4)
    assert last["eval_logps/chosen"] == pytest.approx(sum(per_row) / len(per_row), rel=1e-4)


def test_unknown_eval_metric_is_refused_before_the_model_loads(tmp_path, capsys):
    data = write_jsonl(tmp_path / "train.jsonl", learnable_unpaired(4, seed=1))
    cfg = write_config(
        tmp_path / "run.yaml",
        data={"train_file": str(data)},
        evaluation={"metrics": ["reward_accuracy", "spiral_score"]},
    )
    assert main(["train", str(cfg), "--dry-run"]) == 2  # --dry-run loads no model
    assert "unknown metric 'spiral_score'" in capsys.readouterr().err


def test_prospect_eval_cli_on_a_kto_run_agrees_with_the_training_evaluation(tmp_path, capsys):
    """`prospect eval RUN --json` on the run's own held-out rows (one batch: the same mismatched pairs and z0
    as the Trainer's last evaluation) gives the Trainer's held-out loss; without --json a table."""
    data = write_jsonl(tmp_path / "train.jsonl", learnable_unpaired(8, seed=1))
    val = write_jsonl(tmp_path / "val.jsonl", learnable_unpaired(3, seed=2, offset=50))
    cfg = write_config(
        tmp_path / "run.yaml",
        data={"train_file": str(data), "validation_file": str(val)},
        training={"eval_steps": 4, "eval_batch_size": 8, "learning_rate": 1e-2},
        evaluation={"num_generation_samples": 1, "max_new_tokens": 4},
    )
    assert main(["train", str(cfg), "--quiet"]) == 0
    run = tmp_path / "runs" / "t"
    trained = json.loads((run / "results.json").read_text())["metrics"]
    capsys.readouterr()
    assert main(["eval", str(run), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["kind"] == "unpaired" and res["n_examples"] == 6 and res["n_generations"] == 1
    m = res["metrics"]
    assert m["loss"] == pytest.approx(trained["eval_loss"], rel=1e-4)
    assert m["z0"] == pytest.approx(trained["eval_kl"], rel=1e-4, abs=1e-6)
    assert m["perplexity"] == pytest.approx(trained["eval_perplexity"], rel=1e-4)
    assert main(["eval", str(run)]) == 0
    out = capsys.readouterr().out
    assert "reward_accuracy" in out and "perplexity" in out and "{" not in out


def test_progress_bars_show_training_figures_and_evaluation(tmp_path, capsys):
    data = write_jsonl(tmp_path / "train.jsonl", learnable_unpaired(8, seed=1))
    val = write_jsonl(tmp_path / "val.jsonl", learnable_unpaired(3, seed=2, offset=50))
    cfg = write_config(
        tmp_path / "run.yaml",
        data={"train_file": str(data), "validation_file": str(val)},
        training={"eval_steps": 2, "eval_batch_size": 2},
    )
    assert main(["train", str(cfg)]) == 0
    err = capsys.readouterr().err
    assert "Training: 100%" in err and "loss=" in err and "r+=" in err
    assert "Evaluating" in err and "eval @ step 2:" in err


def test_generate_during_eval_writes_samples_at_every_evaluation(tmp_path):
    data = write_jsonl(tmp_path / "train.jsonl", learnable_unpaired(8, seed=1))
    val = write_jsonl(tmp_path / "val.jsonl", learnable_unpaired(3, seed=2, offset=50))
    cfg = write_config(
        tmp_path / "run.yaml",
        data={"train_file": str(data), "validation_file": str(val), "generate_during_eval": True},
        training={"eval_steps": 2},
        evaluation={"num_generation_samples": 2, "max_new_tokens": 3},
    )
    assert main(["train", str(cfg), "--quiet"]) == 0
    run = tmp_path / "runs" / "t"
    assert sorted(p.name for p in (run / "generations").iterdir()) == ["step-2.jsonl", "step-4.jsonl"]
    rows = read_jsonl(run / "generations" / "step-2.jsonl")
    assert len(rows) == 2 and all("generation" in r and "reference_generation" in r for r in rows)
    assert len(read_jsonl(run / "generations.jsonl")) == 2  # and the final samples


def test_precomputed_eval_mismatched_reference_gives_the_on_the_fly_numbers(tmp_path):
    """The held-out KTO loss and z0 with the eval loader's mismatched pairs precomputed (the default) equal those
    computed in each eval step (precompute_ref_log_probs: false), also with a last, shorter eval batch."""
    # Mostly desirable rows and a high learning rate: the policy's mismatched log-probs rise above the
    # reference's, so z0 (clamped at 0) is positive and the comparison means something.
    rows = [r for r in learnable_unpaired(8, seed=1) if r["label"]] + learnable_unpaired(2, seed=3)
    data = write_jsonl(tmp_path / "train.jsonl", rows)
    val = write_jsonl(tmp_path / "val.jsonl", learnable_unpaired(3, seed=2, offset=50))  # 6 rows: batches of 4, 2
    out = {}
    for name, pre in (("pre", True), ("fly", False)):
        cfg = write_config(
            tmp_path / f"{name}.yaml",
            data={"train_file": str(data), "validation_file": str(val)},
            training={"eval_steps": 2, "eval_batch_size": 4, "learning_rate": 3e-2, "num_epochs": 2, "run_name": name},
            kto={"precompute_ref_log_probs": pre},
        )
        assert main(["train", str(cfg), "--quiet"]) == 0
        out[name] = [r for r in read_jsonl(tmp_path / "runs" / name / "metrics.jsonl") if "eval_loss" in r]
    assert len(out["pre"]) == len(out["fly"]) >= 2
    assert any(r["eval_kl"] > 1e-4 for r in out["fly"])  # z0 is not trivially 0
    for a, b in zip(out["pre"], out["fly"]):
        for k in ("eval_loss", "eval_kl", "eval_rewards/margins"):
            # log-probs of ~-150 in float32, padded into other batches: ~1e-5 apart
            assert a[k] == pytest.approx(b[k], rel=1e-4, abs=1e-4), k
    results = json.loads((tmp_path / "runs" / "pre" / "results.json").read_text())
    assert results["reference"]["mode"] == "precomputed"
