"""Worker subprocess of bench/bench_train.py: one trainer (Prospect or TRL 1.16) on one spec.

    python bench/train_workers.py SPEC.json     # prints one line "RESULT {json}"

Each trainer runs in its own process so that its peak RSS (ru_maxrss) is its own.
"""

from __future__ import annotations

import json
import math
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from profiles import BATCH  # noqa: E402

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]


def _lora_config() -> Any:
    """Prospect's LoRA settings (examples/*.yaml); init_lora_weights=False: B != 0 from the start (bench_prefix)."""
    from peft import LoraConfig

    return LoraConfig(
        r=16,
        lora_alpha=32,
        lora_dropout=0.0,
        target_modules=LORA_TARGETS,
        init_lora_weights=False,
        task_type="CAUSAL_LM",
    )


def _load_base(model_dir: str, dtype: str) -> Any:
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(model_dir, dtype=getattr(torch, dtype), attn_implementation="sdpa")


def _load_lora_model(model_dir: str, seed: int, dtype: str) -> Any:
    import torch
    from peft import get_peft_model

    model = _load_base(model_dir, dtype)
    torch.manual_seed(seed)
    return get_peft_model(model, _lora_config())


def _adapter_checksum(model: Any) -> float:
    return float(
        sum(p.detach().double().sum() for n, p in model.named_parameters() if "lora_" in n and ".default." in n)
    )


class _Timer:
    """TrainerCallback recording each optimizer step's wall time."""

    def __new__(cls) -> Any:
        from transformers import TrainerCallback

        class T(TrainerCallback):
            def __init__(self) -> None:
                self.times: list[float] = []
                self._t = 0.0

            def on_step_begin(self, *a: Any, **k: Any) -> None:
                self._t = time.perf_counter()

            def on_step_end(self, *a: Any, **k: Any) -> None:
                self.times.append(time.perf_counter() - self._t)

        return T()


def _record_losses(trainer: Any) -> list[float]:
    """Wrap compute_loss to keep every micro-batch loss at full precision (the logged one is rounded)."""
    losses: list[float] = []
    inner = trainer.compute_loss

    def compute_loss(*a: Any, **k: Any) -> Any:
        out = inner(*a, **k)
        loss = out[0] if isinstance(out, tuple) else out
        losses.append(float(loss.detach().float()))
        return out

    trainer.compute_loss = compute_loss
    return losses


def _sequential(trainer_cls: Any) -> Any:
    from torch.utils.data import SequentialSampler

    class Seq(trainer_cls):
        def _get_train_sampler(self, *a: Any, **k: Any) -> Any:
            return SequentialSampler(self.train_dataset)

    return Seq


def prospect_config(spec: dict, data: dict, work: Path) -> Any:
    """The RunConfig of a Prospect run, built in code: the bench's settings, Prospect's defaults otherwise.

    The rows go to a JSONL file that `prepare` reads like any user's; the prompt is plain text
    (no chat template, as TRL does with plain strings), so Prospect's tokenizer gives TRL's ids
    (checked in `run_prospect`). Batch order: Prospect's default (shuffled, length-grouped) or,
    for prospect-seq / prospect-bf16, TRL's sequential order (training.shuffle: false).
    """
    from prospect.config.schema import RunConfig

    method = data["method"]
    cols = ("prompt", "completion", "label") if method == "kto" else ("prompt", "chosen", "rejected")
    train_file = work / "train.jsonl"
    train_file.write_text("".join(json.dumps({k: r[k] for k in cols}) + "\n" for r in data["rows"]))
    section: dict[str, Any] = {"beta": 0.1, "max_length": 1024, "max_prompt_length": 1024, "max_target_length": 1024}
    if method == "kto":
        section |= {"loss_type": "kto", "reference_point": "batch_mismatch"}
    else:
        section |= {"loss_type": "sigmoid"}
    return RunConfig.model_validate(
        {
            "method": {"name": method},
            "model": {
                "name": spec["model_dir"],
                "torch_dtype": "bfloat16" if spec.get("bf16") else "float32",  # bf16: frozen base, fp32 adapters
                "attn_implementation": "sdpa",
            },
            "training": {
                "learning_rate": spec["lr"],
                "batch_size": BATCH,
                "max_steps": spec["warm"] + spec["steps"],
                "seed": spec["seed"],
                "output_dir": str(work / "runs"),
                "run_name": "bench",
                "resume": False,
                "shuffle": spec.get("order") != "sequential",
                "share_prompt": spec.get("share_prompt", True),
                "padding_free": bool(spec.get("padding_free")),
            },
            "data": {"train_file": str(train_file), "validation_split_percentage": 0, "apply_chat_template": False},
            method: section,
            "optimization": {
                "use_lora": True,
                "lora_rank": 16,
                "lora_alpha": 32,
                "lora_dropout": 0.0,
                "lora_target_modules": LORA_TARGETS,
                "use_gradient_checkpointing": True if spec.get("gc") else "auto",
                **spec.get("optimization", {}),  # probes of other settings (e.g. activation_budget_gb)
            },
            "logging": {"report_to": []},
        }
    )


