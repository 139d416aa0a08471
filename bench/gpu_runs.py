"""The runs of bench/gpu_check.py: Qwen2.5-shaped models from configs, Prospect, TRL 1.16 and QLoRA trainers."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from train_workers import _lora_config, _record_losses, _sequential

BATCH = 8
SEED = 0
VOCAB = 151936
SHAPES: dict[str, dict[str, Any]] = {  # Qwen2.5 configs (config.json of each), random weights
    "0.5b": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                 num_key_value_heads=2, tie_word_embeddings=True),
    "1.5b": dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                 num_key_value_heads=2, tie_word_embeddings=True),
    "7b": dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
               num_key_value_heads=4, tie_word_embeddings=False, vocab_size=152064),
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, tie_word_embeddings=True, vocab_size=800),
}  # fmt: skip


# --------------------------------------------------------------------------- models and data
def build_model(shape: str, device: str, dtype: Any) -> Any:
    import torch
    from transformers import AutoModelForCausalLM, Qwen2Config

    spec = {"vocab_size": VOCAB, **SHAPES[shape]}
    cfg = Qwen2Config(**spec, max_position_embeddings=32768, rope_theta=1e6, pad_token_id=0, eos_token_id=3)
    torch.manual_seed(SEED)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(cfg, attn_implementation="sdpa", dtype=dtype)
    return model.eval()


def quantized_copy(model: Any, device: str, tmp: Path) -> Any:
    """The same weights, saved and loaded back in 4-bit NF4 (as `optimization.use_quantization: true`)."""
    import torch
    from peft import prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    path = tmp / "base"
    model.save_pretrained(path)
    compute = torch.bfloat16 if device != "cpu" else torch.float32
    q = BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=compute
    )
    dev = 0 if device == "cuda" else device
    loaded = AutoModelForCausalLM.from_pretrained(
        path, quantization_config=q, device_map={"": dev}, attn_implementation="sdpa", dtype=compute
    )
    if device == "cpu":
        # bitsandbytes 0.50 repacks 4-bit weights for AVX512-BF16 inference at the first no-grad forward in
        # eval mode (the reference pass) and keeps them so; training forwards then fail on the packed path.
        for m in loaded.modules():
            if hasattr(m, "support_avx512bf16_for_cpu"):
                m.support_avx512bf16_for_cpu = False
    return prepare_model_for_kbit_training(loaded, use_gradient_checkpointing=False)


def matmul_weights(model: Any) -> int:
    """N: weights taking part in a matmul per token (decoder linears + LM head; not the embedding lookup)."""
    cfg = model.config
    emb = cfg.vocab_size * cfg.hidden_size
    total = sum(p.numel() for n, p in model.named_parameters() if "lora_" not in n)
    return total if cfg.tie_word_embeddings else total - emb  # tied: the one matrix is the LM head's matmul


def step_tokens(method: str, rows: list[dict]) -> list[int]:
    if method == "kto":
        return [len(r["prompt_ids"]) + len(r["completion_ids"]) for r in rows]
    return [2 * len(r["prompt_ids"]) + len(r["chosen_ids"]) + len(r["rejected_ids"]) for r in rows]


# --------------------------------------------------------------------------- runs
def _timer(sync: Any) -> Any:
    from transformers import TrainerCallback

    class Timer(TrainerCallback):
        def __init__(self) -> None:
            self.times: list[float] = []
            self.t = 0.0

        def on_step_begin(self, *a: Any, **k: Any) -> None:
            sync()
            self.t = time.perf_counter()

        def on_step_end(self, *a: Any, **k: Any) -> None:
            sync()
            self.times.append(time.perf_counter() - self.t)

    return Timer()


def _args(cls: Any, out: str, steps: int, bf16: bool, device: str, **extra: Any) -> Any:
    return cls(
        output_dir=out,
        per_device_train_batch_size=BATCH,
        max_steps=steps,
        learning_rate=1e-5,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        seed=SEED,
        bf16=bf16,
        use_cpu=device == "cpu",
        disable_tqdm=True,
        remove_unused_columns=False,
        **extra,
    )


def run_prospect(model: Any, method: str, rows: list[dict], steps: int, bf16: bool, device: str, out: str) -> dict:
    import torch
    from peft import get_peft_model
    from transformers import TrainingArguments

    from prospect.config.schema import DPOConfig, KTOConfig
    from prospect.data.collate import PairedCollator, UnpairedCollator
    from prospect.engine.prefix import supports_prompt_sharing
    from prospect.engine.reference import compute_reference_logps
    from prospect.engine.trainer import PreferenceTrainer
    from prospect.losses import build_loss, build_reference_point

    torch.manual_seed(SEED)
    model = get_peft_model(model, _lora_config())
    if method == "kto":
        raw = {"method": {"name": "kto"}, "kto": {"beta": 0.1, "desirable_weight": 1.0, "undesirable_weight": 1.0}}
        cfg = KTOConfig.model_validate(raw)
        seqs = [(r["prompt_ids"], r["completion_ids"]) for r in rows]
    else:
        cfg = DPOConfig.model_validate({"method": {"name": "dpo"}, "dpo": {"beta": 0.1, "loss_type": "sigmoid"}})
        seqs = [(r["prompt_ids"], r["chosen_ids"]) for r in rows] + [(r["prompt_ids"], r["rejected_ids"]) for r in rows]
    t0 = time.perf_counter()
    with model.disable_adapter(), torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
        ref = compute_reference_logps(model, seqs, pad_id=0, batch_tokens=16384, desc="reference").tolist()
    ref_s = time.perf_counter() - t0
    n = len(rows)
    keep = ("prompt_ids", "completion_ids", "label", "chosen_ids", "rejected_ids")
    ds = [{k: v for k, v in r.items() if k in keep} for r in rows]
    for i, r in enumerate(ds):
        if method == "kto":
            r["ref_logps"] = ref[i]
        else:
            r["ref_chosen_logps"], r["ref_rejected_logps"] = ref[i], ref[n + i]
    share = supports_prompt_sharing(model)
    collator = (UnpairedCollator if method == "kto" else PairedCollator)(
        pad_id=0, max_length=4096, build_mismatched=method == "kto", share_prompt=share
    )
    trainer = _sequential(PreferenceTrainer)(
        model=model,
        args=_args(TrainingArguments, out, steps, bf16, device),
        train_dataset=ds,
        data_collator=collator,
        loss_fn=build_loss(cfg),
        z0_estimator=build_reference_point("batch_mismatch") if method == "kto" else None,
    )
    return _train(trainer, {"reference_precompute_s": round(ref_s, 3), "share_prompt": share})


def run_trl(model: Any, method: str, rows: list[dict], steps: int, bf16: bool, device: str, out: str, tok: Any) -> dict:
    import torch
    from datasets import Dataset

    common = dict(gradient_checkpointing=False, beta=0.1, max_length=4096, dataset_num_proc=None)
    if method == "kto":
        from trl import KTOConfig as Config
        from trl import KTOTrainer as Trainer

        cols, ids = ("prompt", "completion", "label"), ("prompt_ids", "completion_ids")
        common.update(desirable_weight=1.0, undesirable_weight=1.0)
    else:
        from trl import DPOConfig as Config
        from trl import DPOTrainer as Trainer

        cols, ids = ("prompt", "chosen", "rejected"), ("prompt_ids", "chosen_ids", "rejected_ids")
    ds = Dataset.from_dict({k: [r[k] for r in rows] for k in cols})
    torch.manual_seed(SEED)  # TRL builds the adapter: the same seed right before get_peft_model
    trainer = _sequential(Trainer)(
        model=model,
        args=_args(Config, out, steps, bf16, device, **common),
        train_dataset=ds,
        processing_class=tok,
        peft_config=_lora_config(),
    )
    tds = trainer.train_dataset
    same = all(list(tds[i][c]) == rows[i][c] for i in range(len(rows)) for c in ids)
    return _train(trainer, {"token_ids_match": same})


def _train(trainer: Any, extra: dict) -> dict:
    import torch

    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    timer = _timer(sync)
    trainer.add_callback(timer)
    losses = _record_losses(trainer)
    trainer.train()
    return {"times": timer.times, "losses": losses, **extra}
