"""Prospect vs TRL 1.16 (KTOTrainer, DPOTrainer): training throughput, memory and loss agreement.

    HF_HUB_OFFLINE=1 python bench/bench_train.py                  # full table (tiny + SmolLM2-135M, KTO + DPO)
    HF_HUB_OFFLINE=1 python bench/bench_train.py --quick          # tiny model only, few steps (~1-2 min)
    python bench/bench_train.py --cases smol-kto --steps 3 --warm 1 --no-ablations

Every trainer runs in its own subprocess (peak RSS = that process's ru_maxrss), one after the
other, on the same token ids, batch 8, LoRA r=16 on q/k/v/o with a non-zero initialisation
(PEFT init_lora_weights=False, same seed), float32, the same sequential batch order:

  prospect        Prospect's defaults: rows grouped by length, prompts run once (shared by KTO's
                  mismatched pass, by DPO's chosen and rejected), reference log-probs precomputed (under
                  inference_mode, sorted by length, cached), mismatched pass without autograd; the same
                  rows as TRL, in length-grouped batches
  prospect-seq    the same in TRL's batch order: its first-step loss is compared with TRL's (must agree to 1e-5)
  trl-gc / trl    TRL with its defaults (gradient checkpointing on) / with it off; the faster is the peer
  ablations       prospect with share_prompt off, with padding_free packing, and in bfloat16 (frozen base in
                  bf16, adapters in float32) with its loss drift against prospect-seq (float32)

Throughput is given twice: over the timed steps only, and over the whole run including the
reference log-prob precompute (Prospect pays it once, before step 1; TRL computes the
reference inside every step), so neither side's way of spending time is left out.

`--memory` adds one Prospect KTO step on SmolLM2 at batch 8 with 1024-token sequences (512 prompt
+ 512 completion tokens) and reports its peak RSS.

Achieved GFLOP/s counts the same nominal work for both (the passes TRL's algorithm needs on
the real, unpadded tokens: 2 FLOPs per parameter per token forward, 2 more for a backward
through activations, plus the LM head on completion tokens), so it is a throughput expressed
in matmul units, set against this machine's float32 matmul peak measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BATCH = 8
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]


# --------------------------------------------------------------------------- data and models
def _word_pool(tok: Any, size: int = 3000) -> list[str]:
    """Words that are exactly one token after a space, so text lengths in tokens are controlled."""
    words = []
    for piece, _ in sorted(tok.get_vocab().items(), key=lambda kv: kv[1]):
        if piece.startswith("Ġ") and piece[1:].isalpha() and piece[1:].islower() and len(piece) > 3:
            w = piece[1:]
            if len(tok(" " + w, add_special_tokens=False)["input_ids"]) == 1:
                words.append(w)
        if len(words) >= size:
            break
    return words


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def make_data(
    tok: Any, method: str, n_rows: int, seed: int, prompt_range=(32, 256), completion_range=(16, 256)
) -> dict:
    """Deterministic text rows of unequal lengths and their token ids, tokenized the way TRL 1.16 does
    (prompt alone; prompt+completion; the completion starts where the two diverge; EOS appended)."""
    rng = random.Random(seed)
    pool = _word_pool(tok)
    eos = tok.eos_token

    def text(lo: int, hi: int) -> str:
        return "".join(" " + rng.choice(pool) for _ in range(rng.randint(lo, hi)))

    def ids(prompt: str, completion: str) -> tuple[list[int], list[int]]:
        p = tok(prompt)["input_ids"]
        full = tok(prompt + completion)["input_ids"]
        k = _common_prefix(p, full)
        return p[:k], full[k:]

    rows = []
    for i in range(n_rows):
        prompt = text(*prompt_range)
        if method == "kto":
            completion = text(*completion_range) + eos
            p, c = ids(prompt, completion)
            rows.append(
                {"prompt": prompt, "completion": completion, "label": i % 2 == 0, "prompt_ids": p, "completion_ids": c}
            )
        else:
            chosen, rejected = text(*completion_range) + eos, text(*completion_range) + eos
            p, c = ids(prompt, chosen)
            p2, r = ids(prompt, rejected)
            k = min(len(p), len(p2))
            rows.append(
                {
                    "prompt": prompt,
                    "chosen": chosen,
                    "rejected": rejected,
                    "prompt_ids": p[:k],
                    "chosen_ids": (p + c)[k:],
                    "rejected_ids": (p2 + r)[k:],
                }
            )
    return {"method": method, "rows": rows}


def tiny_model_dir(tok: Any, root: Path) -> Path:
    """A 4-layer Llama (hidden 128) with the real tokenizer's vocabulary, built from a config (random weights)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    d = root / "tiny-llama"
    if not (d / "config.json").exists():
        torch.manual_seed(0)
        cfg = LlamaConfig(
            vocab_size=len(tok),
            hidden_size=128,
            intermediate_size=256,
            num_hidden_layers=4,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=2048,
            tie_word_embeddings=True,
            pad_token_id=tok.pad_token_id,
            eos_token_id=tok.eos_token_id,
        )
        LlamaForCausalLM(cfg).save_pretrained(d)
        tok.save_pretrained(d)
    return d


