"""bitsandbytes quantization settings of a QLoRA base."""

from __future__ import annotations

import importlib.util
import logging
from typing import Any

import torch

from prospect.config.schema import RunConfig
from prospect.errors import ConfigError, ModelLoadError


def _quantization_config(cfg: RunConfig) -> Any:
    """BitsAndBytesConfig for QLoRA on CUDA; None (with a warning) on CPU or when not asked for."""
    opt = cfg.optimization
    if not opt.use_quantization:
        return None
    if not torch.cuda.is_available():
        logging.warning(
            "optimization.use_quantization: %d-bit loading needs CUDA (bitsandbytes); loading the model unquantized",
            opt.quantization_bits,
        )
        return None
    if not opt.use_lora:
        raise ConfigError(
            "optimization.use_quantization needs optimization.use_lora: a quantized base cannot be trained directly"
        )
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ModelLoadError("optimization.use_quantization needs bitsandbytes: pip install bitsandbytes")
    from transformers import BitsAndBytesConfig

    if opt.quantization_bits == 8:
        return BitsAndBytesConfig(load_in_8bit=True)
    compute = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=compute
    )
