"""Every method end to end through `prospect train` on a tiny model and a small learnable task.

The task: polite, on-topic answers are preferred over a rude one (tests/helpers.py
`learnable_unpaired`, and its paired twin below). Each method trains for a few steps and the
held-out reward accuracy (chosen reward > rejected reward, rewards computed here from final/
with and without the adapter, independently of the trainer) must rise clearly above 0.5.
Further checks read the run directory: data conversions in data_report.json, first-step
losses in metrics.jsonl, the curriculum in results.json. Runs are trained once per module
and shared between tests; plots are skipped (they are tested elsewhere).
"""

from __future__ import annotations

import csv
import json
import math
import random
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from helpers import TOPICS, learnable_unpaired, write_config, write_jsonl
from prospect.cli import main
from prospect.errors import ConfigError, DPODataError
from prospect.io import read_jsonl

BETA = 0.5
POLITE = "Gladly! Here is a kind answer about {topic}."
RUDE = "No. Go away, stupid question."


def learnable_paired(n_prompts: int, seed: int, offset: int = 0, flipped: int = 0) -> list[dict[str, Any]]:
    """Paired twin of `learnable_unpaired`: the same prompts, chosen polite, rejected rude.

    The first `flipped` pairs are written the wrong way round (chosen rude, rejected polite) and
    marked so (h_w=1: the chosen is non-factual, h_l=0), as Factual-DPO++ data can be; the others
    carry h_w=0, h_l=1. Row i also gets a `difficulty` column (a permutation of 0..n-1).
    """
    rng = random.Random(seed)
    difficulty = list(range(n_prompts))
    rng.shuffle(difficulty)
    rows = []
    for i in range(n_prompts):
        topic = TOPICS[(i + offset) % len(TOPICS)]
        row = {
            "prompt": f"Tell me about {topic}, item {offset + i}.",
            "chosen": POLITE.format(topic=topic),
            "rejected": RUDE,
            "h_w": 0,
            "h_l": 1,
            "difficulty": difficulty[i],
        }
        if i < flipped:
            row.update(chosen=row["rejected"], rejected=row["chosen"], h_w=1, h_l=0)
        rows.append(row)
    return rows


# --------------------------------------------------------------------------- shared runs
LEARN = {
    "max_steps": 8,
    "batch_size": 4,
    "learning_rate": 1e-2,
    "lr_scheduler_type": "constant",
    "warmup_steps": 0,
    "save_steps": 1000,
    "logging_steps": 1,
    "seed": 0,
}

# name -> (data file key, config sections). The learning runs, one per method / loss type.
LEARNING = {
    "kto": ("unpaired", {"method": "kto", "training": {"batch_size": 8}, "kto": {"loss_type": "kto"}}),
    "kto_prospect": ("unpaired", {"method": "kto", "training": {"batch_size": 8}, "kto": {"loss_type": "prospect"}}),
    "dpo_sigmoid": ("pairs", {"method": "dpo", "dpo": {"loss_type": "sigmoid"}}),
    "dpo_ipo": ("pairs", {"method": "dpo", "dpo": {"loss_type": "ipo"}}),
    "dpo_hinge": ("pairs", {"method": "dpo", "dpo": {"loss_type": "hinge"}}),
    "dpo_robust": ("pairs", {"method": "dpo", "dpo": {"loss_type": "robust", "label_smoothing": 0.1}}),
    "dpo_sigmoid_sft": (
        "pairs",
        {"method": "dpo", "dpo": {"loss_type": ["sigmoid", "sft"], "loss_weights": [1.0, 0.5]}},
    ),
    "factual_dpo": ("flipped", {"method": {"name": "factual_dpo", "delta": 2.0}}),
    "dpo_kto": ("pairs", {"method": {"name": "dpo_kto", "kto_weight": 0.5}}),
}

