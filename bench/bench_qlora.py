"""QLoRA vs LoRA on SmolLM2-135M-Instruct (the bundled model): peak RSS and step time.

    HF_HUB_OFFLINE=1 python bench/bench_qlora.py                      # 4 timed steps, batch 4
    python bench/bench_qlora.py --steps 8 --batch 8 --out bench/results/qlora.json

Both sides run `examples/kto_quickstart.yaml` (KTO, LoRA r16 on q/k/v/o, the first --rows rows of its data)
through Prospect's own recipe steps (prepare, load_models, tokenize, add_reference,
make_trainer, fit: what `prospect train` runs), each in its own subprocess, one after the
other, so peak RSS (``ru_maxrss``) is that side's alone:

  lora    float32 base
  qlora   ``optimization.use_quantization: true``: 4-bit NF4 base with double quantization,
          float32 compute (the config's dtype), adapters in float32

Reported per side: peak RSS of the process, RSS after the model loaded, the model's own
memory (``get_memory_footprint``: parameters and buffers), seconds to load, the mean and
median time of the timed optimizer steps (after ``--warm`` untimed ones) and the first loss.
The QLoRA peak includes the float32 weights read from safetensors before they are
quantized; the footprint is what stays resident. On CPU, bitsandbytes dequantizes each 4-bit
weight at every forward and backward, so QLoRA trades step time for memory there; on CUDA
the same kernels are fused.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "examples" / "kto_quickstart.yaml"
SIDES = {"lora": False, "qlora": True}


def _rss_mib() -> float:
    """Current resident set size of this process (Linux /proc), MiB."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def worker(side: str, steps: int, warm: int, batch: int, out_dir: str, train_file: str) -> dict[str, Any]:
    """One side, in this process: the recipe steps of `prospect train`, with a step timer."""
    import torch
    from transformers import TrainerCallback

    from prospect.recipes.config import load_run_config
    from prospect.recipes.training import add_reference, fit, load_models, make_trainer, prepare, tokenize

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    overrides = [
        f"optimization.use_quantization={str(SIDES[side]).lower()}",
        f"training.max_steps={warm + steps}",
        f"training.batch_size={batch}",
        "training.save_steps=1000",
        "training.eval_steps=1000",
        f"training.output_dir={out_dir}",
        f"training.run_name={side}",
        f"data.train_file={train_file}",
        "data.validation_file=null",
        "data.validation_split_percentage=0",
    ]
    cfg = load_run_config(str(CONFIG), overrides)
    start = time.perf_counter()

    def phase(name: str) -> None:
        print(f"[{side}] {name} at {time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)

    run = prepare(cfg)
    phase("prepared")
    t0 = time.perf_counter()
    models = load_models(run)
    load_s = time.perf_counter() - t0
    rss_loaded = _rss_mib()
    footprint = models.policy.get_base_model().get_memory_footprint() / 2**20
    phase("loaded")
    data = add_reference(run, models, tokenize(run, models))
    phase("reference computed")

    class Timer(TrainerCallback):
        def __init__(self) -> None:
            self.times: list[float] = []
            self.t = 0.0

        def on_step_begin(self, *a: Any, **k: Any) -> None:
            self.t = time.perf_counter()

        def on_step_end(self, *a: Any, **k: Any) -> None:
            self.times.append(time.perf_counter() - self.t)

    trainer = make_trainer(run, models, data, quiet=True)
    timer = Timer()
    trainer.add_callback(timer)
    fit(run, trainer)
    timed = timer.times[warm:]
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return {
        "side": side,
        "quantization": "nf4 4-bit, double quant, float32 compute" if SIDES[side] else None,
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "rss_after_load_mib": round(rss_loaded, 1),
        "model_footprint_mib": round(footprint, 1),
        "load_s": round(load_s, 2),
        "step_s_mean": round(statistics.mean(timed), 3),
        "step_s_median": round(statistics.median(timed), 3),
        "timed_steps": len(timed),
        "first_loss": losses[0] if losses else None,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=4, help="timed optimizer steps per side")
    ap.add_argument("--warm", type=int, default=1, help="untimed steps first")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--rows", type=int, default=24, help="training rows taken from examples/data/kto_train.jsonl")
    ap.add_argument("--note", default="", help="a line about the machine's state, kept in the JSON")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "qlora.json"))
    ap.add_argument("--worker", choices=list(SIDES), help=argparse.SUPPRESS)
    ap.add_argument("--run-dir", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        train_file = str(Path(args.run_dir) / "train.jsonl")
        print(json.dumps(worker(args.worker, args.steps, args.warm, args.batch, args.run_dir, train_file)))
        return 0

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-qlora-") as tmp:
        # The first --rows rows of the example data: the reference precompute stays short.
        lines = (CONFIG.parent / "data" / "kto_train.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
        (Path(tmp) / "train.jsonl").write_text("".join(lines[: args.rows]), encoding="utf-8")
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT / "src")}
        for side in SIDES:
            cmd = [sys.executable, __file__, "--worker", side, "--run-dir", tmp]
            cmd += ["--steps", str(args.steps), "--warm", str(args.warm), "--batch", str(args.batch)]
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
            sys.stderr.write("".join(x + "\n" for x in proc.stderr.splitlines() if x.startswith(f"[{side}]")))
            if proc.returncode != 0:
                sys.stderr.write(proc.stderr[-4000:])
                return proc.returncode
            rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    result = {
        "bench": "QLoRA vs LoRA, KTO on SmolLM2-135M-Instruct (examples/kto_quickstart.yaml)",
        "settings": {"batch_size": args.batch, "timed_steps": args.steps, "warm_steps": args.warm, "rows": args.rows},
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.python_version()}",
        "note": args.note,
        "rows": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    cols = ["side", "peak_rss_mib", "rss_after_load_mib", "model_footprint_mib", "load_s", "step_s_median"]
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(str(r[c]) for c in cols) + " |")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
