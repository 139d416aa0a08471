"""Evaluation of a finished run (metrics checked against an independent full-logits forward pass),
generation samples, user metrics, and export round trips (adapter and merged model)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import yaml

from prospect.errors import ConfigError, ProspectError
from prospect.eval import metrics as M

TRAIN = [
    ("What is two plus two?", "Two plus two is four.", "It is five.", 0, 1),
    ("Name a primary colour.", "Red is a primary colour.", "Green, always.", 0, 1),
    ("What is the capital of France?", "Paris is the capital of France.", "Lyon.", 0, 1),
    ("Say hello politely.", "Hello, nice to meet you.", "Go away.", 0, 0),
    ("How many legs has a cat?", "A cat has four legs.", "Cats have six legs.", 0, 1),
    ("What colour is the sky?", "The sky looks blue by day.", "It is green.", 0, 1),
]
VALIDATION = [
    ("What is three plus one?", "Three plus one is four.", "It is seven.", 0, 1),
    ("Greet a friend.", "Hi, good to see you!", "Whatever.", 0, 0),
    ("What is ice made of?", "Ice is frozen water.", "Ice is made of salt.", 0, 1),
]
UNPAIRED = [
    ("Count to three.", "One, two, three.", True),
    ("Spell cat.", "C, A, T.", True),
    ("What is 5 minus 2?", "It is nine.", False),
    ("Name a fruit.", "An apple is a fruit.", True),
    ("Is water wet?", "No idea, ask someone else.", False),
]
SECRET = "hunter2secretpass"
USER_METRICS = """
def mean_generation_chars(prompts, generations, references):
    return sum(len(g) for g in generations) / len(generations)


def counts(prompts, generations, references):
    return {"prompts": len(prompts), "with_reference": sum(r is not None for r in references)}