# Short runs for the other checks.
OTHER = {
    "kto_on_pairs": ("pairs", {"method": "kto", "training": {"max_steps": 2, "batch_size": 8}}),
    "dpo_on_unpaired": ("unpaired", {"method": "dpo", "training": {"max_steps": 2}}),
    "factual_paper_form": (
        "flipped",
        {"method": {"name": "factual_dpo", "delta": 2.0, "margin_scale": "none"}, "training": {"max_steps": 1}},
    ),
    "factual_delta0": ("flipped", {"method": {"name": "factual_dpo", "delta": 0.0}, "training": {"max_steps": 3}}),
    "dpo_sigmoid_no_precompute": (
        "pairs",
        {"method": "dpo", "training": {"max_steps": 3}, "dpo": {"precompute_ref_log_probs": False}},
    ),
    "kto_no_precompute": (
        "unpaired",
        {
            "method": "kto",
            "training": {"max_steps": 3, "batch_size": 8},
            "kto": {"loss_type": "kto", "precompute_ref_log_probs": False},
        },
    ),
    "dpo_reference_free": (
        "pairs",
        {"method": "dpo", "training": {"max_steps": 1, "batch_size": 16}, "dpo": {"reference_free": True}},
    ),
    # Reference-free methods: one batch of all 16 pairs, so step 1's loss is computable from the base model.
    "orpo": ("pairs", {"method": "orpo", "training": {"max_steps": 2, "batch_size": 16}, "dpo": {"beta": 0.2}}),
    "simpo": (
        "pairs",
        {
            "method": {"name": "simpo", "simpo_gamma": 0.5},
            "training": {"max_steps": 2, "batch_size": 16},
            "dpo": {"beta": 2.0},
        },
    ),  # fmt: skip
    "cpo": (
        "pairs",
        {"method": {"name": "cpo", "cpo_alpha": 0.5}, "training": {"max_steps": 2, "batch_size": 16}},
    ),
    "curriculum_margin": (
        "pairs",
        {"method": "dpo", "training": {"max_steps": 2}, "dpo": {"curriculum": "reference_margin"}},
    ),
    "curriculum_column": (
        "pairs",
        {
            "method": "dpo",
            "training": {"max_steps": 1, "batch_size": 1},
            "dpo": {"curriculum": "column", "curriculum_column": "difficulty", "reference_free": True},
        },
    ),
}


class Runs:
    """Trains each named run once (lazily) in one directory; returns its run directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.files = {
            "pairs": write_jsonl(root / "pairs.jsonl", learnable_paired(16, seed=3)),
            "flipped": write_jsonl(root / "flipped.jsonl", learnable_paired(16, seed=3, flipped=4)),
            "unpaired": write_jsonl(root / "unpaired.jsonl", learnable_unpaired(16, seed=3)),
        }
        self.done: dict[str, Path] = {}

    def __call__(self, name: str) -> Path:
        if name not in self.done:
            data_key, sections = {**LEARNING, **OTHER}[name]
            sections = json.loads(json.dumps(sections))
            cfg = write_config(
                self.root / f"{name}.yaml",
                method=sections.pop("method"),
                training={**LEARN, **sections.pop("training", {}), "run_name": name},
                data={"train_file": str(self.files[data_key]), "validation_split_percentage": 0.0},
                kto={"beta": BETA, **sections.pop("kto", {})},
                dpo={"beta": BETA, **sections.pop("dpo", {})},
            )
            with pytest.MonkeyPatch.context() as mp:
                mp.setattr("prospect.eval.plots.plot_run", lambda run_dir: [])
                assert main(["train", str(cfg), "--quiet"]) == 0
            self.done[name] = self.root / "runs" / name
        return self.done[name]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Runs:
    # The tiny model's matrices are too small to gain from a second thread; one is faster,
    # mostly when other processes share the CPU. Restored after the module.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield Runs(tmp_path_factory.mktemp("methods"))
    torch.set_num_threads(threads)


def train_losses(run_dir: Path) -> list[float]:
    return [r["loss"] for r in read_jsonl(run_dir / "metrics.jsonl") if "loss" in r and "step" in r]


def report(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / "data_report.json").read_text())


def results(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / "results.json").read_text())


# --------------------------------------------------------------------------- independent log-probs
def _load_final(run_dir: Path):
    from peft import AutoPeftModelForCausalLM
    from transformers import AutoTokenizer

    return AutoPeftModelForCausalLM.from_pretrained(str(run_dir / "final")).eval(), AutoTokenizer.from_pretrained(
        str(run_dir / "final")
    )


def completion_logp(model: Any, tok: Any, prompt: str, completion: str) -> float:
    """log pi(completion | prompt), summed over the completion's tokens (chat template, as a user would)."""
    p = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False)
    full = tok.apply_chat_template(
        [{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}], tokenize=False
    )
    p_ids = tok(p, add_special_tokens=False)["input_ids"]
    ids = tok(full, add_special_tokens=False)["input_ids"]
    assert ids[: len(p_ids)] == p_ids
    with torch.no_grad():
        lp = torch.log_softmax(model(torch.tensor([ids])).logits[0].double(), -1)
    return sum(lp[t - 1, ids[t]].item() for t in range(len(p_ids), len(ids)))


