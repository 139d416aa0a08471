"""The model card (README.md) of an exported run: base model, method, settings, metrics, data, usage.

No secrets: the config is redacted and reports pass through `redact_secrets`. The method's
description comes from the method table (`prospect.config.methods`) and its settings are the
values of the method's own config section that differ from their defaults.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from prospect.config.loader import redact_secrets
from prospect.config.methods import METHODS
from prospect.config.schema import RunConfig
from prospect.engine.model import SMOLLM2_HUB_ID, SMOLLM2_NAMES

# Trainer figures about the machine, not the model: left out of the card's metrics.
_BOOKKEEPING = ("_runtime", "_per_second", "total_flos", "epoch")


def _method_summary(cfg: RunConfig) -> str:
    method = METHODS[cfg.method.name]
    sec = cfg.method_section
    text = f"{method.summary} ({method.paper})."
    default = type(sec).model_fields["loss_type"].default
    if sec.loss_type != default:
        text += f" Loss: loss_type {sec.loss_type} (formula in Prospect's docs/methods.md)."
    return text + " Rewards are beta * (log pi(y|x) - log pi_ref(y|x))."


def _non_default(section: Any, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """Fields of a config section whose value differs from the field's default."""
    out = {}
    for name, field in type(section).model_fields.items():
        value = getattr(section, name)
        if name not in skip and value is not None and value != field.get_default(call_default_factory=True):
            out[name] = value
    return out


def _method_settings(cfg: RunConfig) -> dict[str, Any]:
    sec = cfg.method_section
    out: dict[str, Any] = {
        "method": cfg.method.name,
        "beta": sec.beta,
        "loss_type": sec.loss_type,
        "reference_free": sec.reference_free,
    }
    out.update(_non_default(cfg.method, skip=("name",)))
    if METHODS[cfg.method.name].section == "kto":
        out.update(
            desirable_weight=cfg.kto.desirable_weight,
            undesirable_weight=cfg.kto.undesirable_weight,
            reference_point=cfg.kto.reference_point,
        )
    out.update({k: v for k, v in _non_default(sec).items() if k not in out})
    o = cfg.optimization
    if o.use_lora:
        out.update(
            lora_rank=o.lora_rank,
            lora_alpha=o.lora_alpha if o.lora_alpha is not None else 2 * o.lora_rank,
            lora_target_modules=o.lora_target_modules,
        )
    t = cfg.training
    out.update(
        learning_rate=t.learning_rate,
        batch_size=t.batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        seed=t.seed,
    )
    return out


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, (dict, list)):
        return json.dumps(v, ensure_ascii=False, default=str)
    return str(v)


def _data_summary(report: dict[str, Any]) -> dict[str, Any]:
    """Top-level numbers and small tables of the data report (lists and long texts left out)."""
    out: dict[str, Any] = {}
    for k, v in report.items():
        if isinstance(v, (int, float, bool)) or (isinstance(v, str) and len(v) <= 200):
            out[k] = v
        elif (
            isinstance(v, dict)
            and v
            and len(v) <= 12
            and all(isinstance(x, (int, float, str, bool)) for x in v.values())
        ):
            out[k] = v
    return out


def _hub_id(name: str) -> str | None:
    """`name` if it looks like a hub repo id (org/model, not a local path)."""
    if name.count("/") == 1 and not name.startswith((".", "/", "~")) and not Path(name).exists():
        return name
    return None


def _base_model(cfg: RunConfig) -> tuple[str, str]:
    """(the base model's name for the card, the from_pretrained arguments that load it with plain transformers).

    Prospect's short name for the bundled SmolLM2 is the hub model; a GGUF base loads with `gguf_file`.
    """
    name, gguf = cfg.model.name, cfg.model.gguf_file
    if name.lower() in SMOLLM2_NAMES and not gguf:
        return SMOLLM2_HUB_ID, f'"{SMOLLM2_HUB_ID}"'
    if name.lower().endswith(".gguf"):
        path = Path(name)
        return name, f'"{path.parent}", gguf_file="{path.name}"'
    if gguf:
        return name, f'"{name}", gguf_file="{gguf}"'
    return name, f'"{name}"'


