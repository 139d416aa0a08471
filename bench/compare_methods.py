"""Compare every training method (the METHODS table, src/prospect/config/methods.py) after the same number
of steps on the same data.

    python bench/compare_methods.py --steps 20 --out bench/results/compare_methods.md

Each method starts from its example config (examples/<method>.yaml: the bundled
SmolLM2-135M-Instruct, LoRA r16 on q/k/v/o, beta 0.1, lr 5e-5) and is trained on the same
paired file (kto reads each pair as a desirable and an undesirable row) with the same
sequences per step (kto: 8 rows; pair methods: 4 pairs = 8 sequences), seed and step count.
Each finished run is then evaluated on the same held-out pairs with
`prospect.eval.evaluate.evaluate_run`, independently of the training loop:

    reward accuracy = share of held-out pairs with beta*r(chosen) > beta*r(rejected)
    margin          = mean over held-out pairs of beta*r(chosen) - beta*r(rejected)

with r = log pi - log pi_ref (adapter on / off). The table goes to stdout and to --out
(a JSON with every number next to it). A run whose results.json exists is not retrained
(delete its directory or pass --force).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from prospect.config.methods import METHODS as METHOD_TABLE

ROOT = Path(__file__).resolve().parents[1]
METHODS = tuple(METHOD_TABLE)  # one source of truth for method names; each has examples/<method>.yaml


def run_config(method: str, args: argparse.Namespace) -> Any:
    """The example config of `method` with the comparison's shared settings."""
    from prospect.recipes import load_run_config

    overrides = [
        f"data.train_file={args.train}",
        f"data.validation_file={args.eval}",
        f"model.name={args.model}",
        f"training.max_steps={args.steps}",
        f"training.learning_rate={args.lr}",
        f"training.seed={args.seed}",
        f"training.output_dir={args.output_dir}",
        f"training.run_name={method}",
        f"training.save_steps={args.steps}",
        "training.eval_steps=null",  # evaluate once, at the end
        "evaluation.eval_interval=null",
        "evaluation.num_generation_samples=0",
    ]
    return load_run_config(str(ROOT / "examples" / f"{method}.yaml"), overrides)


def train_and_evaluate(method: str, args: argparse.Namespace) -> dict[str, Any]:
    from prospect.engine.rundir import run_directory
    from prospect.recipes import evaluate_run, train

    cfg = run_config(method, args)
    run_dir = run_directory(cfg)
    t0 = time.time()
    if args.force or not (run_dir / "results.json").is_file():
        train(cfg, resume=False, quiet=True)
    train_s = time.time() - t0
    results = json.loads((run_dir / "results.json").read_text(encoding="utf-8"))
    held_out = evaluate_run(run_dir, data_file=args.eval)["metrics"]
    data_report = json.loads((run_dir / "data_report.json").read_text(encoding="utf-8"))
    return {
        "method": method,
        "run_dir": str(run_dir),
        "steps": results.get("global_step"),
        "reward_accuracy": held_out.get("reward_accuracy"),
        "margin": held_out.get("margin"),
        "chosen_reward": held_out.get("chosen_reward"),
        "rejected_reward": held_out.get("rejected_reward"),
        "kl": held_out.get("kl"),
        "n_pairs": held_out.get("n_pairs"),
        "train_loss": results.get("metrics", {}).get("train_loss"),
        "wall_time_s": results.get("wall_time_s", round(train_s, 1)),
        "reoriented": data_report.get("reoriented"),
    }


def _fmt(x: float | None, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def markdown_table(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    lines = [
        f"Held-out reward accuracy and margin after {args.steps} steps "
        f"(model {args.model}, train {args.train}, held-out {args.eval}, lr {args.lr}, seed {args.seed}).",
        "",
        "| method | steps | reward accuracy | margin | chosen reward | rejected reward | KL | train loss "
        "| wall time (s) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['method']} | {r['steps']} | {_fmt(r['reward_accuracy'])} | {_fmt(r['margin'], 4)} | "
            f"{_fmt(r['chosen_reward'], 4)} | {_fmt(r['rejected_reward'], 4)} | {_fmt(r['kl'], 4)} | "
            f"{_fmt(r['train_loss'], 4)} | {_fmt(r['wall_time_s'], 1)} |"
        )
    n = next((r["n_pairs"] for r in rows if r.get("n_pairs")), None)
    lines += [
        "",
        f"Reward accuracy: share of the {n or '?'} held-out pairs with beta*r(chosen) > beta*r(rejected); "
        "margin: their mean difference (beta 0.1 for every method). kto trains on the same pairs split "
        "into desirable and undesirable rows.",
    ]
    return "\n".join(lines) + "\n"


SETTINGS = ("steps", "model", "train", "eval", "lr", "seed")


def merged_rows(path: Path, rows: list[dict[str, Any]], args: argparse.Namespace) -> list[dict[str, Any]]:
    """This run's rows plus the earlier rows of other methods in `path`, in METHODS order.

    Refuses to merge rows trained with other settings (steps, model, data, lr, seed).
    """
    if not path.is_file():
        return rows
    old = json.loads(path.read_text(encoding="utf-8"))
    differ = [k for k in SETTINGS if old.get(k) != getattr(args, k)]
    if differ:
        raise SystemExit(f"--merge: {path} was made with other settings ({', '.join(differ)}); rerun without --merge")
    mine = {r["method"] for r in rows}
    combined = [r for r in old.get("runs", []) if r["method"] not in mine] + rows
    order = list(METHODS)
    return sorted(combined, key=lambda r: order.index(r["method"]) if r["method"] in order else len(order))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=20, help="optimizer steps per method (default 20)")
    p.add_argument("--out", default="bench/results/compare_methods.md", help="markdown file to write")
    p.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset of " + ", ".join(METHODS))
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--train", default="examples/data/dpo_train.jsonl")
    p.add_argument("--eval", default="examples/data/dpo_validation.jsonl")
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--output-dir", default="runs/compare_methods")
    p.add_argument("--force", action="store_true", help="retrain runs that already finished")
    p.add_argument("--merge", action="store_true", help="keep the other methods' rows already in --out's JSON")
    args = p.parse_args(argv)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        p.error(f"unknown method(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(METHODS)}")

    import logging

    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr)
    rows = []
    for m in methods:
        print(f"[{m}] training {args.steps} steps ...", file=sys.stderr, flush=True)
        rows.append(train_and_evaluate(m, args))
    out = Path(args.out)
    if args.merge:
        rows = merged_rows(out.with_suffix(".json"), rows, args)
    table = markdown_table(rows, args)
    out.parent.mkdir(parents=True, exist_ok=True)
    from prospect.io import atomic_write_json, atomic_write_text

    atomic_write_text(out, table)
    atomic_write_json(
        out.with_suffix(".json"),
        {
            "steps": args.steps,
            "model": args.model,
            "train": args.train,
            "eval": args.eval,
            "lr": args.lr,
            "seed": args.seed,
            "runs": rows,
        },
    )
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
