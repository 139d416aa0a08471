"""GPU check: Prospect vs TRL 1.16 (KTO, DPO) on Qwen2.5-shaped models with random weights, plus QLoRA 4-bit.

    python bench/gpu_check.py                      # one H200: 0.5B and 1.5B, KTO + DPO, Prospect / TRL / QLoRA (< 8 min)
    python bench/gpu_check.py --models 0.5b,1.5b,7b  # adds the 7B shape (a few more minutes)
    python bench/gpu_check.py --dry-run            # CPU, a tiny Qwen2, float32, in well under a minute (CI)
    python bench/gpu_check.py --wheels             # the packages it needs and one `pip download` line for them

Nothing is downloaded: each model is built from a config shaped like Qwen2.5-0.5B / 1.5B / 7B (hidden
size, layers, heads, KV heads, MLP width, 151,936-token vocabulary) with random weights (same seed for
every implementation), so no weights travel; the text is made of words of Prospect's bundled tokenizer
(one token each, so lengths in tokens are exact): prompts of 256-1024 tokens, completions of 128-512,
batch 8, LoRA r=16 (alpha 32) on q/k/v/o with a non-zero initialisation (PEFT init_lora_weights=False, same
seed), bf16 autocast with SDPA attention, plain AdamW, the same sequential batch order for every run.

  prospect   PreferenceTrainer with Prospect's defaults: reference log-probs precomputed before step 1
             (their time is reported), prompts run once where exact, KTO's mismatched pass without autograd
  trl        TRL 1.16 KTOTrainer / DPOTrainer, gradient checkpointing off (as Prospect), reference in every step
  qlora      Prospect on the same weights loaded in 4-bit NF4 (double quantization, bf16 compute)

Reported per run: tokens/s over the timed steps (real, unpadded tokens of the rows: prompt + completion,
for DPO prompt + chosen + prompt + rejected, the same count for every implementation), peak GPU memory
(`torch.cuda.max_memory_allocated`), achieved TFLOP/s and its share of `--peak-tflops` (790: bf16 dense
matmul of one H200), and the first step's loss, Prospect and TRL side by side. The FLOPs are the nominal
work of the algorithm on those tokens, the same for both: 2 per matmul weight per token forward, 2 more
for a backward through activations (frozen base), reference forward 2; KTO adds the mismatched pairs'
policy and reference forwards (10 N per token), DPO 6 N; attention's own FLOPs are left out.

Writes JSON (`--out`, default bench/results/gpu_check.json) and prints a table.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import platform
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "src"))

from bench_train import make_data  # noqa: E402
from gpu_runs import BATCH, SEED, build_model, matmul_weights, quantized_copy, run_prospect, run_trl, step_tokens  # noqa: E402

# import name -> requirement; torch, transformers, accelerate and peft are expected to be installed
WHEELS = {
    "trl": "trl==1.16.0",
    "datasets": "datasets==5.2.0",
    "bitsandbytes": "bitsandbytes==0.50.2",
    "pydantic": "pydantic>=2.7,<3",
    "yaml": "pyyaml>=6",
    "safetensors": "safetensors>=0.4",
    "tqdm": "tqdm>=4.66",
}


def missing_packages() -> list[str]:
    return [req for mod, req in WHEELS.items() if importlib.util.find_spec(mod) is None]


def pip_download_line() -> str:
    """One command gathering the wheels for carrying (their own dependencies included, torch excluded)."""
    reqs = " ".join(f"'{r}'" for r in WHEELS.values())
    return f"pip download -d wheels {reqs} && rm -f wheels/torch-* wheels/nvidia_* wheels/triton-*"


# --------------------------------------------------------------------------- driver
def run_case(shape: str, method: str, impl: str, a: argparse.Namespace, tok: Any, tmp: Path) -> dict:
    import torch

    device = "cpu" if a.dry_run else "cuda"
    bf16 = not a.dry_run
    dtype = torch.bfloat16 if bf16 else torch.float32
    prompt, completion = ((8, 24), (4, 12)) if a.dry_run else ((256, 1024), (128, 512))
    n_steps = a.warm + a.steps
    data = make_data(tok, method, BATCH * n_steps, SEED, prompt_range=prompt, completion_range=completion)
    rows = data["rows"]
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    model = build_model(shape, device, dtype)
    n_weights = matmul_weights(model)
    if impl == "qlora":
        model = quantized_copy(model, device, tmp / f"{shape}-{method}")
    out = str(tmp / f"out-{shape}-{method}-{impl}")
    if impl == "trl":
        res = run_trl(model, method, rows, n_steps, bf16, device, out, tok)
    else:
        res = run_prospect(model, method, rows, n_steps, bf16, device, out)
    timed = res["times"][a.warm :] or res["times"]
    tokens = step_tokens(method, rows)
    per_step = [sum(tokens[i * BATCH : (i + 1) * BATCH]) for i in range(n_steps)][a.warm :] or [sum(tokens)]
    flops_per_token = (10 if method == "kto" else 6) * n_weights
    step_s = sum(timed) / len(timed)
    tok_per_step = sum(per_step) / len(per_step)
    tflops = flops_per_token * tok_per_step / step_s / 1e12
    res.update(
        shape=shape,
        method=method,
        impl=impl,
        step_s=round(step_s, 4),
        tokens_per_s=round(tok_per_step / step_s, 1),
        peak_gpu_mem_gb=round(torch.cuda.max_memory_allocated() / 2**30, 2) if device == "cuda" else None,
        tflops=float(f"{tflops:.4g}"),
        mfu=float(f"{tflops / a.peak_tflops:.4g}"),
        first_loss=res["losses"][0] if res["losses"] else None,
        wall_s=round(time.perf_counter() - t0, 1),
        matmul_weights=n_weights,
    )
    del model
    gc.collect()
    return res


def print_table(rows: list[dict], peak: float) -> None:
    head = f"{'model':6} {'method':6} {'impl':8} {'step s':>8} {'tok/s':>10} {'peak GB':>8} {'TFLOP/s':>8} {'% peak':>7} {'1st loss':>12}"
    print(head)
    print("-" * len(head))
    for r in rows:
        if "error" in r:
            print(f"{r['shape']:6} {r['method']:6} {r['impl']:8} skipped: {r['error']}")
            continue
        mem = "-" if r["peak_gpu_mem_gb"] is None else f"{r['peak_gpu_mem_gb']:.2f}"
        loss = "-" if r["first_loss"] is None else f"{r['first_loss']:.6f}"
        print(
            f"{r['shape']:6} {r['method']:6} {r['impl']:8} {r['step_s']:8.3f} {r['tokens_per_s']:10.0f} {mem:>8} "
            f"{r['tflops']:8.1f} {100 * r['mfu']:6.1f}% {loss:>12}"
        )
    print(f"(% peak against {peak:g} TFLOP/s)")


def first_losses(rows: list[dict]) -> list[dict]:
    """First-step losses side by side: Prospect vs TRL (same weights, adapter, rows; bf16 on GPU)."""
    by = {(r["shape"], r["method"], r["impl"]): r for r in rows if "error" not in r}
    out = []
    for (shape, method, impl), r in by.items():
        t = by.get((shape, method, "trl"))
        if impl == "prospect" and t is not None and r["first_loss"] is not None and t["first_loss"] is not None:
            diff = abs(r["first_loss"] - t["first_loss"])
            out.append(
                {
                    "shape": shape,
                    "method": method,
                    "prospect": r["first_loss"],
                    "trl": t["first_loss"],
                    "abs_diff": diff,
                }
            )
            print(
                f"first-step loss {shape} {method}: prospect {r['first_loss']:.6f}  trl {t['first_loss']:.6f}  |diff| {diff:.2e}"
            )
    return out


def machine() -> str:
    import torch

    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}"
    return f"CPU ({platform.processor() or platform.machine()}), torch {torch.__version__}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dry-run", action="store_true", help="CPU, tiny Qwen2, float32 (CI)")
    p.add_argument("--models", default="0.5b,1.5b", help="comma list of 0.5b, 1.5b, 7b")
    p.add_argument("--methods", default="kto,dpo")
    p.add_argument("--qlora-models", default="0.5b,1.5b", help="shapes also run as QLoRA 4-bit")
    p.add_argument("--steps", type=int, default=3, help="timed steps")
    p.add_argument("--warm", type=int, default=1, help="untimed first steps (the first-step loss is still kept)")
    p.add_argument("--peak-tflops", type=float, default=790.0)
    p.add_argument("--out", default=str(HERE / "results" / "gpu_check.json"))
    p.add_argument("--wheels", action="store_true", help="print the packages needed and a pip download line")
    a = p.parse_args(argv)
    missing = missing_packages()
    if a.wheels or missing:
        print("needs (besides torch, transformers, accelerate, peft): " + ", ".join(WHEELS.values()))
        print("gather them:  " + pip_download_line())
        print(
            "install there: pip install --no-index --find-links wheels " + " ".join(f"'{r}'" for r in WHEELS.values())
        )
        if a.wheels:
            return 0
        print("missing here: " + ", ".join(missing) + " (the runs that need them are skipped)")
    import torch

    if not a.dry_run and not torch.cuda.is_available():
        print("no CUDA device: run with --dry-run, or on a GPU machine", file=sys.stderr)
        return 2
    from prospect.testing import load_tiny_tokenizer

    tok = load_tiny_tokenizer()
    shapes = ["tiny"] if a.dry_run else a.models.split(",")
    qlora = ["tiny"] if a.dry_run else a.qlora_models.split(",")
    cases = [(s, m, i) for s in shapes for m in a.methods.split(",") for i in ("prospect", "trl")]
    cases += [(s, m, "qlora") for s in shapes if s in qlora for m in a.methods.split(",")]
    needs = {"trl": ["trl==1.16.0", "datasets==5.2.0"], "qlora": ["bitsandbytes==0.50.2"]}
    rows, started = [], time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for shape, method, impl in cases:
            lacking = [r for r in needs.get(impl, []) if r in missing]
            if lacking:
                rows.append(
                    {"shape": shape, "method": method, "impl": impl, "error": "not installed: " + ", ".join(lacking)}
                )
                continue
            try:
                rows.append(run_case(shape, method, impl, a, tok, Path(tmp)))
            except Exception as e:  # one failing case (OOM, a missing kernel) must not lose the others
                traceback.print_exc()
                rows.append({"shape": shape, "method": method, "impl": impl, "error": f"{type(e).__name__}: {e}"[:300]})
                gc.collect()
            print(f"[{time.perf_counter() - started:6.1f}s] {shape} {method} {impl}", file=sys.stderr, flush=True)
    print_table(rows, a.peak_tflops)
    pairs = first_losses(rows)
    result = {
        "machine": machine(),
        "dry_run": a.dry_run,
        "batch": BATCH,
        "peak_tflops": a.peak_tflops,
        "wall_s": round(time.perf_counter() - started, 1),
        "runs": rows,
        "first_step_losses": pairs,
    }
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=2))
    print(f"wrote {a.out} ({result['wall_s']} s)")
    return 0 if all("error" not in r or r["error"].startswith("not installed") for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