def smol_model_dir() -> Path:
    from prospect.engine.model import materialize_model_source

    return Path(materialize_model_source("smollm2-135m-instruct"))


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


# --------------------------------------------------------------------------- parent
def matmul_peak(dtype_name: str, n: int = 1024, reps: int = 10) -> float:
    """Best-of GFLOP/s of an n x n matmul in this process (all threads)."""
    import torch

    dtype = getattr(torch, dtype_name)
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    for _ in range(3):
        a @ b
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def nominal_flops(model_dir: Path, data: dict, step_rows: list[list[int]]) -> list[float]:
    """Nominal FLOPs of each step (TRL's algorithm on real tokens; see module docstring)."""
    cfg = json.loads((model_dir / "config.json").read_text())
    d, L, ff, V = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["intermediate_size"], cfg["vocab_size"]
    kv = d * cfg.get("num_key_value_heads", cfg["num_attention_heads"]) // cfg["num_attention_heads"]
    per_tok = 2 * L * (2 * d * d + 2 * d * kv + 3 * d * ff)  # forward FLOPs per token, matmuls of the blocks
    head = 2 * d * V  # forward FLOPs of the LM head per completion token
    out = []
    for idx in step_rows:
        rows = [data["rows"][i] for i in idx]
        f = 0.0
        if data["method"] == "kto":
            tok = sum(len(r["prompt_ids"]) + len(r["completion_ids"]) for r in rows)
            comp = sum(len(r["completion_ids"]) for r in rows)
            # policy fwd+bwd (x2), policy mismatched fwd, reference fwd on main and mismatched
            f = (2 + 1 + 2) * (tok * per_tok + comp * head) + tok * per_tok + comp * head
        else:
            tok = sum(2 * len(r["prompt_ids"]) + len(r["chosen_ids"]) + len(r["rejected_ids"]) for r in rows)
            comp = sum(len(r["chosen_ids"]) + len(r["rejected_ids"]) for r in rows)
            f = (2 + 1) * (tok * per_tok + comp * head)  # policy fwd+bwd, reference fwd
        out.append(f)
    return out


def spawn(spec: dict, tmp: Path, name: str) -> dict:
    spec_path = tmp / f"spec-{name}.json"  # not f"{name}.json": that may be the run's data file
    spec_path.write_text(json.dumps(spec))
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", PYTHONWARNINGS="ignore")
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, __file__, "--worker", str(spec_path)], capture_output=True, text=True, env=env
    )
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if proc.returncode != 0 or line is None:
        print(f"  {name}: FAILED (rc={proc.returncode})\n{proc.stderr[-3000:]}", flush=True)
        return {"failed": True}
    res = json.loads(line[7:])
    print(f"  {name}: {time.perf_counter() - t0:.0f}s, steps {[round(t, 2) for t in res['times']]}", flush=True)
    return res


