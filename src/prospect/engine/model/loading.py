"""Loading a run's models: one causal LM under the config's rules; policy (+ LoRA) and reference."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
from torch import nn

from prospect.config.schema import ModelConfig, RunConfig
from prospect.engine.model.gguf import materialize_model_source
from prospect.engine.model.quantization import keep_trainable_layout, quantization_config, quantized_device_map
from prospect.engine.model.sources import _first_line
from prospect.engine.model.tokenizer import load_tokenizer
from prospect.engine.model.weights import _adapter_base, _safetensors_arg, check_adapter_weights
from prospect.errors import ConfigError, ModelLoadError


def _dtype_arg(torch_dtype: str) -> Any:
    if torch_dtype == "auto":
        return "auto"
    dtype = getattr(torch, torch_dtype.replace("torch.", ""), None)
    if not isinstance(dtype, torch.dtype):
        raise ConfigError(f"model dtype '{torch_dtype}' is not a torch dtype (use float32, bfloat16, float16 or auto)")
    return dtype


def load_causal_lm(
    name: str,
    model_cfg: ModelConfig,
    gguf_file: str | None = None,
    init_kwargs: dict[str, Any] | None = None,
    quantization_config: Any = None,
) -> Any:
    """Load one causal LM under the config's dtype, attention, remote-code and safetensors rules.

    A PEFT adapter directory loads as its base with the adapter merged in.
    """
    from transformers import AutoModelForCausalLM

    path = materialize_model_source(
        name, gguf_file, revision=model_cfg.revision, trust_remote_code=model_cfg.trust_remote_code
    )
    adapter_dir = None
    base = _adapter_base(path)
    if base is not None:
        adapter_dir, path = path, base
        check_adapter_weights(adapter_dir, model_cfg.use_safetensors)  # before anything loads
    if Path(path).is_dir() and not (Path(path) / "config.json").is_file():
        raise ModelLoadError(
            f"model '{name}' could not be loaded: the directory has no config.json (is it a model directory?)"
        )
    kwargs: dict[str, Any] = {
        "dtype": _dtype_arg(model_cfg.torch_dtype),
        "trust_remote_code": model_cfg.trust_remote_code,
    }
    safetensors = _safetensors_arg(name, path, model_cfg.use_safetensors)
    if safetensors is not None:
        kwargs["use_safetensors"] = safetensors
    if model_cfg.attn_implementation:
        kwargs["attn_implementation"] = model_cfg.attn_implementation
    if model_cfg.revision and not Path(path).exists():
        kwargs["revision"] = model_cfg.revision
    if quantization_config is not None:
        kwargs["quantization_config"] = quantization_config
        kwargs["device_map"] = quantized_device_map()
    extra = dict(init_kwargs or {})
    if bool(extra.pop("trust_remote_code", model_cfg.trust_remote_code)) != model_cfg.trust_remote_code:
        # One switch decides whether repository code may run: model.trust_remote_code.
        raise ConfigError(
            "trust_remote_code in model_init_kwargs differs from model.trust_remote_code; set model.trust_remote_code only"
        )
    kwargs.update(extra)
    if "torch_dtype" in kwargs:  # seed configs use the transformers 4 name
        kwargs["dtype"] = kwargs.pop("torch_dtype")
    if isinstance(kwargs["dtype"], str):  # YAML gives "bfloat16"; transformers wants torch.bfloat16
        kwargs["dtype"] = _dtype_arg(kwargs["dtype"])
    try:
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        hint = ""
        if "trust_remote_code" in str(exc):
            hint = " (the model needs its own code: set model.trust_remote_code: true only if you trust it)"
        elif "safetensors" in str(exc) and kwargs.get("use_safetensors"):
            hint = " (Prospect loads only safetensors weights unless model.use_safetensors: false)"
        raise ModelLoadError(f"model '{name}' could not be loaded: {_first_line(exc)}{hint}") from exc
    if quantization_config is not None:
        keep_trainable_layout(model)
    if adapter_dir is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter_dir).merge_and_unload()
    return model


def disable_dropout(model: nn.Module) -> None:
    """Set every dropout probability to 0 (TRL's rule, plus attention-dropout floats).

    Called before LoRA wrapping, so the adapter's own `lora_dropout` stays as configured.
    """
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
            continue
        for attr in ("attention_dropout", "dropout"):
            value = getattr(module, attr, None)
            if isinstance(value, float) and value > 0:
                setattr(module, attr, 0.0)


def freeze(model: nn.Module) -> nn.Module:
    """Make `model` a frozen reference: no gradients, eval mode."""
    model.requires_grad_(False)
    model.eval()
    return model


def lora_config(cfg: RunConfig) -> Any:
    """peft LoraConfig from the optimization section (alpha defaults to 2 * rank)."""
    from peft import LoraConfig

    opt = cfg.optimization
    return LoraConfig(
        r=opt.lora_rank,
        lora_alpha=opt.lora_alpha if opt.lora_alpha is not None else 2 * opt.lora_rank,
        lora_dropout=opt.lora_dropout,
        target_modules=opt.lora_target_modules,
        task_type="CAUSAL_LM",
    )


def load_policy_and_reference(cfg: RunConfig, *, with_reference: bool = True) -> tuple[Any, Any | None, Any]:
    """Load ``(policy, reference or None, tokenizer)`` for a run.

    with_reference=False: the run reads no reference log-probs (a reference-free loss such as
    ORPO, SimPO or CPO, asked of the loss by the recipe), so no reference model is loaded.

    - LoRA (``optimization.use_lora``): the policy is a PeftModel; the reference is None
      (the engine disables the adapter to get reference log-probs) unless the method section
      names ``reference_model_name`` or sets ``force_use_ref_model``, which load a separate
      frozen model (the named one, or a copy of the base).
    - Full fine-tuning: the reference is a frozen deep copy of the policy as loaded, or the
      named reference model; None when ``reference_free`` or ``with_reference`` is False.
    - QLoRA (``use_quantization``): a 4-bit NF4 (or 8-bit) bitsandbytes base, on CUDA or CPU
      (`quantization`), plus prepare_model_for_kbit_training (float32 adapter; no checkpointing).
    - ``data.disable_dropout`` zeroes dropout in policy and reference (not LoRA's);
      gradient checkpointing is not enabled here: engine/checkpointing.py decides it after tokenization.
    """
    model_cfg = cfg.model
    sec = cfg.method_section
    opt = cfg.optimization
    tokenizer = load_tokenizer(model_cfg)
    quant = quantization_config(cfg)
    policy_kwargs = {**(sec.model_init_kwargs or {}), **(model_cfg.model_init_kwargs or {})}
    model = load_causal_lm(model_cfg.name, model_cfg, model_cfg.gguf_file, policy_kwargs, quant)
    _align_special_tokens(model, tokenizer)
    if cfg.data.disable_dropout:
        disable_dropout(model)

    def load_reference(copy_of: nn.Module | None) -> nn.Module:
        if sec.reference_model_name:
            ref = load_causal_lm(sec.reference_model_name, model_cfg, None, sec.ref_model_init_kwargs)
        elif copy_of is not None:
            ref = copy.deepcopy(copy_of)
        else:  # quantized base: reload rather than deep-copy bitsandbytes tensors
            ref = load_causal_lm(
                model_cfg.name, model_cfg, model_cfg.gguf_file, sec.ref_model_init_kwargs or policy_kwargs, quant
            )
        if cfg.data.disable_dropout:
            disable_dropout(ref)
        return freeze(ref)

    reference = None
    if with_reference and not sec.reference_free:
        wants_separate = bool(sec.reference_model_name or sec.force_use_ref_model)
        if not opt.use_lora or wants_separate:
            reference = load_reference(None if quant is not None else model)

    if quant is not None:
        from peft import prepare_model_for_kbit_training

        # checkpointing is decided after tokenization (engine/checkpointing.py)
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    if opt.use_lora:
        from peft import get_peft_model

        model = get_peft_model(model, lora_config(cfg))
    return model, reference, tokenizer


def _align_special_tokens(model: nn.Module, tokenizer: Any) -> None:
    # Generation and padding-aware code read pad_token_id from the model config.
    config = getattr(model, "config", None)
    if config is not None and getattr(config, "pad_token_id", None) is None and tokenizer.pad_token_id is not None:
        config.pad_token_id = tokenizer.pad_token_id
        gen = getattr(model, "generation_config", None)
        if gen is not None and gen.pad_token_id is None:
            gen.pad_token_id = tokenizer.pad_token_id
