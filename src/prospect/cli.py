"""`prospect` command line.

    prospect train CONFIG [--set a.b=v ...] [--lr X] [--beta X] [--kto_lambda X] [--lambda X] ...
    prospect sweep CONFIG [--dry-run]
    prospect data inspect FILE [--format F] [--json] [--plot PNG] [--strict] [--streaming] [--config CONFIG] [--records N]
    prospect eval RUN_DIR [--data FILE]
    prospect export RUN_DIR [--merge] -o DIR
    prospect config show CONFIG [--set a.b=v ...]

User errors (bad config, bad data, missing model) print one line to stderr and exit
non-zero (2 for config errors) without a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from prospect import __version__, recipes  # recipes: lazy, each loads on first use
from prospect.errors import ProspectError

# Seed shortcuts accepted by `train`, `sweep` and `config show` (seed 003 `--lr`, `--kto_lambda`, `--lambda`).
SHORTCUTS = ("lr", "beta", "kto_lambda", "lambda", "delta", "model", "output_dir", "seed", "max_steps", "batch_size")


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config_path", nargs="?", metavar="CONFIG", help="run YAML file")
    p.add_argument("--config", dest="config_opt", metavar="CONFIG", help="run YAML file (seed 003 spelling)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field, e.g. --set kto.beta=0.2 (repeatable)",
    )
    for name in SHORTCUTS:
        p.add_argument(f"--{name}", dest=f"sc_{name}", metavar="VALUE", help=argparse.SUPPRESS)


def _add_data_parser(sub: Any) -> None:
    """`prospect data inspect FILE [...]`."""
    p = sub.add_parser("data", help="data tools")
    dsub = p.add_subparsers(dest="data_command")
    pi = dsub.add_parser("inspect", help="report what Prospect makes of a data file")
    pi.add_argument("file")
    pi.add_argument(
        "--format",
        default=None,
        metavar="FORMAT",
        help="force the input format: auto (detect, the default), unpaired, binary, score, paired, "
        "pairwise, ranking, conversation, hh",
    )
    pi.add_argument("--json", action="store_true", help="print one JSON object")
    pi.add_argument("--plot", default=None, metavar="PNG", help="write a length histogram")
    pi.add_argument("--strict", action="store_true", help="stop at the first bad row")
    pi.add_argument(
        "--streaming",
        action="store_true",
        help="read with bounded memory (as data.streaming: true): duplicate and pairing indexes on disk",
    )
    pi.add_argument(
        "--config", default=None, help="take the data settings from this run config, and read the file for its method"
    )
    pi.add_argument(
        "--records",
        type=int,
        default=0,
        metavar="N",
        help="print the first N canonical records as training sees them (after conversions; under 'records' in --json)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="prospect", description="Align language models with preference data.")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command")

    p = sub.add_parser("train", help="train one run from a YAML config")
    _add_config_args(p)
    g = p.add_mutually_exclusive_group()
    g.add_argument(
        "--resume",
        dest="resume",
        action="store_true",
        default=None,
        help="resume from the run directory's last checkpoint",
    )
    g.add_argument("--no-resume", dest="resume", action="store_false", help="start fresh even if a checkpoint exists")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="run every check that needs no model (config, data, run directory, training settings), train nothing",
    )

    p = sub.add_parser("sweep", help="train every model x grid value of a config")
    _add_config_args(p)
    p.add_argument("--dry-run", action="store_true", help="list the runs without training")

    _add_data_parser(sub)

    p = sub.add_parser("eval", help="evaluate a finished run on a data file")
    p.add_argument("run_dir")
    p.add_argument("--data", default=None, help="data file (default: the run's validation data)")
    p.add_argument("--json", action="store_true", help="print one JSON object (default: a table)")

    p = sub.add_parser("export", help="export a run's adapter or merged model")
    p.add_argument("run_dir")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--merge", action="store_true", help="merge the adapter into the base weights")

    p = sub.add_parser("config", help="config tools")
    csub = p.add_subparsers(dest="config_command")
    pc = csub.add_parser("show", help="print the fully resolved config")
    _add_config_args(pc)
    return parser


def load_run_config(args: argparse.Namespace) -> Any:
    """CONFIG with --set overrides and seed shortcuts (validated before any model loads)."""
    shortcuts = {k: getattr(args, f"sc_{k}") for k in SHORTCUTS if getattr(args, f"sc_{k}", None) is not None}
    return recipes.load_run_config(args.config_opt or args.config_path, list(args.overrides), shortcuts)


def _setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    # bitsandbytes warns at import on AVX512-BF16 CPUs that the optional `kernels` package (a faster
    # 4-bit CPU kernel) is missing, even for runs that never quantize: only its errors are news.
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    # peft 0.21 reads transformers 5's deprecated is_gradient_checkpointing: not the user's to fix
    warnings.filterwarnings("ignore", message=r".*is_gradient_checkpointing.* is deprecated", category=FutureWarning)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    try:
        import datasets
        import transformers

        transformers.logging.set_verbosity_error()
        datasets.logging.set_verbosity_error()
    except Exception:  # pragma: no cover - optional at import time
        pass


def cmd_train(args: argparse.Namespace) -> int:
    cfg = load_run_config(args)
    _setup_logging()
    if args.dry_run:
        run = recipes.prepare(cfg, resume=args.resume, write=False)
        state = "finished earlier" if run.finished is not None else "ready to train"
        rows = {k: run.report.get(k) for k in ("rows_read", "accepted", "labels", "pairs") if k in run.report}
        print(f"run directory: {run.run_dir} ({state}; nothing trained: --dry-run)")
        print(json.dumps({"method": cfg.method.name, **rows, "kto_weights": run.weights_note}, indent=2))
        return 0
    result = recipes.train(cfg, resume=args.resume, quiet=args.quiet)
    shown = {k: v for k, v in result.metrics.items() if isinstance(v, (int, float))}
    print(f"run directory: {result.run_dir}")
    print(json.dumps({"global_step": result.global_step, **shown}, indent=2))
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    cfg = load_run_config(args)
    _setup_logging()
    return recipes.run_sweep(cfg, dry_run=args.dry_run)


def cmd_data(args: argparse.Namespace) -> int:
    if args.data_command != "inspect":
        raise ProspectError(
            "usage: prospect data inspect FILE [--format F] [--json] [--plot PNG] [--strict] "
            "[--streaming] [--config CONFIG] [--records N]"
        )
    report = recipes.inspect_data(
        args.file,
        config_path=args.config,
        fmt=args.format,
        strict=args.strict,
        streaming=args.streaming,
        as_json=args.json,
        plot=args.plot,
        records=max(args.records, 0),
    )
    if not report["accepted"]:  # nothing would be left to train on: a failure for scripts
        n = report["rows_read"]
        why = ", ".join(f"{c} {k}" for c, k in ((k, v) for v, k in report["rejected_by_reason"].items()))
        what = f"all {n} rows were rejected ({why})" if n else "no rows (the source is empty)"
        print(f"prospect: error: {report['source']}: {what}; nothing is left to train on", file=sys.stderr)
        return 1
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    _setup_logging()
    result = recipes.evaluate_run(args.run_dir, data_file=args.data)
    if args.json:
        print(json.dumps(result, indent=2, ensure_ascii=False, default=str))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{result['run']} on {result['data_file']} ({result['n_examples']} {result['kind']} examples)")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k, v in result["metrics"].items():
        table.add_row(k, "-" if v is None else f"{v:.6g}" if isinstance(v, float) else str(v))
    console = Console()
    console.print(table)
    eval_dir = Path(args.run_dir) / "eval"
    console.print(
        f"metrics: {eval_dir / 'metrics.json'}; {result['n_generations']} generation samples: "
        f"{Path(args.run_dir) / result['generations_file']}"
    )
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    _setup_logging()
    out = recipes.export_run(args.run_dir, args.output, merge=args.merge)
    print(f"exported to {out}")
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    if args.config_command != "show":
        raise ProspectError("usage: prospect config show CONFIG [--set a.b=v ...]")
    cfg = load_run_config(args)
    sys.stdout.write(cfg.to_yaml())
    return 0


COMMANDS = {
    "train": cmd_train,
    "sweep": cmd_sweep,
    "data": cmd_data,
    "eval": cmd_eval,
    "export": cmd_export,
    "config": cmd_config,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        print(__version__)
        return 0
    if not args.command:
        parser.print_help()
        return 2
    try:
        return COMMANDS[args.command](args)
    except ProspectError as e:
        print(f"prospect: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("prospect: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `prospect data inspect FILE --json | head`: the reader went away
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
