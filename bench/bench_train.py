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
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from measure import machine, matmul_peak, nominal_flops, print_row, summarize  # noqa: E402
from profiles import BATCH, make_data, smol_model_dir, tiny_model_dir  # noqa: E402

WORKER = Path(__file__).parent / "train_workers.py"


def spawn(spec: dict, tmp: Path, name: str) -> dict:
    spec_path = tmp / f"spec-{name}.json"  # not f"{name}.json": that may be the run's data file
    spec_path.write_text(json.dumps(spec))
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", PYTHONWARNINGS="ignore")
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, str(WORKER), str(spec_path)], capture_output=True, text=True, env=env)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if proc.returncode != 0 or line is None:
        print(f"  {name}: FAILED (rc={proc.returncode})\n{proc.stderr[-3000:]}", flush=True)
        return {"failed": True}
    res = json.loads(line[7:])
    print(f"  {name}: {time.perf_counter() - t0:.0f}s, steps {[round(t, 2) for t in res['times']]}", flush=True)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
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


if __name__ == "__main__":
    main()
