"""Seed names -> canonical config keys, and the name lists a config is checked against.

The seeds name the same setting in different places and spellings (seed 003 puts
`beta` under `training`, seed 004 has a flat `hyperparams:` block, peft says `r` where
Prospect says `lora_rank`). Every accepted spelling is one row of `ALIASES`:

    Alias(where, key, target, origin, action, methods, note)

- `where`  dotted path of the mapping the key may appear in ("" = top level);
- `key`    the seed's name there;
- `target` canonical dotted key it becomes; `{method}` stands for the active method's
  section (`kto` when the method is kto, else `dpo`; the same rule as
  `RunConfig.method_section`);
- `action` "move" (rename), "container" (a seed block whose keys are looked up in the
  rows with `where = <its path>`), "sweep" (seed 004 `deltas` -> a sweep grid),
  "ignore" (accepted, dropped with a warning), "ambiguous" (refused: two seeds disagree);
- `methods` if set, the target only has an effect with these methods (a warning otherwise).

An alias applies only where it is unambiguous. `kto_lambda` is the clash DESIGN.md names:
under `kto:` it is seed 000's loss aversion (canonical `kto.kto_lambda`); under
`training:` it is seed 003's weight of the KTO term in DPO+KTO (canonical
`method.kto_weight`); at the top level, with nothing to tell them apart, it is refused.

Keys that are neither canonical nor in this table stay errors (pydantic refuses them).
"""

from __future__ import annotations

import copy
import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from prospect.config.schema import METHODS, OptimizationConfig, TrainingConfig

#: Placeholder in a target for the section holding the active method's beta/reference.
METHOD_SECTION = "{method}"

#: Valid `method.name` values (same tuple as the schema's Literal).
METHOD_NAMES: tuple[str, ...] = tuple(METHODS)

#: Valid `kto.loss_type` values: TRL's KTO loss, this project's prospect-theory loss, APO-zero unpaired.
KTO_LOSS_TYPES: tuple[str, ...] = ("kto", "prospect", "apo_zero_unpaired")

#: Valid `dpo.loss_type` values (str or list): TRL 1.16 `DPOConfig.loss_type`.
DPO_LOSS_TYPES: tuple[str, ...] = (
    "sigmoid",
    "hinge",
    "ipo",
    "exo_pair",
    "nca_pair",
    "robust",
    "bco_pair",
    "sppo_hard",
    "aot",
    "aot_unpaired",
    "apo_zero",
    "apo_down",
    "discopop",
    "sft",
    "sigmoid_norm",
)

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
_CONTAINER_FALLBACK: dict[str, tuple[tuple[str, type], ...]] = {
    "hyperparams": (("training", TrainingConfig), ("optimization", OptimizationConfig)),
}

#: Top-level keys of seed layouts Prospect does not read, with what to do instead.
UNSUPPORTED_HINTS: dict[str, str] = {
    "original_dpo": "seed 004 keeps several runs in one file; write one config per run with its "
    "hyperparams:/paths: blocks at the top level (method: dpo)",
    "modified_dpo": "seed 004 keeps several runs in one file; write one config per run with its "
    "hyperparams:/paths:/deltas: at the top level (method: factual_dpo)",
}

_RULES: dict[tuple[str, str], Alias] = {(a.where, a.key): a for a in ALIASES}
_WHERES: tuple[str, ...] = tuple(dict.fromkeys(a.where for a in ALIASES if a.where))
_CONTAINERS = {(a.where + "." + a.key).lstrip(".") for a in ALIASES if a.action == "container"}

Path = tuple[Any, ...]


class AliasError(Exception):
    """An alias that cannot be applied; `path` is the key as written, for locating it."""

    def __init__(self, path: Path, message: str) -> None:
        super().__init__(message)
        self.path = path
        self.message = message


@dataclass
class Canonical:
    """Result of `canonicalize`: the rewritten tree, each move (written path -> canonical
    path), and (written path, message) warnings."""

    tree: dict[Any, Any]
    moves: list[tuple[Path, Path]] = field(default_factory=list)
    warnings: list[tuple[Path, str]] = field(default_factory=list)
    rules: dict[Path, Alias] = field(default_factory=dict)


def method_section(method: str) -> str:
    """Section holding beta/reference settings of `method` (as `RunConfig.method_section`)."""
    return "kto" if method == "kto" else "dpo"


def aliases_at(where: str) -> list[str]:
    """Alias keys accepted in the mapping at dotted path `where` ("" = top level)."""
    return [a.key for a in ALIASES if a.where == where and a.action != "ambiguous"]


def _dotted(path: Path) -> str:
    return ".".join(str(p) for p in path)


def _target_path(alias: Alias, method: str) -> Path:
    return tuple(alias.target.replace(METHOD_SECTION, method_section(method)).split("."))


def canonicalize(tree: Mapping[Any, Any], method: str) -> Canonical:
    """Rewrite seed spellings in `tree` (a parsed config mapping) to canonical keys.

    `method` is the run's method name; it decides where `{method}` targets land. The
    input is not modified. Raises `AliasError` when an alias and the key it stands for
    are both given with different values, or a key is ambiguous.
    """
    out: dict[Any, Any] = copy.deepcopy(dict(tree))
    result = Canonical(out)
    written_by: dict[Path, Path] = {}
    if isinstance(out.get("method"), str):
        out["method"] = {"name": out["method"]}
    # Top level first (containers there write into sections), then each section.
    _process(out, (), "", method, result, written_by)
    for where in _WHERES:
        if where in _CONTAINERS:
            continue  # handled when its parent mapping is processed
        node = _get(out, tuple(where.split(".")))
        if isinstance(node, dict):
            _process(node, tuple(where.split(".")), where, method, result, written_by)
    return result