def held_out_rewards(run_dir: Path, pairs: list[dict[str, Any]]) -> list[tuple[float, float]]:
    """(chosen reward, rejected reward) per held-out pair: log pi - log pi_ref (policy: final/ adapter on)."""
    model, tok = _load_final(run_dir)
    out = []
    for p in pairs:
        rewards = []
        for completion in (p["chosen"], p["rejected"]):
            policy = completion_logp(model, tok, p["prompt"], completion)
            with model.disable_adapter():
                reference = completion_logp(model, tok, p["prompt"], completion)
            rewards.append(policy - reference)
        out.append((rewards[0], rewards[1]))
    return out


def base_margins(run_dir: Path, pairs: list[dict[str, Any]]) -> list[float]:
    """log pi_base(y_w|x) - log pi_base(y_l|x) per pair (final/ with the adapter off = the base model)."""
    model, tok = _load_final(run_dir)
    with model.disable_adapter():
        return [
            completion_logp(model, tok, p["prompt"], p["chosen"])
            - completion_logp(model, tok, p["prompt"], p["rejected"])
            for p in pairs
        ]


def base_dpo_losses(run_dir: Path, pairs: list[dict[str, Any]]) -> list[float]:
    """-log sigma(beta (log pi(y_w) - log pi(y_l))) under the base model: reference-free DPO at step 1."""
    return [math.log1p(math.exp(-BETA * h)) for h in base_margins(run_dir, pairs)]


HELD_OUT = learnable_paired(6, seed=4, offset=100)


# --------------------------------------------------------------------------- learning
@pytest.mark.parametrize("name", list(LEARNING))
def test_method_learns_held_out_preference(runs, name):
    run = runs(name)
    res = results(run)
    assert res["global_step"] == LEARN["max_steps"] and res["nonfinite_steps"] == 0
    losses = train_losses(run)
    assert len(losses) == LEARN["max_steps"] and all(math.isfinite(x) for x in losses)
    rewards = held_out_rewards(run, HELD_OUT)
    accuracy = sum(c > r for c, r in rewards) / len(rewards)
    margin = sum(c - r for c, r in rewards) / len(rewards)
    # before training the adapter is the identity: every reward is 0 and the accuracy 0
    assert accuracy >= 5 / 6 and margin > 0.5, (name, rewards)
    assert res["curriculum"] is None


# --------------------------------------------------------------------------- data conversions
def test_kto_trains_on_paired_data(runs):
    run = runs("kto_on_pairs")
    rep = report(run)
    # 16 pairs -> 16 desirable (chosen) + 16 undesirable (rejected) rows
    assert rep["records"]["train"] == {"rows": 32, "desirable": 16, "undesirable": 16}
    assert results(run)["global_step"] == 2
    assert all(math.isfinite(x) for x in train_losses(run))


def test_dpo_trains_on_unpaired_data(runs):
    run = runs("dpo_on_unpaired")
    rep = report(run)
    # every prompt has one desirable and one undesirable row -> 16 pairs, nothing left over
    assert rep["records"]["train"] == {"pairs": 16, "unused_unpaired_rows": 0}
    assert results(run)["global_step"] == 2
    # step 1: the policy is the reference (LoRA B = 0), so h = 0 and the loss is log 2
    assert train_losses(run)[0] == pytest.approx(math.log(2), abs=1e-5)


