"""The alias table: seed names -> canonical config keys, and the seeds' command-line shortcuts.

The seeds name the same setting in different places and spellings (seed 003 puts
`beta` under `training`, seed 004 has a flat `hyperparams:` block, peft says `r` where
Prospect says `lora_rank`). Every accepted spelling is one row of `ALIASES`:

    Alias(where, key, target, origin, action, methods, note)

- `where`  dotted path of the mapping the key may appear in ("" = top level);
- `key`    the seed's name there;
- `target` canonical dotted key it becomes; `{method}` stands for the active method's
  section (its row's `section` in the method table; the same rule as
  `RunConfig.method_section`);
- `action` "move" (rename), "container" (a seed block whose keys are looked up in the
  rows with `where = <its path>`), "sweep" (seed 004 `deltas` -> a sweep grid),
  "ignore" (accepted, dropped with a warning), "ambiguous" (refused: two seeds disagree);
- `methods` if set, the target only has an effect with these methods (a warning otherwise).

An alias applies only where it is unambiguous. `kto_lambda` is the one real clash between the seeds:
under `kto:` it is seed 000's loss aversion (canonical `kto.kto_lambda`); under
`training:` it is seed 003's weight of the KTO term in DPO+KTO (canonical
`method.kto_weight`); at the top level, with nothing to tell them apart, it is refused.

Keys that are neither canonical nor in this table stay errors (pydantic refuses them).
`canonicalize.py` applies the table; docs/config_aliases.md is `alias_table_markdown()`.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from typing import Literal

from prospect.config.methods import LOSS_TYPES, METHODS
from prospect.config.sections import OptimizationConfig, TrainingConfig

#: Placeholder in a target for the section holding the active method's beta/reference.
METHOD_SECTION = "{method}"

#: Valid `method.name` values, in method-table order.
METHOD_NAMES: tuple[str, ...] = tuple(METHODS)

#: Valid `kto.loss_type` values: TRL's KTO loss, this project's prospect-theory loss, APO-zero unpaired.
KTO_LOSS_TYPES: tuple[str, ...] = LOSS_TYPES["kto"]

#: Valid `dpo.loss_type` values (str or list): TRL 1.16 `DPOConfig.loss_type`.
DPO_LOSS_TYPES: tuple[str, ...] = LOSS_TYPES["dpo"]

Action = Literal["move", "container", "sweep", "ignore", "ambiguous"]


@dataclass(frozen=True)
class Alias:
    """One accepted seed spelling; see the module docstring for the fields."""

    where: str
    key: str
    target: str
    origin: str
    action: Action = "move"
    methods: tuple[str, ...] = ()
    note: str = ""


_KTO_LAMBDA_CLASH = (
    "'{key}' is ambiguous at the top level: seed 000 means loss aversion (write kto.kto_lambda, "
    "default 2.25) and seed 003 means the weight of the KTO term in DPO+KTO (write method.kto_weight, "
    "0.01-0.5)"
)

ALIASES: tuple[Alias, ...] = (
    # --- top level -------------------------------------------------------------
    Alias(
        "",
        "deltas",
        "sweep.method.delta",
        "seed 004 (modified_dpo.deltas)",
        "sweep",
        note="becomes the sweep grid {method.delta: [...]}; sets method factual_dpo when no method is given",
    ),
    Alias("", "wandb", "", "seed 004", "container", note="W&B block: project, entity, run_prefix"),
    Alias(
        "",
        "hyperparams",
        "",
        "seed 004",
        "container",
        note="flat block; besides the rows below, any training.* or optimization.* key name is accepted",
    ),
    Alias("", "paths", "", "seed 004", "container", note="dataset and output paths"),
    Alias("", "kto_lambda", "", "seeds 000 and 003 disagree", "ambiguous", note=_KTO_LAMBDA_CLASH),
    Alias("", "lambda", "", "seed 003 CLI (--lambda)", "ambiguous", note=_KTO_LAMBDA_CLASH),
    # --- model -----------------------------------------------------------------
    Alias("model", "model_name", "model.name", "HF example scripts (model_name_or_path style)"),
    Alias("model", "base_model", "model.name", "seed 003"),
    Alias("model", "id", "model.name", "seed 004 (model registry entry)"),
    Alias("model", "max_seq_length", "model.max_length", "seed 004 / TRL SFT"),
    Alias(
        "model",
        "use_phase_attention",
        "",
        "seed 003 (PhaseGPT)",
        "ignore",
        note="PhaseGPT's custom phase attention; Prospect's models have no such feature",
    ),
    Alias("model", "lora_config", "", "seed 003 (peft LoraConfig fields)", "container"),
    Alias("model.lora_config", "r", "optimization.lora_rank", "seed 003 / peft"),
    Alias("model.lora_config", "lora_r", "optimization.lora_rank", "seed 004 spelling"),
    Alias("model.lora_config", "lora_alpha", "optimization.lora_alpha", "seed 003 / peft"),
    Alias("model.lora_config", "lora_dropout", "optimization.lora_dropout", "peft"),
    Alias("model.lora_config", "target_modules", "optimization.lora_target_modules", "seed 003 / peft"),
    # --- training --------------------------------------------------------------
    Alias("training", "method", "method.name", "seed 003"),
    Alias("training", "preference_dataset", "data.train_file", "seed 003"),
    Alias("training", "beta", "{method}.beta", "seed 003"),
    Alias(
        "training",
        "kto_lambda",
        "method.kto_weight",
        "seed 003 track B",
        methods=("dpo_kto",),
        note="seed 003 meaning: weight of the KTO term in DPO+KTO; loss aversion is kto.kto_lambda",
    ),
    Alias(
        "training",
        "lambda",
        "method.kto_weight",
        "seed 003 (--lambda)",
        methods=("dpo_kto",),
        note="same as training.kto_lambda",
    ),
    Alias("training", "reference_model", "{method}.reference_model_name", "seed 003"),
    Alias("training", "per_device_train_batch_size", "training.batch_size", "seed 004 / transformers"),
    Alias("training", "per_device_eval_batch_size", "training.eval_batch_size", "transformers"),
    Alias("training", "num_train_epochs", "training.num_epochs", "seed 004 / transformers"),
    Alias("training", "grad_accumulation", "training.gradient_accumulation_steps", "seed 004"),
    Alias("training", "lr", "training.learning_rate", "seed 003 (--lr)"),
    Alias("training", "max_seq_length", "model.max_length", "seed 004"),
    # --- seed 004 hyperparams block ---------------------------------------------
    Alias("hyperparams", "max_seq_length", "model.max_length", "seed 004"),
    Alias("hyperparams", "load_in_4bit", "optimization.use_quantization", "seed 004 (QLoRA)"),
    Alias("hyperparams", "lora_r", "optimization.lora_rank", "seed 004"),
    Alias("hyperparams", "r", "optimization.lora_rank", "peft"),
    Alias("hyperparams", "target_modules", "optimization.lora_target_modules", "peft"),
    Alias("hyperparams", "per_device_train_batch_size", "training.batch_size", "seed 004"),
    Alias("hyperparams", "grad_accumulation", "training.gradient_accumulation_steps", "seed 004"),
    Alias("hyperparams", "num_train_epochs", "training.num_epochs", "seed 004"),
    Alias("hyperparams", "lr", "training.learning_rate", "seed 003 (--lr)"),
    Alias("hyperparams", "beta", "{method}.beta", "seed 004 (TRL DPO beta)"),
    # --- seed 004 paths block ----------------------------------------------------
    Alias("paths", "train", "data.train_file", "seed 004 (original_dpo.paths)"),
    Alias("paths", "train_file", "data.train_file", "seed 004 (modified_dpo.paths)"),
    Alias("paths", "eval", "data.validation_file", "seed 004 (original_dpo.paths)"),
    Alias("paths", "eval_file", "data.validation_file", "seed 004 (modified_dpo.paths)"),
    Alias("paths", "test_file", "data.test_file", "seed 000 spelling"),
    Alias("paths", "output_root", "training.output_dir", "seed 004"),
    # --- seed 004 wandb block ----------------------------------------------------
    Alias("wandb", "project", "logging.wandb_project", "seed 004"),
    Alias("wandb", "entity", "logging.entity", "seed 004"),
    Alias("wandb", "run_prefix", "logging.run_prefix", "seed 004"),
    Alias("wandb", "mode", "logging.wandb_mode", "W&B"),
    # --- optimization ------------------------------------------------------------
    Alias("optimization", "lora_r", "optimization.lora_rank", "seed 004"),
    Alias("optimization", "r", "optimization.lora_rank", "peft"),
    Alias("optimization", "target_modules", "optimization.lora_target_modules", "peft"),
    Alias("optimization", "load_in_4bit", "optimization.use_quantization", "seed 004 (QLoRA)"),
    Alias("optimization", "gradient_checkpointing", "optimization.use_gradient_checkpointing", "transformers"),
    # --- kto / dpo ---------------------------------------------------------------
    Alias("kto", "max_completion_length", "kto.max_target_length", "TRL KTOConfig"),
    Alias("dpo", "max_completion_length", "dpo.max_target_length", "TRL DPOConfig"),
)

#: Container blocks whose keys may also be any field name of these sections.
CONTAINER_FALLBACK: dict[str, tuple[tuple[str, type], ...]] = {
    "hyperparams": (("training", TrainingConfig), ("optimization", OptimizationConfig)),
}

#: Top-level keys of seed layouts Prospect does not read, with what to do instead.
UNSUPPORTED_HINTS: dict[str, str] = {
    "original_dpo": "seed 004 keeps several runs in one file; write one config per run with its "
    "hyperparams:/paths: blocks at the top level (method: dpo)",
    "modified_dpo": "seed 004 keeps several runs in one file; write one config per run with its "
    "hyperparams:/paths:/deltas: at the top level (method: factual_dpo)",
}


def method_section(method: str) -> str:
    """Section holding beta/reference settings of `method` (as `RunConfig.method_section`)."""
    return METHODS[method].section


def aliases_at(where: str) -> list[str]:
    """Alias keys accepted in the mapping at dotted path `where` ("" = top level)."""
    return [a.key for a in ALIASES if a.where == where and a.action != "ambiguous"]


#: Target of --kto_lambda / --lambda: method.kto_weight for method dpo_kto (seed 003),
#: kto.kto_lambda otherwise (seed 000).
KTO_LAMBDA_SHORTCUT = "{kto_lambda}"

#: Command-line shortcuts of the seeds -> canonical dotted keys (`{method}`: see METHOD_SECTION).
SHORTCUTS: dict[str, str] = {
    "lr": "training.learning_rate",
    "learning_rate": "training.learning_rate",
    "kto_lambda": KTO_LAMBDA_SHORTCUT,
    "lambda": KTO_LAMBDA_SHORTCUT,
    "beta": "{method}.beta",
    "delta": "method.delta",
    "method": "method.name",
    "model": "model.name",
    "model_id": "model.name",
    "output_dir": "training.output_dir",
    "seed": "training.seed",
    "max_steps": "training.max_steps",
    "batch_size": "training.batch_size",
    "num_epochs": "training.num_epochs",
}


def _method_sections_sentence() -> str:
    """'`kto` for method `kto`, `dpo` for methods `dpo`, `ipo`, ...', from the method table."""
    by_section: dict[str, list[str]] = {}
    for m in METHODS.values():
        by_section.setdefault(m.section, []).append(f"`{m.name}`")
    parts = []
    for section, names in by_section.items():
        listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
        parts.append(f"`{section}` for method{'s' if len(names) > 1 else ''} {listed}")
    return ", ".join(parts)


def alias_table_markdown() -> str:
    """The alias table as markdown (docs/config_aliases.md is this text)."""
    intro = (
        "Prospect accepts the names the seed documents use and rewrites them to one canonical "
        "key before the config is validated. `prospect config show` prints the resolved config. "
        f"`{METHOD_SECTION}` means the active method's section: {_method_sections_sentence()}. "
        "A key that is neither canonical nor listed here is an error that names the closest valid key."
    )
    lines = ["# Configuration aliases", "", *textwrap.wrap(intro, width=87, break_on_hyphens=False), ""]
    lines += ["| where | seed key | canonical key | from | note |", "| --- | --- | --- | --- | --- |"]
    lines += [_alias_row(a) for a in ALIASES]
    lines += [
        "",
        "## `kto_lambda`: two meanings",
        "",
        "- `kto.kto_lambda` (seed 000): loss aversion lambda of the `prospect` loss, default 2.25.",
        "- `training.kto_lambda` / `training.lambda` (seed 003 track B): weight of the KTO term in",
        "  DPO+KTO, canonical `method.kto_weight` (only used with method `dpo_kto`).",
        "- A top-level `kto_lambda` or `lambda` is refused as ambiguous.",
        "- Command line: `--kto_lambda X` and `--lambda X` set `method.kto_weight` when the",
        "  resolved method is `dpo_kto` (seed 003 usage) and `kto.kto_lambda` otherwise (with a",
        "  warning unless the method is `kto`, where it has an effect).",
        "",
        "## Command-line shortcuts",
        "",
        "| option | sets |",
        "| --- | --- |",
    ]
    for opt, target in SHORTCUTS.items():
        if target == KTO_LAMBDA_SHORTCUT:
            sets = "`method.kto_weight=X` if the method is `dpo_kto`, else `kto.kto_lambda=X`"
        else:
            sets = f"`{target}=X`"
        lines.append(f"| `--{opt} X` | {sets} |")
    lines += [
        "",
        "`--config PATH` names the config file itself. `--set a.b.c=VALUE` sets any key",
        "(VALUE is read as YAML: `0.2`, `[q_proj, v_proj]`, `null`); seed names work there too",
        "(`--set training.lr=5e-6`). Shortcuts are applied after `--set` overrides.",
        "",
    ]
    return "\n".join(lines)


def _alias_row(a: Alias) -> str:
    where = a.where or "(top level)"
    if a.action == "container":
        target = f"block: keys below under `{(a.where + '.' + a.key).lstrip('.')}`"
    elif a.action == "ignore":
        target = "(ignored, warning)"
    elif a.action == "ambiguous":
        target = "(refused: ambiguous)"
    elif a.action == "sweep":
        target = "`sweep: {method.delta: [...]}`"
    else:
        target = f"`{a.target}`"
    note = a.note.replace("{key}", a.key).replace("|", "\\|")
    if a.methods:
        note = (note + "; " if note else "") + f"takes effect only with method {', '.join(a.methods)}"
    return f"| `{where}` | `{a.key}` | {target} | {a.origin} | {note} |"