def summarize(res: dict, warm: int, samples_per_step: int, tokens: list[int], flops: list[float]) -> dict:
    t = res["times"][warm:]
    tt = sum(t)
    # The whole run: every step (warm-up included) plus the reference precompute, if any.
    precompute = res.get("reference_precompute", {}).get("run1", {}).get("seconds", 0.0)
    total = sum(res["times"]) + precompute
    return {
        "samples_s": samples_per_step * len(t) / tt,
        "tokens_s": sum(tokens[warm : warm + len(t)]) / tt,
        "gflops": sum(flops[warm : warm + len(t)]) / tt / 1e9,
        "rss_mb": res["peak_rss_mb"],
        "step_s": tt / len(t),
        "samples_s_with_reference": samples_per_step * len(res["times"]) / total,
        "reference_precompute_s": precompute,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--quick", action="store_true", help="tiny model only, 2 warm + 3 timed steps")
    ap.add_argument("--cases", default="tiny-kto,tiny-dpo,smol-kto,smol-dpo")
    ap.add_argument("--steps", type=int, default=None, help="timed steps (default 5 tiny, 3 smol)")
    ap.add_argument("--warm", type=int, default=None, help="warm steps (default 2 tiny, 1 smol)")
    ap.add_argument("--drift-steps", type=int, default=20, help="steps of the bf16 vs float32 drift run")
    ap.add_argument("--memory", action="store_true", help="also: peak RSS of a SmolLM2 KTO step at 1024 tokens")
    ap.add_argument("--no-ablations", action="store_true")
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--out", default="bench/results_train.json")
    ap.add_argument("--merge", action="store_true", help="keep the rows of other cases already in --out")
    a = ap.parse_args()
    if a.worker:
        return worker(a.worker)

    import torch
    from transformers import AutoTokenizer

    cases = (
        ["tiny-kto", "tiny-dpo"] if a.quick else [c for c in a.cases.split(",") if c]
    )  # "" with --memory: memory only
    tmp = Path(tempfile.mkdtemp(prefix="prospect-bench-"))
    peak32, peak16 = matmul_peak("float32"), matmul_peak("bfloat16")
    print(
        f"matmul peak: float32 {peak32:.1f} GFLOP/s, bfloat16 {peak16:.1f} GFLOP/s ({torch.get_num_threads()} threads)"
    )
    smol = smol_model_dir() if any(c.startswith("smol") for c in cases) else None
    tok = AutoTokenizer.from_pretrained(smol or smol_model_dir())
    table = []
    for case in cases:
        which, method = case.split("-")
        model_dir = tiny_model_dir(tok, tmp) if which == "tiny" else smol
        steps = a.steps or (3 if a.quick else (5 if which == "tiny" else 3))
        warm = a.warm if a.warm is not None else (2 if which == "tiny" else 1)
        n_steps = warm + steps
        drift = max(a.drift_steps, n_steps)
        data = make_data(tok, method, BATCH * max(n_steps, drift), seed=1234)
        data_file = tmp / f"{case}.json"
        data_file.write_text(json.dumps(data))
        base = {
            "model_dir": str(model_dir),
            "data_file": str(data_file),
            "seed": 0,
            "lr": a.lr,
            "warm": warm,
            "steps": steps,
            "pad_id": tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id,
            "ref_cache_dir": str(tmp / f"refcache-{case}"),
        }
        print(f"\n== {case} ({model_dir.name}): batch {BATCH}, {warm} warm + {steps} timed steps", flush=True)
        runs: dict[str, dict] = {}
        # Interleaved: Prospect, TRL, Prospect, TRL, ... so slow drifts of the machine hit both.
        # The timed comparison runs train on exactly the same BATCH x n_steps rows (one epoch; the
        # grouped runs in length-grouped batches); the drift runs (prospect-seq, prospect-bf16) on more.
        same = {"n_rows": BATCH * n_steps}
        order = [
            ("prospect-seq", {"impl": "prospect", "order": "sequential", "steps": max(steps, drift - warm)}),
            ("trl-gc", {"impl": "trl", "gc": True, **same}),
            ("prospect", {"impl": "prospect", "order": "grouped", **same}),
            ("trl", {"impl": "trl", "gc": False, **same}),
        ]
        if not a.no_ablations:
            order += [
                ("prospect-noshare", {"impl": "prospect", "order": "grouped", "share_prompt": False, **same}),
                ("prospect-packed", {"impl": "prospect", "order": "grouped", "padding_free": True, **same}),
                (
                    "prospect-bf16",
                    {"impl": "prospect", "order": "sequential", "bf16": True, "steps": max(steps, drift - warm)},
                ),
            ]
        for name, extra in order:
            spec = {**base, **extra, "out_dir": str(tmp / f"{case}-{name}")}
            if spec["impl"] == "prospect":
                spec["ref_cache_dir"] = str(tmp / f"refcache-{case}-{name}")
            runs[name] = spawn(spec, tmp, f"{case}-{name}")
        # Per-step rows: sequential order for all but the grouped runs, whose steps hold other rows;
        # throughput uses the rows each run actually trained on (grouped = the same rows overall).
        seq_rows = [list(range(i * BATCH, (i + 1) * BATCH)) for i in range(max(n_steps, drift))]
        toks = [
            sum(
                len(r["prompt_ids"])
                + sum(len(r[c]) for c in ("completion_ids", "chosen_ids", "rejected_ids") if c in r)
                for r in (data["rows"][i] for i in idx)
            )
            for idx in seq_rows
        ]
        flops = nominal_flops(model_dir, data, seq_rows)
        row: dict[str, Any] = {"case": case, "model": model_dir.name, "warm": warm, "steps": steps}
        for name, res in runs.items():
            if res.get("failed"):
                continue
            if "prospect" in name and name != "prospect-seq" and name != "prospect-bf16":
                # grouped runs train on the same rows as TRL in other batches: use the mean per step
                mt, mf = sum(toks[:n_steps]) / n_steps, sum(flops[:n_steps]) / n_steps
                row[name] = summarize(res, warm, BATCH, [mt] * n_steps, [mf] * n_steps)
            else:
                row[name] = summarize(res, warm, BATCH, toks, flops)
            row[name]["gflops_vs_peak"] = row[name]["gflops"] / (peak16 if "bf16" in name else peak32)
            if "reference_precompute" in res:
                row[name]["reference_precompute"] = res["reference_precompute"]
                row[name]["ref_mismatched_s_per_step"] = res["ref_mismatched_seconds"] / len(res["times"])
        peers = [n for n in ("trl-gc", "trl") if n in row]
        if peers and "prospect" in row:
            peer = max(peers, key=lambda n: row[n]["samples_s"])
            row["peer"] = peer
            row["ratio_samples"] = row["prospect"]["samples_s"] / row[peer]["samples_s"]
            row["ratio_samples_with_reference"] = (
                row["prospect"]["samples_s_with_reference"] / row[peer]["samples_s_with_reference"]
            )
            row["ratio_rss"] = row["prospect"]["rss_mb"] / row[peer]["rss_mb"]
        p1, t1 = runs.get("prospect-seq", {}), runs.get("trl-gc", {})
        if p1.get("losses") and t1.get("losses"):
            row["first_loss"] = {
                "prospect": p1["losses"][0],
                "trl": t1["losses"][0],
                "abs_diff": abs(p1["losses"][0] - t1["losses"][0]),
                "token_ids_match": t1.get("token_ids_match"),
                "same_adapter": p1.get("adapter_checksum") == t1.get("adapter_checksum"),
            }
        b16 = runs.get("prospect-bf16", {})
        if p1.get("losses") and b16.get("losses"):
            k = min(len(p1["losses"]), len(b16["losses"]))
            diffs = [abs(x - y) for x, y in zip(p1["losses"][:k], b16["losses"][:k])]
            row["bf16_drift"] = {
                "steps": k,
                "max_abs": max(diffs),
                "last_abs": diffs[-1],
                "fp32_last": p1["losses"][k - 1],
                "bf16_last": b16["losses"][k - 1],
            }
        table.append(row)
        print_row(row)
        save(a, table, peak32, peak16, None)  # after every case: a long run stopped later keeps what it measured
    memory = memory_check(tok, tmp, a.lr) if a.memory else None
    save(a, table, peak32, peak16, memory)
    print(f"\nwrote {a.out}")


def save(a: argparse.Namespace, table: list[dict], peak32: float, peak16: float, memory: Any) -> None:
    """Write the results so far to --out; with --merge, rows of other cases already in --out are kept."""
    import torch

    path = Path(a.out)
    kept: list[dict] = []
    old_memory = None
    if a.merge and path.is_file():
        old = json.loads(path.read_text())
        kept = [r for r in old.get("table", []) if r.get("case") not in {r2["case"] for r2 in table}]
        old_memory = old.get("memory_1024")
    out = {
        "machine": machine(),
        "matmul_peak_gflops": {"float32": peak32, "bfloat16": peak16},
        "threads": torch.get_num_threads(),
        "table": kept + table,
        "memory_1024": memory or old_memory,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1))