def _same_ids(ds: Any, rows: list[dict], cols: tuple[str, ...]) -> bool:
    return len(ds) == len(rows) and all(list(ds[i][c]) == rows[i][c] for i in range(len(rows)) for c in cols)


def run_prospect(spec: dict, data: dict) -> dict:
    """Prospect through its own recipe stages (recipes/training.py): prepare -> load_models -> tokenize ->
    add_reference -> make_trainer -> fit. `finish` (final eval, results.json, plots) is left out: TRL's
    train() has no counterpart, and the timed numbers end with the last step."""
    work = Path(spec["work_dir"])
    work.mkdir(parents=True, exist_ok=True)
    os.environ["PROSPECT_CACHE"] = str(work / "cache")  # a cold cache: run 1 computes the reference
    from prospect.recipes.preparation import prepare
    from prospect.recipes.training import add_reference, fit, load_models, make_trainer, tokenize

    cfg = prospect_config(spec, data, work)
    run = prepare(cfg, resume=False)
    models = load_models(run)
    # The one hand step: Prospect's LoRA starts at B = 0 (policy = reference, so the first-step loss
    # would agree with any token ids); both sides get the same non-zero adapter instead.
    seeded_adapter_(models.policy, spec["seed"])
    t0 = time.perf_counter()
    tokens = tokenize(run, models)
    tokenize_s = time.perf_counter() - t0
    id_cols = (
        ("prompt_ids", "completion_ids") if data["method"] == "kto" else ("prompt_ids", "chosen_ids", "rejected_ids")
    )
    same_ids = _same_ids(tokens.train, data["rows"], id_cols)
    # Reference log-probs: run 1 of a sweep computes and caches them, run 2 finds them.
    ref_cost = {}
    for i in (1, 2):
        t0 = time.perf_counter()
        train_data = add_reference(run, models, tokens)
        cache = train_data.notes["reference"].get("cache", {}).get("train", "none")
        ref_cost[f"run{i}"] = {"seconds": round(time.perf_counter() - t0, 3), "cache": cache}
    trainer = make_trainer(run, models, train_data, quiet=True)
    share_prompt = bool(getattr(trainer.data_collator, "share_prompt", False))
    timer = _Timer()
    trainer.add_callback(timer)
    losses = _record_losses(trainer)
    ref_time = _time_method(trainer, "reference_logps")  # KTO's on-the-fly mismatched reference pass
    step_tokens = _count_batch_tokens(trainer)
    checksum = _adapter_checksum(models.policy)
    fit(run, trainer)
    return {
        "times": timer.times,
        "losses": losses,
        "reference_precompute": ref_cost,
        "tokenize_s": round(tokenize_s, 3),
        "token_ids_match": same_ids,
        "share_prompt": share_prompt,
        "gradient_checkpointing": train_data.notes.get("gradient_checkpointing"),
        "kto_weights": run.weights_note,
        "adapter_checksum": checksum,
        "ref_mismatched_seconds": ref_time[0],
        "step_tokens": step_tokens,
    }


