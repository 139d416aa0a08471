"""`prospect export RUN_DIR [--merge] -o DIR`: a run's model, ready to share.

- adapter run, no --merge: the LoRA adapter (adapter_config.json + weights) and the
  tokenizer; load with `PeftModel.from_pretrained(base_model, DIR)`;
- adapter run, --merge: base weights with the adapter merged in (`merge_and_unload`),
  saved as a full model (safetensors) with the tokenizer; load with
  `AutoModelForCausalLM.from_pretrained(DIR)`;
- full fine-tuning run: the full model and tokenizer (--merge changes nothing).

Every export carries a README.md model card (base model, method and its settings, final
metrics, a summary of the data report, the resolved config with secrets redacted) and
prospect_export.json (what was exported from where). The directory is built under a
temporary name and renamed into place; an existing DIR is replaced only if it is empty or
an earlier Prospect export.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from prospect.config.schema import RunConfig
from prospect.errors import ProspectError
from prospect.io import replace_directory

log = logging.getLogger("prospect")

MARKER = "prospect_export.json"
# Trainer files in final/ that are not part of the model (training_args.bin is a pickle).
_SKIP = {"training_args.bin"}
# Trainer figures about the machine, not the model: left out of the card's metrics.
_BOOKKEEPING = ("_runtime", "_per_second", "total_flos", "epoch")

METHOD_SUMMARY = {
    "kto": "KTO (Ethayarajh et al. 2024): desirable loss lambda_D (1 - sigma(beta (r - z0))), undesirable "
    "lambda_U (1 - sigma(beta (z0 - r))), with r = log pi(y|x) - log pi_ref(y|x) and z0 the reference point.",
    "dpo": "DPO: -log sigma(beta (r(x, y_w) - r(x, y_l))).",
    "ipo": "IPO: (h - 1/(2 beta))^2 on length-averaged log-ratios.",
    "factual_dpo": "Factual-DPO++: -log sigma(beta h - (h_l - h_w) delta), h the DPO log-ratio margin and "
    "h_w, h_l the factuality indicators of chosen and rejected.",
    "dpo_kto": "DPO + KTO hybrid: L_dpo + kto_weight * L_kto (chosen as desirable, rejected as undesirable).",
}


def _method_summary(cfg: RunConfig) -> str:
    loss_type = cfg.method_section.loss_type
    if cfg.method.name == "dpo" and loss_type != "sigmoid":
        return (
            f"DPO family with loss_type {loss_type} (TRL 1.16's formula; see Prospect's docs/methods.md), "
            "on r = log pi(y|x) - log pi_ref(y|x) of chosen and rejected completions."
        )
    if cfg.method.name == "kto" and loss_type != "kto":
        return (
            f"KTO family with loss_type {loss_type} (see Prospect's docs/methods.md), on "
            "r = log pi(y|x) - log pi_ref(y|x) and the reference point z0."
        )
    return METHOD_SUMMARY.get(cfg.method.name, cfg.method.name)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (OSError, json.JSONDecodeError):
        return {}


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, (dict, list)):
        return json.dumps(v, ensure_ascii=False, default=str)
    return str(v)


def _method_settings(cfg: RunConfig) -> dict[str, Any]:
    sec = cfg.method_section
    out: dict[str, Any] = {
        "method": cfg.method.name,
        "beta": sec.beta,
        "loss_type": sec.loss_type,
        "reference_free": sec.reference_free,
    }
    if cfg.method.name == "factual_dpo":
        out["delta"] = cfg.method.delta
    if cfg.method.name == "dpo_kto":
        out["kto_weight"] = cfg.method.kto_weight
    if cfg.method.name == "kto":
        out.update(
            desirable_weight=cfg.kto.desirable_weight,
            undesirable_weight=cfg.kto.undesirable_weight,
            reference_point=cfg.kto.reference_point,
        )
        if cfg.kto.loss_type == "prospect":
            k = cfg.kto
            out.update(
                kto_alpha=k.kto_alpha,
                kto_beta_s=k.kto_beta_s,
                kto_gamma=k.kto_gamma,
                kto_lambda=k.kto_lambda,
                use_weighting=k.use_weighting,
                weighting_temperature=k.weighting_temperature,
            )
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
    from prospect.engine.model import SMOLLM2_HUB_ID, SMOLLM2_NAMES

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
    from prospect.config.loader import redact_secrets

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
    lines += ["", "## Training", ""]
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
    summary = _data_summary(report)
    if summary:
        lines += [
            "",
            "## Data",
            "",
            f"Training data: `{cfg.data.train_file}`"
            + (f", validation: `{cfg.data.validation_file}`" if cfg.data.validation_file else ""),
            "",
            "| item | value |",
            "|---|---|",
        ]
        lines += [f"| {k} | {_fmt(v)} |" for k, v in summary.items()]
    lines += ["", "## Usage", "", "```python"]
    if adapter and not merged:
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
    lines += [
        "```",
        "",
        "## Resolved config",
        "",
        "Secrets (tokens, keys, passwords) are redacted.",
        "",
        "```yaml",
        cfg.to_yaml().rstrip(),
        "```",
        "",
    ]
    return "\n".join(lines)


def _prepare_target(output: Path) -> None:
    if not output.exists():
        return
    if not output.is_dir():
        raise ProspectError(f"{output}: exists and is not a directory")
    if any(output.iterdir()) and not (output / MARKER).is_file():
        raise ProspectError(
            f"{output}: exists and is not empty (and not an earlier Prospect export); choose another output directory"
        )


def export_run(run_dir: str | Path, output: str | Path, merge: bool = False) -> Path:
    """Export the run in `run_dir` to `output` (adapter, merged model or full model + tokenizer + card)."""
    from prospect.config.loader import load_saved_config
    from prospect.io import atomic_write_json, atomic_write_text

    run_dir, output = Path(run_dir).resolve(), Path(output).resolve()
    final = run_dir / "final"
    if not (run_dir / "config.yaml").is_file():
        raise ProspectError(f"{run_dir}: not a run directory (no config.yaml)")
    if not final.is_dir():
        raise ProspectError(f"{run_dir}: no final/ model (the run has not finished); train it to the end first")
    if output == final or final in output.parents:
        raise ProspectError(f"{output}: choose an output directory outside the run's final/ model")
    _prepare_target(output)
    cfg = load_saved_config(run_dir / "config.yaml")
    adapter = (final / "adapter_config.json").is_file()
    if merge and not adapter:
        log.info("%s holds a full model; --merge has nothing to merge", final)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{output.name}.tmp-", dir=output.parent))
    try:
        if adapter and merge:
            _merge_into(cfg, final, tmp)
        else:
            for f in final.iterdir():
                if f.is_file() and f.name not in _SKIP:
                    shutil.copy2(f, tmp / f.name)
        results = _read_json(run_dir / "results.json")
        report = _read_json(run_dir / "data_report.json")
        atomic_write_text(
            tmp / "README.md",
            model_card(cfg, results, report, merged=merge and adapter, adapter=adapter, run_name=run_dir.name),
        )
        atomic_write_json(
            tmp / MARKER,
            {
                "run": run_dir.name,
                "run_dir": str(run_dir),
                "method": cfg.method.name,
                "base_model": cfg.model.name,
                "adapter": adapter and not merge,
                "merged": adapter and merge,
                "exported_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            },
        )
        replace_directory(tmp, output)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return output


def _merge_into(cfg: RunConfig, adapter_dir: Path, out: Path) -> None:
    """Load the base, apply the adapter, merge_and_unload, save model + tokenizer to `out`."""
    from peft import PeftModel

    from prospect.engine.model import check_adapter_weights, load_causal_lm

    check_adapter_weights(adapter_dir, cfg.model.use_safetensors)
    init = {**(cfg.method_section.model_init_kwargs or {}), **(cfg.model.model_init_kwargs or {})}
    base = load_causal_lm(cfg.model.name, cfg.model, cfg.model.gguf_file, init)
    merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    merged.save_pretrained(str(out))
    # The tokenizer the run trained with was saved beside the adapter: copy its files as they are.
    for f in adapter_dir.iterdir():
        if f.is_file() and f.name not in _SKIP and not f.name.startswith("adapter_") and f.name != "README.md":
            shutil.copy2(f, out / f.name)
