"""The run directory: where it is, what it already holds, and how final/ is written.

    <output_dir>/<run_name>/
        config.yaml        fully resolved config (secrets redacted)
        data_report.json   every row accepted or rejected, conversions, weights, tokenization check
        metrics.jsonl      one JSON object per log step (train and eval)
        checkpoints/       Trainer checkpoints (resume from the last complete one)
        final/             adapter or full model + tokenizer, loadable by from_pretrained / PEFT
        results.json       final metrics, steps, wall time (written last: its presence = finished)
        plots/             PNG curves of loss, rewards, margins, KL

`prospect train` run twice on one run directory must neither train a finished run again
nor resume a checkpoint with other settings (that would mix two runs in one set of
weights). The sweep uses the same comparison to skip finished runs. Run names cannot
escape the output directory (`safe_name`).
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import warnings
from pathlib import Path
from typing import Any

import yaml

from prospect.config.loader import loads_config
from prospect.config.schema import RunConfig
from prospect.errors import ConfigError
from prospect.io import replace_directory

log = logging.getLogger("prospect")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")

# Settings that may change between a run and its resumption without mixing two runs:
# whether to resume, where metrics go, and how far to train (extending a finished run).
RESUMABLE_CHANGES = ("training.resume", "training.max_steps", "training.num_epochs", "logging.")


def _flat(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: obj}


def saved_config(run_dir: Path) -> dict[str, Any] | None:
    """The flattened config.yaml of `run_dir`, read through the current schema (None if absent;
    {"<unreadable>": ...} if damaged).

    Reading it through the schema and writing it out again puts it on the same footing as the
    config it is compared with: a field added to Prospect since (with its default) or a renamed
    alias is not a change of the run's settings.
    """
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        return None
    try:
        text = path.read_text(encoding="utf-8")
        raw = yaml.safe_load(text) or {}
    except (OSError, yaml.YAMLError):
        return {"config.yaml (unreadable)": object()}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return _flat(yaml.safe_load(loads_config(text, source=str(path)).to_yaml()) or {})
    except ConfigError:  # written by another version, no longer valid: compare it as written
        return _flat(raw)


def config_changes(old: dict[str, Any] | None, cfg: RunConfig) -> list[str]:
    """Dotted keys where a saved config differs from `cfg` (values the engine resolves, like
    `auto` KTO weights, are not counted)."""
    if old is None:
        return []
    new = _flat(yaml.safe_load(cfg.to_yaml()) or {})
    return sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k) and new.get(k) != "auto")


def mixing_changes(changes: list[str]) -> list[str]:
    """The changes that make resuming mix two runs (all but RESUMABLE_CHANGES)."""
    return [k for k in changes if not k.startswith(RESUMABLE_CHANGES)]


def finished_step(run_dir: Path) -> int | None:
    """The global step a finished run ended at (from results.json), or None."""
    try:
        return int(json.loads((Path(run_dir) / "results.json").read_text(encoding="utf-8"))["global_step"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def safe_name(name: str) -> str:
    """A run/sweep name that cannot escape its parent directory ('../x' -> 'x', '/' -> '-')."""
    s = _UNSAFE.sub("-", name).strip(".-")
    s = re.sub(r"\.{2,}", ".", s)
    return s[:120] or "run"


def model_short_name(model_name: str) -> str:
    """A filesystem-friendly short name of a model id or path ('HuggingFaceTB/SmolLM2-135M' -> 'smollm2-135m')."""
    base = model_name.rstrip("/").split("/")[-1]
    base = re.sub(r"\.gguf$", "", base, flags=re.IGNORECASE)
    base = re.sub(r"\.(Q\d\w*|F16|F32|BF16)$", "", base, flags=re.IGNORECASE)
    return safe_name(base.lower())


def run_directory(cfg: RunConfig) -> Path:
    """<output_dir>/<run_name> (default run name: <model short name>_<method>), always inside output_dir."""
    root = Path(cfg.training.output_dir).resolve()
    name = safe_name(cfg.training.run_name or f"{model_short_name(cfg.model.name)}_{cfg.method.name}")
    path = (root / name).resolve()
    if root not in path.parents:
        raise ConfigError(f"training.run_name: '{cfg.training.run_name}' would leave the output directory {root}")
    return path


def previous_run(run_dir: Path, cfg: RunConfig, previous: dict[str, Any] | None, last: str | None) -> int | None:
    """Resuming in a run directory that holds a run: the step it finished at (nothing to train), or
    None to go on; ConfigError if it was trained with other settings (resuming would mix two runs).

    previous: `saved_config(run_dir)` read before this run wrote its own; last: the newest complete
    checkpoint. A finished run whose max_steps/num_epochs were raised trains on (it is extended).
    """
    done = finished_step(run_dir)
    if last is None and done is None:
        return None  # nothing trained here yet (or only a config.yaml from a run that failed early)
    changes = config_changes(previous, cfg)
    mixing = mixing_changes(changes)
    if mixing:
        shown = ", ".join(mixing[:5]) + (f" and {len(mixing) - 5} more" if len(mixing) > 5 else "")
        raise ConfigError(
            f"{run_dir} holds a run trained with other settings ({shown}); resuming it would mix two runs. "
            "Use another training.run_name, or --no-resume to train this directory again from step 0"
        )
    extended = {"training.max_steps", "training.num_epochs"} & set(changes)
    if done is not None and (not extended or 0 < cfg.training.max_steps <= done):
        log.info(
            "%s finished earlier (step %d); nothing to train. --no-resume trains it again from step 0", run_dir, done
        )
        return done
    return None


def last_complete_checkpoint(ckpt_dir: Path) -> str | None:
    """The newest checkpoint that was written to the end, or None.

    Trainer writes `trainer_state.json` last, after weights, optimizer, scheduler and RNG
    state, so a checkpoint whose state file is missing, unreadable or names another step was
    cut short (the process was killed while saving) and is never resumed from. Such partial
    checkpoints newer than the one chosen are removed, so later rotation cannot keep them
    in place of a complete one.
    """
    if not ckpt_dir.is_dir():
        return None
    found = []
    for d in ckpt_dir.iterdir():
        m = re.fullmatch(r"checkpoint-(\d+)", d.name)
        if m and d.is_dir():
            found.append((int(m.group(1)), d))
    for step, d in sorted(found, reverse=True):
        try:
            state = json.loads((d / "trainer_state.json").read_text(encoding="utf-8"))
            if int(state.get("global_step", -1)) == step:
                return str(d)
        except (OSError, ValueError, TypeError, AttributeError):
            pass
        log.warning("checkpoint %s is incomplete (the run was stopped while saving it); removing it", d)
        shutil.rmtree(d, ignore_errors=True)
    return None


def save_final(trainer: Any, tokenizer: Any, final_dir: Path) -> None:
    """Write final/ atomically: save into a temporary directory, then swap it into place.

    A run killed while saving leaves the previous final/ (or none), never half a model.
    Trainer also writes training_args.bin (a pickle) beside the weights; final/ is what users
    share and load, so it holds safetensors and JSON only (the settings are in config.yaml).
    """
    # One name on every process (sharded saves write from several ranks); the main process
    # first clears what a run killed while saving left, then everyone saves.
    tmp = final_dir.with_name(f".{final_dir.name}.tmp")
    if trainer.args.should_save:
        for stale in [tmp, *final_dir.parent.glob(f".{final_dir.name}.old-*")]:
            shutil.rmtree(stale, ignore_errors=True)
    trainer.accelerator.wait_for_everyone()
    try:
        trainer.save_model(str(tmp))
        if not trainer.args.should_save:  # not the main process: it has nothing to move
            return
        tokenizer.save_pretrained(str(tmp))
    except BaseException:
        if trainer.args.should_save:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    (tmp / "training_args.bin").unlink(missing_ok=True)
    replace_directory(tmp, final_dir)