def memory_check(tok: Any, tmp: Path, lr: float) -> dict:
    """Peak RSS of Prospect training SmolLM2-135M + LoRA r16 at batch 8, 1024 tokens per sequence (1 step),
    with the defaults and with gradient checkpointing (which turns prompt sharing off)."""
    smol = smol_model_dir()
    data = make_data(tok, "kto", BATCH, seed=99, prompt_range=(512, 512), completion_range=(511, 511))
    data_file = tmp / "memory-1024.json"
    data_file.write_text(json.dumps(data))
    lengths = sorted({len(r["prompt_ids"]) + len(r["completion_ids"]) for r in data["rows"]})
    base = {
        "impl": "prospect",
        "order": "sequential",
        "model_dir": str(smol),
        "data_file": str(data_file),
        "seed": 0,
        "lr": lr,
        "warm": 0,
        "steps": 1,
        "pad_id": tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id,
    }
    out: dict[str, Any] = {"batch": BATCH, "tokens_per_sequence": [lengths[0], lengths[-1]]}
    for name, extra in (("default", {}), ("gradient_checkpointing", {"gc": True})):
        spec = {
            **base,
            **extra,
            "ref_cache_dir": str(tmp / f"refcache-memory-{name}"),
            "out_dir": str(tmp / f"memory-{name}"),
        }
        print(
            f"\n== memory ({name}): SmolLM2 KTO, batch {BATCH}, sequences of {lengths[0]}-{lengths[-1]} tokens, 1 step",
            flush=True,
        )
        res = spawn(spec, tmp, f"memory-1024-{name}")
        if res.get("failed"):
            out[name] = {"failed": True}
            continue
        out[name] = {"peak_rss_mb": res["peak_rss_mb"], "step_s": res["times"][0]}
        print(f"peak RSS {res['peak_rss_mb'] / 1024:.2f} GiB, step {res['times'][0]:.1f} s", flush=True)
    return out