# --------------------------------------------------------------------------- factual_dpo
def test_factual_dpo_reports_reoriented_pairs_and_margin(runs):
    run = runs("factual_dpo")
    assert report(run)["reoriented"] == 4  # the 4 pairs written with h_w=1, h_l=0
    # step 1: h = 0 and every (reoriented) pair has h_l - h_w = 1, so the loss is (margin_scale beta,
    # the default) -log sigma(beta (0 - 1 * delta)) = log(1 + e^(beta delta)) with beta 0.5, delta 2
    assert train_losses(run)[0] == pytest.approx(math.log1p(math.exp(BETA * 2.0)), abs=1e-5)
    # margin_scale none (the SafeDPO paper's form): -log sigma(beta 0 - delta) = log(1 + e^delta)
    paper = runs("factual_paper_form")
    assert report(paper)["reoriented"] == 4
    assert report(paper)["both_nonfactual"] == {"setting": "keep", "dropped": {"train": 0, "validation": 0}}
    assert train_losses(paper)[0] == pytest.approx(math.log1p(math.exp(2.0)), abs=1e-5)


def test_factual_dpo_without_indicators_is_refused_before_the_model_loads(tmp_path, capsys):
    """delta > 0 on pairs with no h_w/h_l would silently train plain DPO: refused, naming the file and fields."""
    rows = [{k: v for k, v in r.items() if k not in ("h_w", "h_l")} for r in learnable_paired(4, seed=1)]
    data = write_jsonl(tmp_path / "no_h.jsonl", rows)
    cfg = write_config(
        tmp_path / "f.yaml",
        method={"name": "factual_dpo", "delta": 10.0},
        data={"train_file": str(data), "validation_split_percentage": 0.0},
    )
    assert main(["train", str(cfg), "--dry-run"]) == 1  # --dry-run loads no model
    err = capsys.readouterr().err
    assert "no_h.jsonl" in err and "h_w and h_l" in err and "none of the 4 pairs" in err


def test_factual_dpo_counts_pairs_without_indicators(tmp_path):
    rows = learnable_paired(8, seed=1)
    for r in rows[:3]:
        del r["h_w"], r["h_l"]
    data = write_jsonl(tmp_path / "some_h.jsonl", rows)
    cfg = write_config(
        tmp_path / "f.yaml",
        method={"name": "factual_dpo", "delta": 2.0},
        training={"max_steps": 1, "run_name": "f"},
        data={"train_file": str(data), "validation_split_percentage": 0.0},
    )
    assert main(["train", str(cfg), "--quiet"]) == 0
    report = json.loads((tmp_path / "runs" / "f" / "data_report.json").read_text())
    assert report["factuality"]["pairs_without_indicators"] == 3 and report["factuality"]["delta"] == 2.0


def test_factual_dpo_delta_zero_equals_dpo(runs):
    """delta 0 on the flipped file (reoriented back) trains exactly like dpo on the clean file."""
    factual, dpo = runs("factual_delta0"), runs("dpo_sigmoid")
    assert report(factual)["reoriented"] == 4
    assert report(dpo).get("reoriented") is None
    f_losses, d_losses = train_losses(factual), train_losses(dpo)
    assert f_losses[0] == d_losses[0] == pytest.approx(math.log(2), abs=1e-5)
    # later steps (policy != reference) too, bit for bit
    assert f_losses[:3] == d_losses[:3]


# --------------------------------------------------------------------------- reference handling
@pytest.mark.parametrize("method", ["dpo_sigmoid", "kto"])
def test_precompute_on_and_off_give_the_same_losses(runs, method):
    on = train_losses(runs(method))[:3]
    off_run = runs("dpo_sigmoid_no_precompute" if method == "dpo_sigmoid" else "kto_no_precompute")
    assert results(off_run)["reference"]["mode"] == "on_the_fly"
    assert results(runs(method))["reference"]["mode"] == "precomputed"
    off = train_losses(off_run)
    assert len(off) == 3
    assert off[0] == pytest.approx(on[0], rel=1e-6, abs=1e-6)
    assert off[1:] == pytest.approx(on[1:3], rel=1e-4, abs=1e-5)  # after updates: policy != reference


