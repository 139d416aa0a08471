"""Trainer callbacks: metrics.jsonl on every log, progress bars (training: loss and rewards; evaluation),
generation samples at every evaluation; `attach_callbacks` adds the ones a run asks for."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from prospect.io import append_jsonl, atomic_write_text, read_jsonl

# Figures shown next to the progress bar, in this order, when present.
_SHOWN = (
    ("loss", "loss"),
    ("rewards/chosen", "r+"),
    ("rewards/rejected", "r-"),
    ("rewards/margins", "margin"),
    ("kl", "kl"),
    ("rewards/accuracies", "acc"),
)


def truncate_metrics(path: Path, step: int) -> float:
    """Keep the rows of `path` logged at or before `step`, minus end-of-training summaries; atomic rewrite.

    A run resumed from the checkpoint at `step` logs every later step again, so without this
    a killed-and-resumed run would list those steps twice. Summary rows (`train_runtime`) are
    dropped because the resumed run writes its own. A torn last line is dropped with the rest.
    Returns the wall time (`time_s`) of the last row kept (0.0 if none).
    """
    path = Path(path)
    if not path.exists():
        return 0.0
    rows = [
        r
        for r in read_jsonl(path)
        if isinstance(r, dict)
        and isinstance(r.get("step"), (int, float))
        and r["step"] <= step
        and "train_runtime" not in r
    ]
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in rows))
    return max((float(r.get("time_s") or 0.0) for r in rows), default=0.0)


class MetricsFileCallback(TrainerCallback):
    """Appends every log (train and eval) to metrics.jsonl with step, epoch and wall time.

    At the start of training the file is cut back to the rows up to the step training starts
    from (all rows for a fresh start, the checkpoint's step on resume; `truncate_metrics`), so
    metrics.jsonl of a resumed run equals that of an uninterrupted one except for `time_s`,
    which continues from the last kept row.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.t0 = time.time()

    def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if state.is_world_process_zero:
            # global_step 0 is a fresh start: rows of an earlier run in this directory go.
            self.t0 = time.time() - truncate_metrics(self.path, state.global_step if state.global_step > 0 else -1)

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any) -> None:
        if not logs or not state.is_world_process_zero:
            return
        row = {"step": state.global_step, "epoch": state.epoch, "time_s": round(time.time() - self.t0, 3)}
        row.update({k: v for k, v in logs.items() if isinstance(v, (int, float, str))})
        append_jsonl(self.path, row)


class RichProgressCallback(TrainerCallback):
    """A tqdm bar with ETA whose postfix shows loss, rewards, margin and KL; eval results printed as one line."""

    def __init__(self) -> None:
        self.bar = None
        self.eval_bar = None

    def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if state.is_world_process_zero:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=state.max_steps, desc="Training", unit="step", dynamic_ncols=True)
            self.bar.update(state.global_step)

    def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any) -> None:
        if self.bar is None or not logs:
            return
        if "loss" in logs:
            self.bar.set_postfix(
                {short: f"{logs[k]:.4g}" for k, short in _SHOWN if isinstance(logs.get(k), (int, float))}, refresh=True
            )
        elif any(k.startswith("eval_") for k in logs):
            shown = {
                k: v
                for k, v in logs.items()
                if k.startswith("eval_") and isinstance(v, (int, float)) and not k.endswith(("runtime", "per_second"))
            }
            self.bar.write(
                f"eval @ step {state.global_step}: " + ", ".join(f"{k[5:]}={v:.4g}" for k, v in shown.items()),
                file=sys.stderr,
            )  # beside the bars; stdout is left for results

    def on_prediction_step(self, args: Any, state: Any, control: Any, eval_dataloader: Any = None, **kw: Any) -> None:
        """A second bar, with ETA, for each evaluation pass (removed when it ends)."""
        if not state.is_world_process_zero or eval_dataloader is None or not hasattr(eval_dataloader, "__len__"):
            return
        if self.eval_bar is None:
            from tqdm.auto import tqdm

            self.eval_bar = tqdm(
                total=len(eval_dataloader), desc="Evaluating", unit="batch", leave=False, dynamic_ncols=True
            )
        self.eval_bar.update(1)

    def on_evaluate(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if self.eval_bar is not None:
            self.eval_bar.close()
            self.eval_bar = None

    def on_train_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class SamplesAtEvaluation(TrainerCallback):
    """data.generate_during_eval: after every evaluation, `write(step)` writes generation samples
    (generations/step-<N>.jsonl) and returns user metrics, which are logged like eval metrics."""

    def __init__(self, trainer: Any, write: Callable[[int], dict[str, float]]) -> None:
        self.trainer = trainer
        self.write = write

    def on_evaluate(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if state.is_world_process_zero:
            user = self.write(state.global_step)
            if user:
                self.trainer.log(dict(user))


def attach_callbacks(
    trainer: Any,
    cfg: Any,
    run_dir: Path,
    *,
    quiet: bool = False,
    samples: Callable[[int], dict[str, float]] | None = None,
) -> None:
    """The run's callbacks: metrics.jsonl, the rich progress bars (unless quiet), generation samples
    after every evaluation (`samples(step)`, when given), early stopping (training.early_stopping_patience)."""
    from transformers import EarlyStoppingCallback
    from transformers.trainer_callback import ProgressCallback

    trainer.add_callback(MetricsFileCallback(run_dir / "metrics.jsonl"))
    if samples is not None:
        trainer.add_callback(SamplesAtEvaluation(trainer, samples))
    if not quiet:
        trainer.remove_callback(ProgressCallback)
        trainer.add_callback(RichProgressCallback())
    if cfg.training.early_stopping_patience and trainer.eval_dataset is not None:
        trainer.add_callback(EarlyStoppingCallback(early_stopping_patience=cfg.training.early_stopping_patience))