def _process(
    node: dict[Any, Any],
    path: Path,
    where: str,
    method: str,
    result: Canonical,
    written_by: dict[Path, Path],
    container: str | None = None,
) -> None:
    """Apply the rows for `where` to the keys of `node` (found at `path` in the input)."""
    for key in list(node):
        rule = _RULES.get((where, key)) if isinstance(key, str) else None
        src = path + (key,)
        if rule is None:
            if container is None:
                continue  # a canonical key (or an unknown one pydantic will name)
            target = _fallback_target(container, key)
            if target is None:
                raise AliasError(src, f"unknown key in the {container}: block{_container_hint(container, key)}")
            _move(result, written_by, src, target, node.pop(key), None)
            continue
        value = node.pop(key)
        if rule.action == "ambiguous":
            raise AliasError(src, rule.note.replace("{key}", str(key)))
        if rule.action == "ignore":
            result.warnings.append((src, f"ignored: {rule.note} ({rule.origin})"))
            continue
        if rule.action == "container":
            if value is None:
                continue
            if not isinstance(value, dict):
                raise AliasError(src, f"expected a mapping ({rule.origin} block), got {type(value).__name__}")
            sub_where = (where + "." + key).lstrip(".")
            _process(value, src, sub_where, method, result, written_by, container=sub_where)
            continue
        if rule.action == "sweep":
            grid = value if isinstance(value, list) else [value]
            sweep = result.tree.get("sweep")
            if sweep is None:
                sweep = result.tree["sweep"] = {}
            elif not isinstance(sweep, dict):
                raise AliasError(src, "cannot add the deltas grid: 'sweep' is not a mapping")
            if "method.delta" in sweep and sweep["method.delta"] != grid:
                raise AliasError(src, f"deltas {grid!r} conflicts with sweep['method.delta'] {sweep['method.delta']!r}")
            sweep["method.delta"] = grid
            result.moves.append((src, ("sweep", "method.delta")))
            result.rules[src] = rule
            continue
        _move(result, written_by, src, _target_path(rule, method), value, rule)


def _container_hint(container: str, key: Any) -> str:
    accepted = aliases_at(container) + _fallback_names(container)
    close = difflib.get_close_matches(str(key), accepted, n=1, cutoff=0.6)
    if close:
        return f" (did you mean '{container}.{close[0]}'?)"
    sections = [section for section, _ in _CONTAINER_FALLBACK.get(container, ())]
    extra = f", or any {'/'.join(sections)} key name" if sections else ""
    return f" (accepted: {', '.join(aliases_at(container))}{extra})"


def _fallback_names(container: str) -> list[str]:
    return [n for _, cls in _CONTAINER_FALLBACK.get(container, ()) for n in cls.model_fields]


def _fallback_target(container: str, key: Any) -> Path | None:
    for section, cls in _CONTAINER_FALLBACK.get(container, ()):
        if isinstance(key, str) and key in cls.model_fields:
            return (section, key)
    return None


def _move(
    result: Canonical, written_by: dict[Path, Path], src: Path, dst: Path, value: Any, rule: Alias | None
) -> None:
    """Put `value` at `dst`, refusing to overwrite a different value already there."""
    node = result.tree
    for i, part in enumerate(dst[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        elif part == "method" and i == 0 and isinstance(child, str):
            child = node[part] = {"name": child}
        if not isinstance(child, dict):
            raise AliasError(src, f"cannot set {_dotted(dst)} (alias target): {_dotted(dst[: i + 1])} is not a mapping")
        node = child
    leaf = dst[-1]
    if value is None and leaf in node:
        return  # a null alias (e.g. the `max_completion_length: null` a resolved config holds) sets nothing
    if leaf in node and node[leaf] != value:
        other = written_by.get(dst, dst)
        raise AliasError(
            src, f"conflicts with {_dotted(other)}: both set {_dotted(dst)} ({value!r} vs {node[leaf]!r}); keep one"
        )
    node[leaf] = value
    written_by[dst] = src
    result.moves.append((src, dst))
    if rule is not None:
        result.rules[src] = rule


def _get(tree: Any, path: Path) -> Any:
    node = tree
    for part in path:
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def alias_table_markdown() -> str:
    """The alias table as markdown (docs/config_aliases.md is this text)."""
    lines = [
        "# Configuration aliases",
        "",
        "Prospect accepts the names the seed documents use and rewrites them to one canonical",
        "key before the config is validated. `prospect config show` prints the resolved config.",
        "`{method}` means the active method's section: `kto` for method `kto`, `dpo` for",
        "`dpo`, `ipo`, `factual_dpo` and `dpo_kto`. A key that is neither canonical nor listed",
        "here is an error that names the closest valid key.",
        "",
        "| where | seed key | canonical key | from | note |",
        "| --- | --- | --- | --- | --- |",
    ]
    for a in ALIASES:
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
        lines.append(f"| `{where}` | `{a.key}` | {target} | {a.origin} | {note} |")
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