def model_card(
    cfg: RunConfig, results: dict[str, Any], report: dict[str, Any], *, merged: bool, adapter: bool, run_name: str
) -> str:
    """README.md text for an export (no secrets: the config is redacted, reports pass `redact_secrets`)."""
    results, report = redact_secrets(results), redact_secrets(report)
    base, load_base = _base_model(cfg)
    library = "peft" if adapter and not merged else "transformers"
    front = ["---", f"library_name: {library}"]
    if _hub_id(base):
        front.append(f"base_model: {base}")
    front += ["tags:", "- prospect", f"- {cfg.method.name}", "- preference-alignment", "---", ""]
    kind = (
        "a LoRA adapter"
        if adapter and not merged
        else "a full model (LoRA adapter merged into the base weights)"
        if adapter
        else "a fully fine-tuned model"
    )
    lines = front + [
        f"# {run_name}",
        "",
        f"This is {kind} trained with [Prospect](https://pypi.org/project/prospect/) "
        f"by **{cfg.method.name}** on top of the base model **{base}**.",
        "",
        "## Method",
        "",
        _method_summary(cfg),
        "",
        "| setting | value |",
        "|---|---|",
    ]
    lines += [f"| {k} | {_fmt(v)} |" for k, v in _method_settings(cfg).items()]
    lines += _training_lines(results) + _data_lines(cfg, report) + _usage_lines(adapter and not merged, load_base)
    lines += ["", "## Resolved config", "", "Secrets (tokens, keys, passwords) are redacted.", "", "```yaml"]
    lines += [cfg.to_yaml().rstrip(), "```", ""]
    return "\n".join(lines)


def _training_lines(results: dict[str, Any]) -> list[str]:
    lines = ["", "## Training", ""]
    for k in ("global_step", "wall_time_s", "z0_estimator"):
        if results.get(k) is not None:
            lines.append(f"- {k}: {_fmt(results[k])}")
    if results.get("kto_weights"):
        lines.append(f"- kto_weights: {_fmt(results['kto_weights'])}")
    metrics = {
        k: v
        for k, v in (results.get("metrics") or {}).items()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and not k.endswith(_BOOKKEEPING)
    }
    if metrics:
        lines += ["", "## Final metrics", "", "| metric | value |", "|---|---|"]
        lines += [f"| {k} | {_fmt(v)} |" for k, v in sorted(metrics.items())]
    return lines


def _data_lines(cfg: RunConfig, report: dict[str, Any]) -> list[str]:
    summary = _data_summary(report)
    if not summary:
        return []
    files = f"Training data: `{cfg.data.train_file}`"
    if cfg.data.validation_file:
        files += f", validation: `{cfg.data.validation_file}`"
    lines = ["", "## Data", "", files, "", "| item | value |", "|---|---|"]
    return lines + [f"| {k} | {_fmt(v)} |" for k, v in summary.items()]


def _usage_lines(adapter: bool, load_base: str) -> list[str]:
    lines = ["", "## Usage", "", "```python"]
    if adapter:
        lines += [
            "from peft import PeftModel",
            "from transformers import AutoModelForCausalLM, AutoTokenizer",
            "",
            f"base = AutoModelForCausalLM.from_pretrained({load_base})",
            'model = PeftModel.from_pretrained(base, "path/to/this/directory")',
            'tokenizer = AutoTokenizer.from_pretrained("path/to/this/directory")',
        ]
    else:
        lines += [
            "from transformers import AutoModelForCausalLM, AutoTokenizer",
            "",
            'model = AutoModelForCausalLM.from_pretrained("path/to/this/directory")',
            'tokenizer = AutoTokenizer.from_pretrained("path/to/this/directory")',
        ]
    return lines + ["```"]