def test_reference_free_loss_uses_no_reference(runs):
    """Reference-free DPO: log pi_ref = 0, so step 1 (policy = base) is the base model's own preference."""
    run = runs("dpo_reference_free")
    assert results(run)["reference"]["mode"] == "reference_free"
    pairs = learnable_paired(16, seed=3)
    expected = sum(base_dpo_losses(run, pairs)) / len(pairs)  # one batch holds all 16 pairs
    first = train_losses(run)[0]
    assert first == pytest.approx(expected, rel=1e-4)
    assert abs(first - math.log(2)) > 1e-3  # not what a reference would give at step 1


@pytest.mark.parametrize(("method", "has_reference"), [("simpo", False), ("orpo", False), ("dpo", True)])
def test_full_finetuning_loads_a_reference_copy_only_when_the_loss_reads_one(tmp_path, method, has_reference):
    """Full fine-tuning of a reference-free loss (ORPO, SimPO, CPO) loads no frozen copy of the policy."""
    from prospect.config.loader import load_config
    from prospect.recipes.preparation import prepare
    from prospect.recipes.training import load_models

    data = write_jsonl(tmp_path / "pairs.jsonl", learnable_paired(4, seed=1))
    path = write_config(
        tmp_path / "c.yaml",
        method=method,
        optimization={"use_lora": False},
        data={"train_file": str(data), "validation_split_percentage": 0.0},
    )
    run = prepare(load_config(path), write=False)
    models = load_models(run)
    assert (models.reference is not None) is has_reference
    if has_reference:
        assert models.reference is not models.policy


# --------------------------------------------------------------------------- curriculum
def test_curriculum_by_reference_margin_is_recorded(runs):
    run = runs("curriculum_margin")
    note = results(run)["curriculum"]
    assert note["mode"] == "reference_margin" and note["sampler"] == "sequential" and note["pairs"] == 16
    # the easiest pair is the one whose reference margin log pi_ref(y_w) - log pi_ref(y_l) is largest
    pairs = learnable_paired(16, seed=3)
    margins = base_margins(run, pairs)
    ranked = sorted(range(16), key=lambda i: -margins[i])
    assert margins[ranked[0]] - margins[ranked[1]] > 1e-4  # a clear winner, else the check means nothing
    assert note["first_source_rows"][0] == ranked[0] + 1  # source rows are 1-based
    assert note["easiest_difficulty"] == pytest.approx(-margins[ranked[0]], abs=1e-3)


def test_curriculum_by_column_trains_easiest_pair_first(runs):
    """batch 1, sequential: step 1 trains the pair with the smallest `difficulty`, not the first row."""
    run = runs("curriculum_column")
    pairs = learnable_paired(16, seed=3)
    easiest = min(range(16), key=lambda i: pairs[i]["difficulty"])
    assert easiest != 0
    note = results(run)["curriculum"]
    assert note["column"] == "difficulty" and note["first_source_rows"][0] == easiest + 1
    losses = base_dpo_losses(run, [pairs[easiest], pairs[0]])
    assert abs(losses[0] - losses[1]) > 1e-3  # the two candidates are distinguishable
    assert train_losses(run)[0] == pytest.approx(losses[0], rel=1e-4)


# --------------------------------------------------------------------------- curriculum unit tests
def test_curriculum_order_is_stable_easy_to_hard():
    from prospect.data.curriculum import curriculum_order

    assert curriculum_order([3.0, 1.0, 2.0, 1.0]) == [1, 3, 2, 0]
    assert curriculum_order([]) == []
    with pytest.raises(ValueError):
        curriculum_order([1.0, float("nan")])


