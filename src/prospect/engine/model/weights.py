"""The pickle policy for model and adapter weights, and adapter directories.

Pickle weights. transformers 5 prefers ``model.safetensors`` and, without
``use_safetensors=True``, falls back to ``pytorch_model.bin``, read with
``torch.load(weights_only=True)`` (a restricted unpickler; it has had bypasses, e.g.
CVE-2025-32434). Prospect is stricter: with ``model.use_safetensors`` unset (None) or True
only safetensors weights load, and a directory or hub repo holding only ``.bin`` weights
is refused with a message; ``use_safetensors: false`` (explicit) lets transformers choose,
``.bin`` included. ``trust_remote_code`` is passed from the config only (default False).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from prospect.engine.model.gguf import materialize_model_source
from prospect.errors import ModelLoadError

_SAFE_WEIGHTS = ("model.safetensors", "model.safetensors.index.json")
_PICKLE_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json")


def _adapter_base(path: str) -> str | None:
    """For a PEFT adapter directory (adapter_config.json, no config.json): its base model name."""
    p = Path(path)
    if p.is_dir() and (p / "adapter_config.json").is_file() and not (p / "config.json").is_file():
        base = json.loads((p / "adapter_config.json").read_text(encoding="utf-8")).get("base_model_name_or_path")
        if not base:
            raise ModelLoadError(f"adapter '{path}' does not name its base model (base_model_name_or_path)")
        return materialize_model_source(base)
    return None


def _safetensors_arg(name: str, path: str, use_safetensors: bool | None) -> bool | None:
    """The `use_safetensors` value for from_pretrained under Prospect's pickle policy (module doc)."""
    if use_safetensors is False:
        return None  # the user trusts this source: transformers prefers safetensors, may read .bin
    p = Path(path)
    if p.is_dir():
        has_safe = any((p / f).is_file() for f in _SAFE_WEIGHTS)
        has_pickle = any((p / f).is_file() for f in _PICKLE_WEIGHTS)
        if has_pickle and not has_safe:
            raise ModelLoadError(
                f"model '{name}' holds only pickle weights (pytorch_model.bin), which can run code when loaded; "
                "convert them to safetensors, or set model.use_safetensors: false if you trust this directory"
            )
    return True


def check_adapter_weights(adapter_dir: str | os.PathLike[str], use_safetensors: bool | None) -> None:
    """The pickle policy for PEFT adapters: an adapter stored only as `adapter_model.bin` is
    refused unless `model.use_safetensors: false` (PEFT would unpickle it)."""
    if use_safetensors is False:
        return
    d = Path(adapter_dir)
    if (d / "adapter_model.bin").is_file() and not (d / "adapter_model.safetensors").is_file():
        raise ModelLoadError(
            f"adapter '{d}' holds only pickle weights (adapter_model.bin), which can run code when loaded; "
            "convert them to safetensors, or set model.use_safetensors: false if you trust this directory"
        )
