"""Worker subprocess of bench/bench_train.py: one trainer (Prospect or TRL 1.16) on one spec.

    python bench/train_workers.py SPEC.json     # prints one line "RESULT {json}"

Each trainer runs in its own process so that its peak RSS (ru_maxrss) is its own.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from profiles import BATCH  # noqa: E402

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]


# --------------------------------------------------------------------------- worker
def _lora_config() -> Any:
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


def run_prospect(spec: dict, data: dict) -> dict:
    import torch
    from datasets import Dataset
    from transformers import TrainingArguments

    from prospect.config.schema import DPOConfig, KTOConfig
    from prospect.data.collate import PairedCollator, UnpairedCollator
    from prospect.engine.model import base_weights_fingerprint
    from prospect.engine.prefix import supports_prompt_sharing
    from prospect.engine.reference import cached_reference_logps, compute_reference_logps, reference_cache_key
    from prospect.engine.trainer import PreferenceTrainer
    from prospect.losses import build_loss, build_reference_point

    torch.manual_seed(spec["seed"])
    method, rows = data["method"], data["rows"]
    model = _load_lora_model(spec["model_dir"], spec["seed"], "bfloat16" if spec.get("bf16") else "float32")
    if spec.get("gc"):  # as engine/model.py does for optimization.use_gradient_checkpointing (turns sharing off)
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
        model.enable_input_require_grads()
    pad_id = spec["pad_id"]
    if method == "kto":
        cfg = KTOConfig.model_validate(
            {
                "method": {"name": "kto"},
                "kto": {
                    "beta": 0.1,
                    "desirable_weight": 1.0,
                    "undesirable_weight": 1.0,
                    "loss_type": "kto",
                    "reference_point": "batch_mismatch",
                },
            }
        )
        cols = {
            "prompt_ids": [r["prompt_ids"] for r in rows],
            "completion_ids": [r["completion_ids"] for r in rows],
            "label": [r["label"] for r in rows],
        }
        seqs = list(zip(cols["prompt_ids"], cols["completion_ids"]))
    else:
        cfg = DPOConfig.model_validate({"method": {"name": "dpo"}, "dpo": {"beta": 0.1, "loss_type": "sigmoid"}})
        cols = {k: [r[k] for r in rows] for k in ("prompt_ids", "chosen_ids", "rejected_ids")}
        seqs = list(zip(cols["prompt_ids"], cols["chosen_ids"])) + list(zip(cols["prompt_ids"], cols["rejected_ids"]))

    # Reference log-probs: run 1 of a sweep computes and caches them, run 2 finds them.
    ref_cost = {}
    cache_dir = Path(spec["ref_cache_dir"])
    for run in (1, 2):
        t0 = time.perf_counter()
        key = reference_cache_key(
            base_fingerprint=base_weights_fingerprint(model),
            tokenizer_key="bench",
            data_key=str(hash(json.dumps(seqs))),
            settings={"method": method},
        )

        def compute() -> dict:
            with model.disable_adapter():
                return {"ref": compute_reference_logps(model, seqs, pad_id=pad_id, desc="reference")}

        tensors, status = cached_reference_logps(key, compute, cache_dir=cache_dir)
        ref_cost[f"run{run}"] = {"seconds": round(time.perf_counter() - t0, 3), "cache": status}
    ref = tensors["ref"].tolist()
    if method == "kto":
        cols["ref_logps"] = ref
        cols["length"] = [len(p) + len(c) for p, c in seqs]
    else:
        n = len(rows)
        cols["ref_chosen_logps"], cols["ref_rejected_logps"] = ref[:n], ref[n:]
        cols["length"] = [
            len(p) + max(len(c), len(r))
            for p, c, r in zip(cols["prompt_ids"], cols["chosen_ids"], cols["rejected_ids"])
        ]
    ds = Dataset.from_dict(cols)

    # Prospect's default (training.share_prompt: true) unless the spec turns it off
    share = spec.get("share_prompt", True) and not spec.get("padding_free") and supports_prompt_sharing(model)
    collator_cls = UnpairedCollator if method == "kto" else PairedCollator
    collator = collator_cls(
        pad_id=pad_id,
        packed=bool(spec.get("padding_free")),
        max_length=1024,
        build_mismatched=method == "kto",
        share_prompt=share,
    )
    grouped = spec.get("order") == "grouped"
    args = TrainingArguments(
        output_dir=spec["out_dir"],
        per_device_train_batch_size=BATCH,
        max_steps=spec["warm"] + spec["steps"],
        learning_rate=spec["lr"],
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        seed=spec["seed"],
        remove_unused_columns=False,
        use_cpu=True,
        disable_tqdm=True,
        train_sampling_strategy="group_by_length" if grouped else "sequential",
        length_column_name="length",
    )
    trainer_cls = PreferenceTrainer if grouped else _sequential(PreferenceTrainer)
    trainer = trainer_cls(
        model=model,
        args=args,
        train_dataset=ds,
        data_collator=collator,
        loss_fn=build_loss(cfg),
        z0_estimator=build_reference_point("batch_mismatch") if method == "kto" else None,
    )
    timer = _Timer()
    trainer.add_callback(timer)
    losses = _record_losses(trainer)
    # Time spent in the on-the-fly reference pass (KTO's mismatched pairs) inside the timed steps.
    ref_time = [0.0]
    inner_ref = trainer.reference_logps

    def timed_ref(*a: Any, **k: Any) -> Any:
        t0 = time.perf_counter()
        out = inner_ref(*a, **k)
        ref_time[0] += time.perf_counter() - t0
        return out

    trainer.reference_logps = timed_ref
    checksum = _adapter_checksum(model)
    trainer.train()
    return {
        "times": timer.times,
        "losses": losses,
        "reference_precompute": ref_cost,
        "share_prompt": share,
        "adapter_checksum": checksum,
        "ref_mismatched_seconds": ref_time[0],
    }


def run_trl(spec: dict, data: dict) -> dict:
    import torch
    from datasets import Dataset

    method, rows = data["method"], data["rows"]
    # TRL builds the adapter itself (peft_config), so its reference is the base model with the
    # adapter disabled, as Prospect's; same seed right before get_peft_model -> same adapter.
    model = _load_base(spec["model_dir"], "float32")
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(spec["model_dir"])
    common = dict(
        output_dir=spec["out_dir"],
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
