"""Prospect vs TRL 1.16 (KTOTrainer, DPOTrainer) on named length profiles: throughput, memory, loss agreement.

    HF_HUB_OFFLINE=1 python bench/bench_train.py                      # full table: SmolLM2, KTO + DPO, 5 profiles
    HF_HUB_OFFLINE=1 python bench/bench_train.py --methods kto --profiles short   # one case: smol-kto-short
    HF_HUB_OFFLINE=1 python bench/bench_train.py --quick --methods kto --profiles short   # smoke: tiny model, 1+1 steps

Cases are MODEL-METHOD-PROFILE (smol-kto-short, smol-dpo-imbalanced, ...); the profiles
(short, mixed, long_completion, long_prompt, imbalanced) are in bench/profiles.py, how long the
full table takes and which subsets fit a time budget in bench/README.md.

Every trainer runs in its own subprocess (bench/train_workers.py; peak RSS = its ru_maxrss), one
after the other, on the same token ids (checked on both sides), batch 8, LoRA r=16 on q/k/v/o with
the same non-zero initial adapter (checked), float32:

  prospect        Prospect's defaults, through its recipe stages (prepare -> load_models -> tokenize ->
                  add_reference -> make_trainer -> fit): length-grouped batches, prompts run once,
                  reference log-probs precomputed and cached, gradient checkpointing `auto`
  prospect-seq    the same in TRL's batch order (training.shuffle: false), one step: its first-step
                  loss is compared with trl-gc's (target |diff| < 1e-5)
  trl-gc / trl    TRL with its defaults (gradient checkpointing on) / with it off
  --ablations     also prospect with share_prompt off, with padding_free, and with a bfloat16 base
                  (its loss drift over --drift-steps against prospect-seq in float32)

Per case (bench/summary.py): per-step samples/s of prospect / the FASTER TRL setting; whole-run
samples/s (every step plus Prospect's reference precompute; TRL computes its reference inside each
step) / the faster TRL setting by that measure; peak RSS of prospect / trl-gc (TRL's default); the
first-step loss gap. The summary checks the targets of issue 17 per profile and prints the worst
case over profiles for each metric. `--memory` adds one Prospect KTO step on SmolLM2 at batch 8
with 1024-token sequences. Achieved GFLOP/s counts the same nominal work for every run (bench/measure.py).
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
from measure import machine, matmul_peak, print_row  # noqa: E402
from profiles import BATCH, PROFILES, make_data, smol_model_dir, tiny_model_dir  # noqa: E402
from summary import case_row, print_summary  # noqa: E402

WORKER = Path(__file__).parent / "train_workers.py"
DEFAULT_WARM, DEFAULT_STEPS = 1, 2  # see the module docstring for the duration of the full table


def worker_spec(tok: Any, model_dir: Path, data_file: Path, lr: float, warm: int, steps: int) -> dict:
    """The spec fields every worker run shares (train_workers.py reads them): model, data, seed, steps."""
    return {
        "model_dir": str(model_dir),
        "data_file": str(data_file),
        "seed": 0,
        "lr": lr,
        "warm": warm,
        "steps": steps,
        "pad_id": tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id,
    }


def spawn(spec: dict, tmp: Path, name: str) -> dict:
    spec_path = tmp / f"spec-{name}.json"  # not f"{name}.json": that may be the run's data file
    spec_path.write_text(json.dumps(spec))
    # CPU on both sides (TRL's use_cpu=True; Prospect would take a GPU if one were visible)
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", PYTHONWARNINGS="ignore")
    env["CUDA_VISIBLE_DEVICES"] = ""
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, str(WORKER), str(spec_path)], capture_output=True, text=True, env=env)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if proc.returncode != 0 or line is None:
        print(f"  {name}: FAILED (rc={proc.returncode})\n{proc.stderr[-3000:]}", flush=True)
        return {"failed": True}
    res = json.loads(line[7:])
    print(f"  {name}: {time.perf_counter() - t0:.0f}s, steps {[round(t, 2) for t in res['times']]}", flush=True)
    return res


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke run: tiny model, 1 warm + 1 timed step")
    ap.add_argument("--models", default="smol", help="comma-separated: smol (SmolLM2-135M), tiny (4-layer Llama)")
    ap.add_argument("--methods", default="kto,dpo", help="comma-separated: kto, dpo")
    ap.add_argument("--profiles", default=",".join(PROFILES), help="comma-separated of " + ", ".join(PROFILES))
    ap.add_argument("--cases", default=None, help="explicit cases MODEL-METHOD-PROFILE (overrides the three above)")
    ap.add_argument("--steps", type=int, default=None, help=f"timed steps (default {DEFAULT_STEPS})")
    ap.add_argument("--warm", type=int, default=None, help=f"warm-up steps, not timed (default {DEFAULT_WARM})")
    ap.add_argument("--ablations", action="store_true", help="also prospect without sharing, packed, bf16 (+drift)")
    ap.add_argument("--drift-steps", type=int, default=20, help="steps of the bf16 vs float32 drift run")
    ap.add_argument("--memory", action="store_true", help="also: peak RSS of a SmolLM2 KTO step at 1024 tokens")
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--out", default="bench/results_train.json")
    ap.add_argument("--merge", action="store_true", help="keep the rows of other cases already in --out")
    a = ap.parse_args(argv)
    if a.quick:
        a.models = "tiny"
        a.steps = 1 if a.steps is None else a.steps
        a.warm = 1 if a.warm is None else a.warm
    a.steps = DEFAULT_STEPS if a.steps is None else a.steps
    a.warm = DEFAULT_WARM if a.warm is None else a.warm
    if a.steps < 1 or a.warm < 0:
        ap.error(f"--steps must be >= 1 and --warm >= 0 (got {a.steps} and {a.warm})")
    if a.cases is not None:
        a.case_list = [c for c in a.cases.split(",") if c]  # "" with --memory: memory only
    else:
        split = lambda s: [x for x in s.split(",") if x]  # noqa: E731
        a.case_list = [f"{m}-{k}-{p}" for m in split(a.models) for k in split(a.methods) for p in split(a.profiles)]
    for c in a.case_list:
        parts = c.split("-", 2)
        if (
            len(parts) != 3
            or parts[0] not in ("smol", "tiny")
            or parts[1] not in ("kto", "dpo")
            or (parts[2] not in PROFILES)
        ):
            ap.error(f"case {c!r}: expected MODEL-METHOD-PROFILE with MODEL smol|tiny, METHOD kto|dpo, "
                     f"PROFILE one of {', '.join(PROFILES)}")  # fmt: skip
    return a


def run_order(a: argparse.Namespace) -> list[tuple[str, dict]]:
    """The runs of one case, interleaved Prospect, TRL, Prospect, TRL so slow drifts of the machine hit both.

    The timed runs train on exactly the same BATCH x (warm + steps) rows (one epoch; `prospect` in
    Prospect's length-grouped batches). prospect-seq (TRL's batch order) gives the first-step loss
    and needs one step, or the drift length with --ablations (it is the float32 side of the drift).
    """
    n_rows = {"n_rows": BATCH * (a.warm + a.steps)}
    drift = max(a.drift_steps, a.warm + a.steps)
    seq = {"warm": 0, "steps": drift} if a.ablations else {"warm": 0, "steps": 1, "n_rows": BATCH}
    order = [
        ("prospect-seq", {"impl": "prospect", "order": "sequential", **seq}),
        ("trl-gc", {"impl": "trl", "gc": True, **n_rows}),
        ("prospect", {"impl": "prospect", "order": "grouped", **n_rows}),
        ("trl", {"impl": "trl", "gc": False, **n_rows}),
    ]
    if a.ablations:
        order += [
            ("prospect-noshare", {"impl": "prospect", "order": "grouped", "share_prompt": False, **n_rows}),
            ("prospect-packed", {"impl": "prospect", "order": "grouped", "padding_free": True, **n_rows}),
            ("prospect-bf16", {"impl": "prospect", "order": "sequential", "bf16": True, "warm": 0, "steps": drift}),
        ]
    return order


def run_case(name: str, a: argparse.Namespace, tok: Any, tmp: Path, peaks: dict[str, float]) -> dict:
    which, method, profile = name.split("-", 2)
    model_dir = tiny_model_dir(tok, tmp) if which == "tiny" else smol_model_dir()
    order = run_order(a)
    n_rows = BATCH * max(s.get("warm", a.warm) + s.get("steps", a.steps) for _, s in order)
    data = make_data(tok, method, n_rows, seed=1234, profile=PROFILES[profile])
    data_file = tmp / f"{name}.json"
    data_file.write_text(json.dumps(data))
    base = worker_spec(tok, model_dir, data_file, a.lr, a.warm, a.steps)
    print(f"\n== {name} ({model_dir.name}): batch {BATCH}, {a.warm} warm + {a.steps} timed steps", flush=True)
    runs, specs = {}, {}
    for run, extra in order:
        spec = {**base, **extra, "work_dir": str(tmp / f"{name}-{run}")}
        specs[run] = spec
        runs[run] = spawn(spec, tmp, f"{name}-{run}")
    case = {"name": name, "method": method, "profile": profile, "model_dir": model_dir, "data": data,
            "warm": a.warm, "steps": a.steps}  # fmt: skip
    row = case_row(case, runs, specs, peaks)
    print_row(row)
    return row


def main(argv: list[str] | None = None) -> None:
    a = parse_args(argv)
    import torch
    from transformers import AutoTokenizer

    tmp = Path(tempfile.mkdtemp(prefix="prospect-bench-"))
    peaks = {"float32": matmul_peak("float32"), "bfloat16": matmul_peak("bfloat16")}
    print(
        f"matmul peak: float32 {peaks['float32']:.1f} GFLOP/s, bfloat16 {peaks['bfloat16']:.1f} GFLOP/s "
        f"({torch.get_num_threads()} threads); {len(a.case_list)} cases"
    )
    tok = AutoTokenizer.from_pretrained(smol_model_dir())
    table: list[dict] = []
    summary = None
    for name in a.case_list:
        table.append(run_case(name, a, tok, tmp, peaks))
        save(a, table, peaks, None, None)  # after every case: a long run stopped later keeps what it measured
    if table:
        summary = print_summary(table)
    memory = memory_check(tok, tmp, a.lr, tiny=a.quick, with_trl_off=a.ablations) if a.memory else None
    save(a, table, peaks, memory, summary)
    print(f"\nwrote {a.out}")


def save(a: argparse.Namespace, table: list[dict], peaks: dict, memory: Any, summary: Any) -> None:
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
        "matmul_peak_gflops": peaks,
        "warm": a.warm,
        "steps": a.steps,
        "threads": torch.get_num_threads(),
        "table": kept + table,
        "memory_1024": memory or old_memory,
        "summary": summary,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1))


def _checkpoints_every_layer(run: dict) -> bool:
    note = run.get("gradient_checkpointing") or {}
    return bool(note.get("of_layers")) and note.get("layers") == note.get("of_layers")


def memory_check(tok: Any, tmp: Path, lr: float, tiny: bool = False, with_trl_off: bool = False) -> dict:
    """Peak RSS of Prospect training SmolLM2-135M + LoRA r16 at batch 8, 1024 tokens per sequence (1 step),
    with the defaults (checkpointing `auto`) and with checkpointing on, and TRL on the same step
    (its default, checkpointing on; off too with_trl_off): issue 17 asks Prospect's peak to be at most TRL's.
    The checkpointing-on Prospect run is skipped when the defaults already checkpoint every layer.
    tiny (--quick): the tiny model instead, a smoke run of the same code."""
    smol = tiny_model_dir(tok, tmp) if tiny else smol_model_dir()
    data = make_data(tok, "kto", BATCH, seed=99, prompt_range=(512, 512), completion_range=(511, 511))
    data_file = tmp / "memory-1024.json"
    data_file.write_text(json.dumps(data))
    lengths = sorted({len(r["prompt_ids"]) + len(r["completion_ids"]) for r in data["rows"]})
    base = {"impl": "prospect", "order": "sequential", **worker_spec(tok, smol, data_file, lr, warm=0, steps=1)}
    out: dict[str, Any] = {"batch": BATCH, "tokens_per_sequence": [lengths[0], lengths[-1]]}
    runs = (
        ("default", {}),
        ("gradient_checkpointing", {"gc": True}),
        ("trl-gc", {"impl": "trl", "gc": True}),
        ("trl", {"impl": "trl", "gc": False}),
    )
    for name, extra in runs:
        if name == "gradient_checkpointing" and _checkpoints_every_layer(out.get("default", {})):
            out[name] = {"skipped": "the defaults already checkpoint every layer at this length"}
            continue
        if name == "trl" and not with_trl_off:
            out[name] = {"skipped": "TRL without checkpointing runs with --ablations"}
            continue
        spec = {
            **base,
            **extra,
            "work_dir": str(tmp / f"memory-{name}"),
        }
        print(
            f"\n== memory ({name}): {smol.name} KTO, batch {BATCH}, sequences of {lengths[0]}-{lengths[-1]} tokens, 1 step",
            flush=True,
        )
        res = spawn(spec, tmp, f"memory-1024-{name}")
        if res.get("failed"):
            out[name] = {"failed": True}
            continue
        out[name] = {"peak_rss_mb": res["peak_rss_mb"], "step_s": res["times"][0]}
        if "gradient_checkpointing" in res:
            out[name]["gradient_checkpointing"] = res["gradient_checkpointing"]
        print(f"peak RSS {res['peak_rss_mb'] / 1024:.2f} GiB, step {res['times'][0]:.1f} s", flush=True)
    if "peak_rss_mb" in out.get("default", {}) and "peak_rss_mb" in out.get("trl-gc", {}):
        out["ratio_rss_default_vs_trl_gc"] = out["default"]["peak_rss_mb"] / out["trl-gc"]["peak_rss_mb"]
        print(
            f"memory at 1024 tokens: Prospect (defaults) / TRL (defaults) peak RSS x{out['ratio_rss_default_vs_trl_gc']:.2f}"
        )
    return out


if __name__ == "__main__":
    main()
