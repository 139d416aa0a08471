"""bitsandbytes quantization of a QLoRA base (Dettmers et al. 2023, "QLoRA", arXiv:2305.14314).

``optimization.use_quantization: true`` (seed alias ``load_in_4bit: true``) loads the base
weights of every linear layer except the output head as bitsandbytes blocks:

- 4 bit (default): NF4 (4-bit NormalFloat, blocks of 64 weights with one absmax each) with
  double quantization (the absmax constants themselves quantized to 8 bit, blocks of 256);
  a weight is used as ``W = dequant(nf4, absmax)``, in the compute dtype, at each forward;
- 8 bit (``quantization_bits: 8``): LLM.int8 (row-wise absmax int8, outliers in float16).

The compute dtype follows the config: ``optimization.bf16`` -> bfloat16, ``optimization.fp16``
-> float16, else ``model.torch_dtype`` (``auto`` -> float32). The LoRA adapter stays float32
(`prepare_model_for_kbit_training`), the base is frozen, and the reference is the same
quantized base with the adapter disabled. bitsandbytes 0.50 runs on CUDA and on CPU (its CPU
backend), so the same settings work on both; the model goes to the current CUDA device or to
the CPU. bitsandbytes is the optional extra ``qlora``.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from prospect.config.schema import RunConfig
from prospect.errors import ConfigError, ModelLoadError

INSTALL_HINT = 'pip install -e ".[qlora]"'


def bitsandbytes_missing() -> str | None:
    """None when bitsandbytes imports, else the reason (the import error's text)."""
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as exc:
        return str(exc) or "not installed"
    return None


def compute_dtype_name(cfg: RunConfig) -> str:
    """The dtype quantized layers compute in (module doc): bfloat16, float16 or float32."""
    opt = cfg.optimization
    if opt.bf16:
        return "bfloat16"
    if opt.fp16:
        return "float16"
    return "float32" if cfg.model.torch_dtype == "auto" else cfg.model.torch_dtype


def quantization_summary(cfg: RunConfig) -> dict[str, Any] | None:
    """What results.json records: ``{"bits": 4, "type": "nf4", ...}``, or None without quantization."""
    opt = cfg.optimization
    if not opt.use_quantization:
        return None
    if opt.quantization_bits == 8:
        return {"bits": 8, "type": "int8", "compute_dtype": "float16"}
    return {"bits": 4, "type": "nf4", "double_quant": True, "compute_dtype": compute_dtype_name(cfg)}


def model_quantization(model: Any) -> dict[str, Any] | None:
    """The quantization settings a loaded model carries (its ``config.quantization_config``), or None.

    Part of the reference cache key: a 4-bit reference is not a float32 one, and two 4-bit
    references with other compute dtypes or block settings are not the same either.
    """
    qc = getattr(getattr(model, "config", None), "quantization_config", None)
    if qc is None:
        return None
    settings = qc.to_dict() if hasattr(qc, "to_dict") else dict(qc)
    return {k: str(v) for k, v in sorted(settings.items()) if not k.startswith("_")}


def quantization_config(cfg: RunConfig) -> Any:
    """The BitsAndBytesConfig of the run's base model, or None when not asked for.

    Raises ConfigError without LoRA (a quantized base is frozen: only an adapter can train) and
    ModelLoadError naming the extra when bitsandbytes is missing (before any model loads).
    """
    opt = cfg.optimization
    if not opt.use_quantization:
        return None
    if not opt.use_lora:
        raise ConfigError(
            "optimization.use_quantization needs optimization.use_lora: a quantized base cannot be trained directly"
        )
    missing = bitsandbytes_missing()
    if missing is not None:
        raise ModelLoadError(
            f"optimization.use_quantization needs bitsandbytes, which is not installed ({missing}): {INSTALL_HINT}"
        )
    from transformers import BitsAndBytesConfig

    if opt.quantization_bits == 8:
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=getattr(torch, compute_dtype_name(cfg)),
    )


def keep_trainable_layout(model: Any) -> None:
    """Stop bitsandbytes from repacking 4-bit weights for CPU inference.

    On a CPU with AVX512-BF16, a `Linear4bit` called in eval mode without gradients rewrites
    its weight in place into a packed layout with bfloat16 block constants, and from then on
    always multiplies through `gemv_4bit`, which has no autograd kernel. In a run that computes
    the reference in eval mode (the precompute, evaluation, samples), the training passes after
    it would then get no gradient through the base layers (torch warns "an autograd kernel was
    not registered"), and the reference would be computed with other constants than the policy.
    Turning the repacking off keeps one layout, the one that trains.
    """
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False


def quantized_device_map() -> dict[str, Any]:
    """Where a quantized model is loaded (bitsandbytes places it at load time): all of it on this
    process's GPU (``LOCAL_RANK`` under a launcher, else the current CUDA device), else the CPU."""
    if not torch.cuda.is_available():
        return {"": "cpu"}
    rank = int(os.environ.get("LOCAL_RANK", "-1"))
    # one GPU visible per process (CUDA_VISIBLE_DEVICES set by the launcher): that one
    return {"": rank if 0 <= rank < torch.cuda.device_count() else torch.cuda.current_device()}
