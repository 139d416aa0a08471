"""Numbers of bench/bench_train.py computed in the parent: matmul peak, nominal FLOPs, per-run summaries,
the machine, and the printed table."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path


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


def summarize(
    res: dict, warm: int, samples_per_step: int, tokens: list[float], flops: list[float], row_tokens: float
) -> dict:
    """Per-run numbers. tokens / flops: of each step, in the order the run took them; row_tokens: the
    mean tokens of a row over the epoch. samples_s_at_mean_length = tokens/s of the timed steps /
    row_tokens: samples/s had the timed steps held rows of the epoch's mean length (length-grouped
    batches put the longest batch first, i.e. into the untimed warm-up, so their raw samples/s
    over the timed steps would flatter them)."""
    t = res["times"][warm:]
    tt = sum(t)
    # The whole run: every step (warm-up included) plus the reference precompute, if any.
    precompute = res.get("reference_precompute", {}).get("run1", {}).get("seconds", 0.0)
    total = sum(res["times"]) + precompute
    return {
        "samples_s": samples_per_step * len(t) / tt,
        "tokens_s": sum(tokens[warm : warm + len(t)]) / tt,
        "samples_s_at_mean_length": sum(tokens[warm : warm + len(t)]) / tt / row_tokens,
        "gflops": sum(flops[warm : warm + len(t)]) / tt / 1e9,
        "rss_mb": res["peak_rss_mb"],
        "step_s": tt / len(t),
        "samples_s_with_reference": samples_per_step * len(res["times"]) / total,
        "reference_precompute_s": precompute,
    }


def machine() -> str:
    try:
        lines = subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines()
        keep = ("Model name", "CPU(s):", "Thread(s) per core")
        return "; ".join(" ".join(ln.split()) for ln in lines if ln.startswith(keep))
    except OSError:
        return "unknown"


def print_row(row: dict) -> None:
    print(
        f"{'run':18s} {'samples/s':>10s} {'@mean len':>10s} {'tokens/s':>10s} {'step s':>8s} {'GFLOP/s':>8s} {'%peak':>6s} {'RSS MB':>8s}"
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
        if r and not r.get("failed"):
            print(
                f"{name:18s} {r['samples_s']:10.3f} {r['samples_s_at_mean_length']:10.3f} {r['tokens_s']:10.1f} {r['step_s']:8.2f} {r['gflops']:8.1f} "
                f"{100 * r['gflops_vs_peak']:5.1f}% {r['rss_mb']:8.0f}"
            )
    if "ratio_samples" in row:
        rss = f"x{row['ratio_rss']:.2f}" if "ratio_rss" in row else "-"
        print(
            f"Prospect/TRL: samples/s x{row['ratio_samples']:.2f} over the timed steps (vs {row['peer']}), "
            f"x{row['ratio_samples_with_reference']:.2f} over the whole run incl. reference precompute "
            f"(vs {row['peer_whole_run']}), peak RSS {rss} (vs trl-gc, TRL's default)"
        )
    if "first_loss" in row:
        f = row["first_loss"]
        verdict = "OK (< 1e-5)" if f["abs_diff"] < 1e-5 else "MISMATCH (>= 1e-5)"
        print(
            f"first-step loss: prospect {f['prospect']:.8f}  trl {f['trl']:.8f}  |diff| {f['abs_diff']:.2e} {verdict}"
            f"  (token ids match: {f['token_ids_match']}, same initial adapter: {f['same_adapter']}; "
            f"TRL gc off vs on: {f.get('trl_vs_trl_gc', float('nan')):.2e})"
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
