"""GGUF conversion into a plain, trainable safetensors model directory, and `materialize_model_source`.

GGUF conversion. transformers dequantizes GGUF weights to ordinary float tensors but marks
the model quantized, and then `Trainer` refuses to train it and `save_pretrained` to save
it. `convert_gguf` therefore loads a GGUF once, rebuilds a plain model from its config,
loads the dequantized state dict into it and saves model (safetensors) and tokenizer (with
its chat template) to ``<cache>/models/<stem>-<hash>``, where ``<cache>`` is
``$PROSPECT_CACHE`` or ``~/.cache/prospect`` and ``<hash>`` covers the GGUF file's bytes.
The directory is built under a temporary name and renamed into place, so a killed
conversion never leaves a directory that a later run would trust. Later runs load the
converted directory directly (about 1 s instead of about 30 s).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from prospect.engine.model.sources import _first_line, resolve_model_source
from prospect.errors import ModelLoadError
from prospect.io import MANIFEST, cache_root, file_sha256, manifest_intact, write_manifest

logger = logging.getLogger(__name__)

# Bump when the layout of a converted directory changes: old conversions are then redone.
# The checksums live in the io manifest (`checksums.json`); version-2 directories (checksums in the
# marker) are still read, so the version, hence the cache key, did not change.
CONVERSION_VERSION = 2
CONVERSION_MARKER = "prospect_conversion.json"


def _safe_stem(name: str) -> str:
    stem = "".join(c if c.isalnum() or c in "-_." else "-" for c in Path(name).stem)
    return stem.strip("-.")[:80] or "model"


def _conversion_intact(target: Path) -> bool:
    """Whether every file of the conversion is there with its recorded sha256 (about 0.5 s for 135M
    parameters): the `io` checksum manifest (`io.manifest_intact`). Conversions written before the
    manifest (CONVERSION_VERSION 2, ``files`` inside the marker) are still read: every file the
    marker lists must match. A marker with neither counts as damaged."""
    if (target / MANIFEST).is_file():
        return manifest_intact(target)
    try:  # the older format: {"files": {name: sha256}} in the marker
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
    A finished directory holds `CONVERSION_MARKER` and the checksum manifest of every file; it is
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
        }
        (tmp / CONVERSION_MARKER).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
        write_manifest(tmp)  # last: the sha256 of every file, the marker included
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