def machine() -> str:
    try:
        lines = subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines()
        keep = ("Model name", "CPU(s):", "Thread(s) per core")
        return "; ".join(" ".join(ln.split()) for ln in lines if ln.startswith(keep))
    except OSError:
        return "unknown"


def print_row(row: dict) -> None:
    print(
        f"{'run':18s} {'samples/s':>10s} {'tokens/s':>10s} {'step s':>8s} {'GFLOP/s':>8s} {'%peak':>6s} {'RSS MB':>8s}"
    )
    for name in (
        "prospect",
        "prospect-seq",
        "prospect-noshare",
        "prospect-share",
        "prospect-packed",
        "prospect-bf16",
        "trl-gc",
        "trl",
    ):
        r = row.get(name)
        if r:
            print(
                f"{name:18s} {r['samples_s']:10.3f} {r['tokens_s']:10.1f} {r['step_s']:8.2f} {r['gflops']:8.1f} "
                f"{100 * r['gflops_vs_peak']:5.1f}% {r['rss_mb']:8.0f}"
            )
    if "ratio_samples" in row:
        print(
            f"Prospect/TRL ({row['peer']}): samples/s x{row['ratio_samples']:.2f} (timed steps), "
            f"x{row['ratio_samples_with_reference']:.2f} (whole run incl. reference precompute), "
            f"peak RSS x{row['ratio_rss']:.2f}"
        )
    if "first_loss" in row:
        f = row["first_loss"]
        verdict = "OK (< 1e-5)" if f["abs_diff"] < 1e-5 else "MISMATCH (>= 1e-5)"
        print(
            f"first-step loss: prospect {f['prospect']:.8f}  trl {f['trl']:.8f}  |diff| {f['abs_diff']:.2e} {verdict}"
            f"  (token ids match: {f['token_ids_match']}, same initial adapter: {f['same_adapter']})"
        )
    if "bf16_drift" in row:
        d = row["bf16_drift"]
        print(f"bf16 vs float32 loss over {d['steps']} steps: max |diff| {d['max_abs']:.2e}, last {d['last_abs']:.2e}")
    p = row.get("prospect", {}).get("reference_precompute")
    if p:
        print(
            f"reference precompute: run 1 {p['run1']['seconds']:.2f}s ({p['run1']['cache']}), "
            f"run 2 {p['run2']['seconds']:.2f}s ({p['run2']['cache']})"
        )


if __name__ == "__main__":
    main()
