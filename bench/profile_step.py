"""Where one Prospect training step's time and memory go, on a bench/ length profile.

    HF_HUB_OFFLINE=1 python bench/profile_step.py --method kto --profile short
    HF_HUB_OFFLINE=1 python bench/profile_step.py --method dpo --profile long_completion --set use_gradient_checkpointing=false

Runs Prospect through its recipe stages (as bench_train.py's `prospect` run: the same data,
model, batch 8, LoRA r16, float32, Prospect's defaults) and prints

- peak RSS after each stage (imports, model, tokenize, reference precompute, first step, second
  step): which stage sets the process's peak;
- the top operators of the second (warm) training step under `torch.profiler`, by self CPU time
  and by memory allocated (`profile_memory=True`), the five of each that docs/performance.md shows.

`--set KEY=VALUE` overrides an `optimization.` setting (JSON values: true, false, 0.25).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from profiles import BATCH, PROFILES, make_data, smol_model_dir  # noqa: E402
from train_workers import prospect_config, seeded_adapter_  # noqa: E402


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--method", default="kto", choices=["kto", "dpo"])
    p.add_argument("--profile", default="short", choices=sorted(PROFILES))
    p.add_argument("--set", action="append", default=[], help="optimization.KEY=VALUE (JSON value)")
    p.add_argument("--top", type=int, default=5)
    return p.parse_args(argv)


class _ProfileSecondStep:
    """A TrainerCallback that runs torch.profiler over the second optimizer step."""

    def __new__(cls, holder: dict[str, Any]) -> Any:
        import torch
        from transformers import TrainerCallback

        class Callback(TrainerCallback):
            def on_step_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
                holder["rss"].append((f"step {state.global_step + 1} begins", peak_mb()))
                if state.global_step == 1:
                    holder["prof"] = torch.profiler.profile(
                        activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True
                    )
                    holder["prof"].__enter__()
                    holder["t0"] = time.perf_counter()

            def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
                if "prof" in holder and "seconds" not in holder:
                    holder["prof"].__exit__(None, None, None)
                    holder["seconds"] = time.perf_counter() - holder["t0"]
                holder["rss"].append((f"step {state.global_step} ends", peak_mb()))

        return Callback()


def main(argv: list[str] | None = None) -> None:
    a = parse_args(argv)
    rss: list[tuple[str, float]] = []
    from transformers import AutoTokenizer

    from prospect.recipes.preparation import prepare
    from prospect.recipes.training import add_reference, fit, load_models, make_trainer, tokenize

    rss.append(("imports", peak_mb()))
    model_dir = smol_model_dir()
    tok = AutoTokenizer.from_pretrained(model_dir)
    work = Path(tempfile.mkdtemp(prefix="prospect-profile-"))
    os.environ["PROSPECT_CACHE"] = str(work / "cache")
    data = make_data(tok, a.method, BATCH * 2, seed=1234, profile=PROFILES[a.profile])
    optimization = {}
    for item in a.set:
        key, _, value = item.partition("=")
        optimization[key] = json.loads(value)
    spec = {"model_dir": str(model_dir), "lr": 5e-5, "warm": 1, "steps": 1, "seed": 0, "order": "grouped"}
    spec["optimization"] = optimization
    run = prepare(prospect_config(spec, data, work), resume=False)
    models = load_models(run)
    seeded_adapter_(models.policy, 0)
    rss.append(("model loaded", peak_mb()))
    tokens = tokenize(run, models)
    rss.append(("tokenized", peak_mb()))
    train_data = add_reference(run, models, tokens)
    rss.append(("reference precomputed", peak_mb()))
    trainer = make_trainer(run, models, train_data, quiet=True)
    holder: dict[str, Any] = {"rss": rss}
    trainer.add_callback(_ProfileSecondStep(holder))
    fit(run, trainer)

    gc_note = train_data.notes.get("gradient_checkpointing")
    print(f"\n{a.method} / {a.profile}: batch {BATCH}, checkpointing {json.dumps(gc_note)}")
    print("peak RSS (MB) after each stage:")
    for name, mb in rss:
        print(f"  {name:<24} {mb:8.0f}")
    prof = holder["prof"]
    print(f"\nsecond step: {holder['seconds']:.2f} s under the profiler; top {a.top} by self CPU time:")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=a.top, max_name_column_width=48))
    print(f"top {a.top} by memory allocated (self):")
    print(prof.key_averages().table(sort_by="self_cpu_memory_usage", row_limit=a.top, max_name_column_width=48))


if __name__ == "__main__":
    main()