def test_reference_margin_largest_first():
    from prospect.data.curriculum import curriculum_order, reference_margin_difficulty

    # margins: -5 - -4 = -1, -3 - -5 = 2, -2 - -2.5 = 0.5 -> easiest (largest) first: 1, 2, 0
    diff = reference_margin_difficulty([-5.0, -3.0, -2.0], [-4.0, -5.0, -2.5])
    assert diff == [1.0, -2.0, -0.5]
    assert curriculum_order(diff) == [1, 2, 0]


def test_column_difficulty_direction_and_errors(tmp_path):
    from prospect.data.curriculum import column_difficulty, read_column

    f = tmp_path / "d.jsonl"
    f.write_text('{"level": 2}\n\n{"level": 0.5}\n{"other": 1}\n{"level": "hard"}\n')
    values = read_column(str(f), "level")
    assert values == {1: 2, 2: 0.5, 3: None, 4: "hard"}  # blank lines are not rows
    assert column_difficulty([1, 2], values, "level") == [2.0, 0.5]
    assert column_difficulty([1, 2], values, "-level") == [-2.0, -0.5]
    with pytest.raises(DPODataError, match=r"d.jsonl: row 3: field 'level': missing"):
        column_difficulty([1, 3], values, "level", source=str(f))
    with pytest.raises(DPODataError, match=r"row 4: field 'level': 'hard' is not a number"):
        column_difficulty([4], values, "level", source=str(f))


def test_apply_curriculum_reorders_dataset(tmp_path):
    import datasets

    from prospect.config.schema import RunConfig
    from prospect.data.curriculum import apply_curriculum

    ds = datasets.Dataset.from_dict(
        {"source_row": [1, 2, 3], "ref_chosen_logps": [-5.0, -3.0, -2.0], "ref_rejected_logps": [-4.0, -5.0, -2.5]}
    )
    cfg = RunConfig.model_validate({"method": "dpo", "dpo": {"curriculum": "reference_margin"}})
    out, note = apply_curriculum(ds, cfg)
    assert out["source_row"] == [2, 3, 1]
    assert note["mode"] == "reference_margin" and note["first_source_rows"] == [2, 3, 1]
    assert apply_curriculum(ds, RunConfig.model_validate({"method": "dpo"})) == (ds, None)


@pytest.mark.parametrize(
    "sections, message",
    [
        ({"method": "kto", "dpo": {"curriculum": "column", "curriculum_column": "x"}}, "unpaired rows"),
        ({"method": "dpo", "dpo": {"curriculum": "reference_margin", "reference_free": True}}, "reference_free"),
        (
            {"method": "dpo", "dpo": {"curriculum": "reference_margin", "precompute_ref_log_probs": False}},
            "precompute_ref_log_probs",
        ),
        ({"method": "dpo", "dpo": {"curriculum": "column"}}, "curriculum_column"),
    ],
)
def test_unusable_curriculum_is_refused(sections, message):
    from prospect.config.schema import RunConfig
    from prospect.data.curriculum import check_curriculum

    with pytest.raises(ConfigError, match=message):
        check_curriculum(RunConfig.model_validate(sections))


def test_paired_runs_log_kl_logps_and_perplexity(runs):
    """DPO-family runs log kl = mean(log pi - log pi_ref) over chosen completions: 0 at the first step (the
    adapter starts at zero, so the policy is the reference), then away from 0 as the policy moves."""
    rows = [r for r in read_jsonl(runs("dpo_sigmoid") / "metrics.jsonl") if "loss" in r]
    assert rows[0]["kl"] == pytest.approx(0.0, abs=1e-5)
    assert abs(rows[-1]["kl"]) > 1e-3
    for r in rows:
        assert r["logps/chosen"] < 0 and r["logps/rejected"] < 0 and r["perplexity"] > 1


