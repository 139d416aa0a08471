"""`prospect export RUN_DIR [--merge] -o DIR`: a run's model, ready to share.

- adapter run, no --merge: the LoRA adapter (adapter_config.json + weights) and the
  tokenizer; load with `PeftModel.from_pretrained(base_model, DIR)`;
- adapter run, --merge: base weights with the adapter merged in (`merge_and_unload`),
  saved as a full model (safetensors) with the tokenizer; load with
  `AutoModelForCausalLM.from_pretrained(DIR)`;
- QLoRA run (``optimization.use_quantization``), --merge: a float model. The quantized base
  the adapter was trained on is loaded, dequantized (``W = dequant(nf4)`` in ``model.torch_dtype``),
  and the adapter merged into it; the result loads with plain transformers, no bitsandbytes.
  (Merging into the original float weights instead would add the adapter to weights it never
  saw.) Without --merge the adapter is exported as is; it applies to the quantized base;
- full fine-tuning run: the full model and tokenizer (--merge changes nothing).

Every export carries a README.md model card (`prospect.eval.card`) and prospect_export.json
(what was exported from where). The directory is built under a temporary name and renamed
into place; an existing DIR is replaced only if it is empty or an earlier Prospect export.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from prospect.config.loader import load_saved_config
from prospect.config.schema import RunConfig
from prospect.engine.model import check_adapter_weights, load_causal_lm, quantization_config, quantization_summary
from prospect.errors import ProspectError
from prospect.eval.card import model_card
from prospect.io import atomic_write_json, atomic_write_text, replace_directory

log = logging.getLogger("prospect")

MARKER = "prospect_export.json"
# Trainer files in final/ that are not part of the model (training_args.bin is a pickle).
_SKIP = {"training_args.bin"}


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (OSError, json.JSONDecodeError):
        return {}


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
                "quantization": quantization_summary(cfg),  # of the base the adapter was trained on
                "dequantized_base": bool(adapter and merge and cfg.optimization.use_quantization),
                "exported_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            },
        )
        replace_directory(tmp, output)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return output


def _merge_into(cfg: RunConfig, adapter_dir: Path, out: Path) -> None:
    """Load the base, apply the adapter, merge_and_unload, save model + tokenizer to `out`.

    A QLoRA run's base is loaded quantized as in training and dequantized first (module doc).
    """
    from peft import PeftModel

    check_adapter_weights(adapter_dir, cfg.model.use_safetensors)
    init = {**(cfg.method_section.model_init_kwargs or {}), **(cfg.model.model_init_kwargs or {})}
    quant = quantization_config(cfg)  # None unless the run trained over a quantized base
    base = load_causal_lm(cfg.model.name, cfg.model, cfg.model.gguf_file, init, quant)
    if quant is not None:
        summary = quantization_summary(cfg) or {}
        base = base.dequantize()  # the weights the adapter was trained against, as floats
        log.warning(
            "QLoRA run: the %s-bit %s base was dequantized to %s and the adapter merged into it; "
            "the export is a float model (loads without bitsandbytes)",
            summary.get("bits"),
            summary.get("type"),
            str(base.dtype).replace("torch.", ""),
        )
    merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    merged.save_pretrained(str(out))
    # The tokenizer the run trained with was saved beside the adapter: copy its files as they are.
    for f in adapter_dir.iterdir():
        if f.is_file() and f.name not in _SKIP and not f.name.startswith("adapter_") and f.name != "README.md":
            shutil.copy2(f, out / f.name)