"""


def _pairs(path: Path, rows: list[tuple]) -> Path:
    path.write_text(
        "".join(
            json.dumps({"prompt": p, "chosen": c, "rejected": r, "h_w": hw, "h_l": hl}) + "\n"
            for p, c, r, hw, hl in rows
        ),
        encoding="utf-8",
    )
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory):
    """One tiny DPO+LoRA run (3 steps, large learning rate so the adapter moves away from the base)."""
    from prospect.config.loader import loads_config
    from prospect.recipes import train
    from prospect.testing import tiny_model_dir

    tmp = tmp_path_factory.mktemp("evalrun")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PROSPECT_CACHE", str(tmp / "cache"))
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.chdir(tmp)
        (tmp / "tiny_user_metrics.py").write_text(USER_METRICS)
        base = tiny_model_dir()
        cfg = {
            "method": {"name": "dpo"},
            "model": {"name": str(base), "max_length": 64},
            "training": {
                "learning_rate": 2e-2,
                "batch_size": 3,
                "max_steps": 3,
                "logging_steps": 1,
                "save_steps": 3,
                "output_dir": str(tmp / "runs"),
                "run_name": "tiny_dpo",
                "seed": 0,
            },
            "data": {
                "train_file": str(_pairs(tmp / "train.jsonl", TRAIN)),
                "validation_file": str(_pairs(tmp / "val.jsonl", VALIDATION)),
            },
            "dpo": {"beta": 0.5, "max_length": 64, "max_prompt_length": 32, "max_target_length": 32},
            "optimization": {
                "use_lora": True,
                "lora_rank": 4,
                "lora_dropout": 0.0,
                "lora_target_modules": ["q_proj", "v_proj"],
            },
            "evaluation": {
                "num_generation_samples": 2,
                "max_new_tokens": 5,
                "metrics": [
                    "reward_accuracy",
                    "perplexity",
                    "tiny_user_metrics:mean_generation_chars",
                    "tiny_user_metrics:counts",
                ],
            },
            "logging": {"mlflow_tracking_uri": f"http://bob:{SECRET}@mlflow.example"},
        }
        result = train(loads_config(yaml.safe_dump(cfg, sort_keys=False), source="<test>"), quiet=True)
        yield {"run_dir": result.run_dir, "base": base, "tmp": tmp}


@pytest.fixture
def in_run_env(trained, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("PROSPECT_CACHE", str(trained["tmp"] / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(trained["tmp"])
    return trained


# --------------------------------------------------------------------------- independent oracle
def _models(trained):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    ref = AutoModelForCausalLM.from_pretrained(trained["base"]).eval()
    pol = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(trained["base"]), str(trained["run_dir"] / "final")
    ).eval()
    return pol, ref


def _full_forward_logp(model, prompt_ids: list[int], completion_ids: list[int]) -> tuple[float, int]:
    """Sum of log p(completion token) from ALL logits of one unpadded sequence (no masks, no chunks)."""
    ids = torch.tensor([prompt_ids + completion_ids])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0].double()
    logp = torch.log_softmax(logits[:-1], dim=-1).gather(-1, ids[0, 1:, None])[:, 0]
    return float(logp[len(prompt_ids) - 1 :].sum()), len(completion_ids)


def _tokenized(run_dir: Path, records, kind: str):
    from transformers import AutoTokenizer

    from prospect.config.loader import load_config
    from prospect.data.tokenize import tokenize_records
    from prospect.engine.args import tokenize_settings

    cfg = load_config(str(run_dir / "config.yaml"))
    tok = AutoTokenizer.from_pretrained(str(run_dir / "final"))
    ds, _ = tokenize_records(records, tok, tokenize_settings(cfg), kind=kind, use_cache=False)
    return list(ds)


# --------------------------------------------------------------------------- metric formulas (hand-worked)
def test_metric_formulas_by_hand() -> None:
    t = torch.tensor
    assert M.reward_accuracy(t([1.0, 2.0, 3.0]), t([0.0, 2.0, 4.0])) == pytest.approx(1 / 3)  # tie counts wrong
    assert M.mean_margin(t([1.0, 2.0, 3.0]), t([0.0, 2.0, 4.0])) == pytest.approx(0.0)
    # desirable {1, 3} vs undesirable {2, 3}: (1>2:0)+(1>3:0)+(3>2:1)+(3=3:1/2) = 1.5 of 4
    assert M.ranking_accuracy(t([1.0, 3.0]), t([2.0, 3.0])) == pytest.approx(0.375)
    assert M.kl_estimate(t([-1.0, -3.0]), t([-2.0, -2.0])) == pytest.approx(0.0)
    assert M.perplexity(t([-2.0, -4.0]), t([1, 2])) == pytest.approx(math.e**2)  # exp(6 / 3)
    assert M.rewards(t([-1.0]), t([-3.0]), 0.1).item() == pytest.approx(0.2)
    assert math.isnan(M.reward_accuracy(t([]), t([])))


def test_unknown_metric_names_and_bad_references_are_config_errors() -> None:
    M.check_metric_names(["reward_accuracy", "perplexity", "pkg.mod:fn"])
    with pytest.raises(ConfigError, match="unknown metric 'spiral_score'.*pkg.module:function"):
        M.check_metric_names(["spiral_score"])
    with pytest.raises(ConfigError, match="cannot import module 'no_such_pkg_xyz.m'"):
        M.resolve_metric("no_such_pkg_xyz.m:f")
    with pytest.raises(ConfigError, match="has no function 'nope'"):
        M.resolve_metric("json:nope")


# --------------------------------------------------------------------------- evaluate_run
def test_evaluate_paired_file_matches_independent_forward(in_run_env) -> None:
    from prospect.data.records import PairedRecord
    from prospect.recipes import evaluate_run

    run_dir = in_run_env["run_dir"]
    res = evaluate_run(run_dir, data_file=str(in_run_env["tmp"] / "val.jsonl"))
    assert res["kind"] == "paired" and res["n_examples"] == len(VALIDATION)
    assert json.loads((run_dir / "eval" / "metrics.json").read_text()) == res

    pol, ref = _models(in_run_env)
    rows = _tokenized(
        run_dir,
        [PairedRecord(prompt=p, chosen=c, rejected=r, h_w=hw, h_l=hl) for p, c, r, hw, hl in VALIDATION],
        "paired",
    )
    beta = 0.5
    ch, rj, kl, lp_sum, n_tok = [], [], [], 0.0, 0
    for r in rows:
        pc, nc = _full_forward_logp(pol, r["prompt_ids"], r["chosen_ids"])
        rc, _ = _full_forward_logp(ref, r["prompt_ids"], r["chosen_ids"])
        pr, _ = _full_forward_logp(pol, r["prompt_ids"], r["rejected_ids"])
        rr, _ = _full_forward_logp(ref, r["prompt_ids"], r["rejected_ids"])
        ch.append(beta * (pc - rc))
        rj.append(beta * (pr - rr))
        kl.append(pc - rc)
        lp_sum += pc
        n_tok += nc
    m = res["metrics"]
    assert abs(ch[0] - rj[0]) > 1e-4  # the adapter has moved: rewards are not all zero
    assert m["reward_accuracy"] == pytest.approx(sum(c > r for c, r in zip(ch, rj)) / len(ch))
    assert m["margin"] == pytest.approx(sum(c - r for c, r in zip(ch, rj)) / len(ch), abs=1e-4)
    assert m["chosen_reward"] == pytest.approx(sum(ch) / len(ch), abs=1e-4)
    assert m["kl"] == pytest.approx(sum(kl) / len(kl), abs=1e-4)
    assert m["perplexity"] == pytest.approx(math.exp(-lp_sum / n_tok), rel=1e-4)
    # DPO sigmoid loss -log sigma(r_w - r_l), mean over pairs
    want = sum(math.log1p(math.exp(-(c - r))) for c, r in zip(ch, rj)) / len(ch)
    assert m["loss"] == pytest.approx(want, abs=1e-4)


def test_generations_and_user_metrics(in_run_env) -> None:
    from prospect.recipes import evaluate_run

    run_dir = in_run_env["run_dir"]
    res = evaluate_run(run_dir)  # the run's own validation file
    assert res["data_file"] == str(in_run_env["tmp"] / "val.jsonl") and res["n_examples"] == len(VALIDATION)
    gens = [json.loads(line) for line in (run_dir / "eval" / "generations.jsonl").read_text().splitlines()]
    assert [g["prompt"] for g in gens] == [VALIDATION[0][0], VALIDATION[1][0]]
    assert [g["reference"] for g in gens] == [VALIDATION[0][1], VALIDATION[1][1]]
    assert all(isinstance(g["generation"], str) and "reference_generation" in g for g in gens)
    assert all(1 <= g["generated_tokens"] <= 5 for g in gens)
    m = res["metrics"]
    assert m["mean_generation_chars"] == pytest.approx(sum(len(g["generation"]) for g in gens) / 2)
    assert m["counts/prompts"] == 2 and m["counts/with_reference"] == 2


def test_training_writes_generation_samples_and_user_metrics(trained) -> None:
    """At the end of `prospect train`: generations.jsonl for the first held-out prompts, and the user metrics
    of evaluation.metrics called on them, in results.json as eval_<name>."""
    run_dir = trained["run_dir"]
    gens = [json.loads(line) for line in (run_dir / "generations.jsonl").read_text().splitlines()]
    assert [g["prompt"] for g in gens] == [VALIDATION[0][0], VALIDATION[1][0]]
    assert all("reference_generation" in g and 1 <= g["generated_tokens"] <= 5 for g in gens)
    final = json.loads((run_dir / "results.json").read_text())["metrics"]
    assert final["eval_mean_generation_chars"] == pytest.approx(sum(len(g["generation"]) for g in gens) / 2)
    assert final["eval_counts/prompts"] == 2 and final["eval_counts/with_reference"] == 2


def test_evaluate_unpaired_file(in_run_env) -> None:
    from prospect.data.records import UnpairedRecord
    from prospect.recipes import evaluate_run

    tmp, run_dir = in_run_env["tmp"], in_run_env["run_dir"]
    path = tmp / "kto.jsonl"
    path.write_text("".join(json.dumps({"prompt": p, "completion": c, "label": lab}) + "\n" for p, c, lab in UNPAIRED))
    res = evaluate_run(run_dir, data_file=str(path))
    assert res["kind"] == "unpaired"
    m = res["metrics"]
    assert (m["n_desirable"], m["n_undesirable"]) == (3, 2)
    assert m["loss"] is None  # a DPO run's loss needs pairs
    pol, ref = _models(in_run_env)
    rows = _tokenized(
        run_dir, [UnpairedRecord(prompt=p, completion=c, label=lab) for p, c, lab in UNPAIRED], "unpaired"
    )
    r = [
        0.5
        * (
            _full_forward_logp(pol, x["prompt_ids"], x["completion_ids"])[0]
            - _full_forward_logp(ref, x["prompt_ids"], x["completion_ids"])[0]
        )
        for x in rows
    ]
    d, u = [v for v, (_, _, lab) in zip(r, UNPAIRED) if lab], [v for v, (_, _, lab) in zip(r, UNPAIRED) if not lab]
    auc = sum((a > b) + 0.5 * (a == b) for a in d for b in u) / (len(d) * len(u))
    assert m["reward_accuracy"] == pytest.approx(auc)
    assert m["margin"] == pytest.approx(sum(d) / len(d) - sum(u) / len(u), abs=1e-4)


def test_evaluate_errors(in_run_env, tmp_path: Path) -> None:
    from prospect.recipes import evaluate_run

    with pytest.raises(ProspectError, match="no such data file"):
        evaluate_run(in_run_env["run_dir"], data_file=str(tmp_path / "missing.jsonl"))
    with pytest.raises(ProspectError, match="neither a run directory"):
        evaluate_run(tmp_path)


# --------------------------------------------------------------------------- export
def _logits(model, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids])).logits[0]


def test_export_adapter_loads_with_peft(in_run_env, tmp_path: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from prospect.recipes import export_run

    out = export_run(in_run_env["run_dir"], tmp_path / "adapter")
    names = {p.name for p in out.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "README.md", "tokenizer.json"} <= names
    assert "training_args.bin" not in names
    pol, _ = _models(in_run_env)
    loaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(in_run_env["base"]), str(out)).eval()
    ids = AutoTokenizer.from_pretrained(str(out))("Two plus two")["input_ids"]
    assert torch.allclose(_logits(loaded, ids), _logits(pol, ids))
    card = (out / "README.md").read_text()
    assert "library_name: peft" in card and "**dpo**" in card and str(in_run_env["base"]) in card
    results = json.loads((in_run_env["run_dir"] / "results.json").read_text())
    assert "## Final metrics" in card and "| global_step | 3 |" not in card and "- global_step: 3" in card
    assert f"| train_loss | {results['metrics']['train_loss']:.6g} |" in card
    assert "## Resolved config" in card and "## Data" in card
    assert SECRET not in card and SECRET not in (out / "prospect_export.json").read_text()


def test_export_merged_loads_with_transformers_and_generates(in_run_env, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from prospect.recipes import export_run

    out = export_run(in_run_env["run_dir"], tmp_path / "merged", merge=True)
    assert not (out / "adapter_config.json").exists()
    merged = AutoModelForCausalLM.from_pretrained(str(out)).eval()
    tok = AutoTokenizer.from_pretrained(str(out))
    pol, ref = _models(in_run_env)
    ids = tok("What is ice made of?")["input_ids"]
    assert torch.allclose(_logits(merged, ids), _logits(pol, ids), atol=1e-4)
    assert not torch.allclose(_logits(merged, ids), _logits(ref, ids), atol=1e-4)  # the adapter is in the weights
    gen = merged.generate(
        input_ids=torch.tensor([ids]), max_new_tokens=4, do_sample=False, pad_token_id=tok.pad_token_id
    )
    assert gen.shape[1] > len(ids)
    assert "library_name: transformers" in (out / "README.md").read_text()
    # a second export replaces the first; a foreign non-empty directory is refused
    assert export_run(in_run_env["run_dir"], out, merge=True) == out
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(ProspectError, match="not empty"):
        export_run(in_run_env["run_dir"], foreign)
    assert (foreign / "notes.txt").read_text() == "mine"


def test_export_refuses_unfinished_run(tmp_path: Path) -> None:
    from prospect.recipes import export_run

    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.yaml").write_text("method: dpo\n")
    with pytest.raises(ProspectError, match="no final/"):
        export_run(tmp_path / "run", tmp_path / "out")


def test_model_card_names_a_base_plain_transformers_can_load() -> None:
    from prospect.config.schema import RunConfig
    from prospect.eval.card import model_card

    cfg = RunConfig.model_validate(
        {
            "method": "kto",
            "model": {"name": "smollm2-135m-instruct"},
            "kto": {"loss_type": "prospect", "kto_lambda": 2.5},
        }
    )
    card = model_card(cfg, {}, {}, merged=False, adapter=True, run_name="r")
    assert "base_model: HuggingFaceTB/SmolLM2-135M-Instruct" in card
    assert 'AutoModelForCausalLM.from_pretrained("HuggingFaceTB/SmolLM2-135M-Instruct")' in card
    assert "| kto_lambda | 2.5 |" in card and "loss_type prospect" in card
    gguf = RunConfig.model_validate(
        {"method": "dpo", "model": {"name": "/models/x/m.Q8_0.gguf"}, "dpo": {"loss_type": "ipo"}}
    )
    card = model_card(gguf, {}, {}, merged=False, adapter=True, run_name="r")
    assert 'from_pretrained("/models/x", gguf_file="m.Q8_0.gguf")' in card and "loss_type ipo" in card