# --------------------------------------------------------------------------- reference-free methods
def base_pair_logps(run_dir: Path, pairs: list[dict[str, Any]]) -> list[tuple[float, int, float, int]]:
    """(log pi(y_w|x), len_w, log pi(y_l|x), len_l) per pair under the base model (final/ adapter off)."""
    model, tok = _load_final(run_dir)

    def n_tokens(prompt: str, completion: str) -> int:
        p = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False)
        full = tok.apply_chat_template(
            [{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}], tokenize=False
        )
        return len(tok(full, add_special_tokens=False)["input_ids"]) - len(
            tok(p, add_special_tokens=False)["input_ids"]
        )

    out = []
    with model.disable_adapter():
        for p in pairs:
            out.append(
                (
                    completion_logp(model, tok, p["prompt"], p["chosen"]),
                    n_tokens(p["prompt"], p["chosen"]),
                    completion_logp(model, tok, p["prompt"], p["rejected"]),
                    n_tokens(p["prompt"], p["rejected"]),
                )
            )
    return out


def _log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x)) if x > -30 else x


def expected_first_loss(name: str, rows: list[tuple[float, int, float, int]]) -> float:
    """The paper formulas on the base model's log-probs (step 1: the adapter is still the identity)."""
    nll = -sum(r[0] for r in rows) / sum(r[1] for r in rows)
    avg = [(sw / lw, sl / ll) for sw, lw, sl, ll in rows]
    if name == "orpo":  # lambda 0.2; log odds = log(p / (1 - p)), p = exp(average log-prob)
        log_odds = [(aw - al) - (math.log(-math.expm1(aw)) - math.log(-math.expm1(al))) for aw, al in avg]
        return nll - 0.2 * sum(_log_sigmoid(z) for z in log_odds) / len(rows)
    if name == "simpo":  # beta 2, gamma 0.5
        return -sum(_log_sigmoid(2.0 * (aw - al) - 0.5) for aw, al in avg) / len(rows)
    # cpo: beta 0.5 (the shared runs' dpo.beta), sigmoid on summed log-probs, alpha 0.5
    return -sum(_log_sigmoid(BETA * (sw - sl)) for sw, _, sl, _ in rows) / len(rows) + 0.5 * nll


@pytest.mark.parametrize("name", ["orpo", "simpo", "cpo"])
def test_reference_free_methods_train_without_a_reference(runs, name):
    """Two steps through `prospect train`: no reference pass or precompute, finite losses, and the first
    loss equals the method's formula on the base model's own log-probs and lengths."""
    run = runs(name)
    res = results(run)
    assert res["global_step"] == 2 and res["nonfinite_steps"] == 0
    assert res["reference"]["mode"] == "reference_free"
    losses = train_losses(run)
    assert len(losses) == 2 and all(math.isfinite(x) for x in losses)
    expected = expected_first_loss(name, base_pair_logps(run, learnable_paired(16, seed=3)))
    assert losses[0] == pytest.approx(expected, rel=1e-4)
    assert losses[1] != pytest.approx(losses[0], rel=1e-6)  # the first step moved the policy


def test_sweep_over_a_reference_free_setting(tmp_path):
    """`prospect sweep` over method.simpo_gamma trains one run per value, each with its gamma."""
    data = write_jsonl(tmp_path / "pairs.jsonl", learnable_paired(8, seed=3))
    cfg = write_config(
        tmp_path / "sweep.yaml",
        method={"name": "simpo"},
        data={"train_file": str(data), "validation_split_percentage": 25.0},
        training={"max_steps": 2, "batch_size": 4, "run_name": None},
        dpo={"beta": 2.0, "max_length": 96, "max_prompt_length": 48, "max_target_length": 48},
        evaluation={"num_generation_samples": 0},
        sweep={"method.simpo_gamma": [0.0, 1.0]},
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("prospect.eval.plots.plot_run", lambda run_dir: [])
        assert main(["sweep", str(cfg)]) == 0
    tables = list((tmp_path / "runs").rglob("results.csv"))
    assert len(tables) == 1
    rows = list(csv.DictReader(tables[0].open()))
    assert [float(r["method.simpo_gamma"]) for r in rows] == [0.0, 1.0]
    assert {r["global_step"] for r in rows} == {"2"}
    gammas = [yaml.safe_load((tables[0].parent / r["run"] / "config.yaml").read_text())["method"]["simpo_gamma"]
              for r in rows]  # fmt: skip
    assert gammas == [0.0, 1.0]