def _count_batch_tokens(trainer: Any) -> list[int]:
    """Wrap the collator to record each batch's tokens (prompt once + completions), in the sampler's order."""
    counts: list[int] = []
    inner = trainer.data_collator
    cols = ("completion_ids", "chosen_ids", "rejected_ids")

    def collate(features: list[dict]) -> Any:
        counts.append(sum(len(f["prompt_ids"]) + sum(len(f[c]) for c in cols if c in f) for f in features))
        return inner(features)

    trainer.data_collator = collate
    return counts


def _time_method(obj: Any, name: str) -> list[float]:
    """Wrap obj.name to add its wall time to the returned one-element list."""
    total = [0.0]
    inner = getattr(obj, name)

    def timed(*a: Any, **k: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return inner(*a, **k)
        finally:
            total[0] += time.perf_counter() - t0

    setattr(obj, name, timed)
    return total


def seeded_adapter_(model: Any, seed: int) -> None:
    """Set every LoRA matrix to U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (nn.Linear's default init, so B != 0)
    from one generator seeded with `seed`, parameters in name order: the same adapter for any trainer
    that wraps the same model with the same LoraConfig (checked by `_adapter_checksum`)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in sorted((n, p) for n, p in model.named_parameters() if "lora_" in n):
            bound = 1.0 / math.sqrt(p.shape[1])
            p.copy_(torch.empty(p.shape, dtype=torch.float32).uniform_(-bound, bound, generator=gen).to(p.dtype))


def run_trl(spec: dict, data: dict) -> dict:
    import torch
    from datasets import Dataset

    method, rows = data["method"], data["rows"]
    # TRL builds the adapter itself (peft_config), so its reference is the base model with the
    # adapter disabled, as Prospect's; seeded_adapter_ then gives it Prospect's initial adapter.
    model = _load_base(spec["model_dir"], "float32")
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(spec["model_dir"])
    common = dict(
        output_dir=str(Path(spec["work_dir"]) / "trl"),
        per_device_train_batch_size=BATCH,
        max_steps=spec["warm"] + spec["steps"],
        learning_rate=spec["lr"],
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        seed=spec["seed"],
        bf16=False,
        use_cpu=True,
        disable_tqdm=True,
        gradient_checkpointing=bool(spec["gc"]),
        beta=0.1,
        max_length=1024,
        dataset_num_proc=None,
    )
    if method == "kto":
        from trl import KTOConfig, KTOTrainer

        ds = Dataset.from_dict({k: [r[k] for r in rows] for k in ("prompt", "completion", "label")})
        args, cls = KTOConfig(**common), KTOTrainer
        id_cols = ("prompt_ids", "completion_ids")
    else:
        from trl import DPOConfig, DPOTrainer

        ds = Dataset.from_dict({k: [r[k] for r in rows] for k in ("prompt", "chosen", "rejected")})
        args, cls = DPOConfig(**common), DPOTrainer
        id_cols = ("prompt_ids", "chosen_ids", "rejected_ids")
    torch.manual_seed(spec["seed"])
    trainer = _sequential(cls)(
        model=model, args=args, train_dataset=ds, processing_class=tok, peft_config=_lora_config()
    )
    # TRL tokenizes itself: check it sees exactly the ids Prospect gets.
    tds = trainer.train_dataset
    same = all(list(tds[i][c]) == rows[i][c] for i in range(len(rows)) for c in id_cols)
    timer = _Timer()
    trainer.add_callback(timer)
    losses = _record_losses(trainer)
    seeded_adapter_(trainer.model, spec["seed"])
    checksum = _adapter_checksum(trainer.model)
    trainer.train()
    return {"times": timer.times, "losses": losses, "token_ids_match": same, "adapter_checksum": checksum}


def worker(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    data = json.loads(Path(spec["data_file"]).read_text())
    if spec.get("n_rows"):  # the rows of the timed comparison; the drift runs use more
        data["rows"] = data["rows"][: spec["n_rows"]]
    import torch

    torch.set_num_threads(spec.get("threads") or torch.get_num_threads())
    t0 = time.perf_counter()
    out = run_prospect(spec, data) if spec["impl"] == "prospect" else run_trl(spec, data)
    out["wall_s"] = round(time.perf_counter() - t0, 2)
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps(out), flush=True)


if __name__ == "__main__":
    worker(sys.argv[1])
