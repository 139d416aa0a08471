"""Tiny models and the tiny tokenizer for tests and benchmarks (offline, seconds to build).

`make_tiny_model_dir(path)` writes a randomly initialised (seeded) Llama model of a few
hundred thousand parameters plus the shipped tiny tokenizer into `path`, loadable with
``AutoModelForCausalLM.from_pretrained(path)`` / ``AutoTokenizer.from_pretrained(path)``.
`tiny_model_dir()` builds it once per settings and reuses it (across tests and processes).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from functools import cache
from pathlib import Path
from typing import Any

from prospect.io import cache_root

TINY_TOKENIZER_DIR = Path(__file__).resolve().parent / "resources" / "tiny_tokenizer"


def tiny_tokenizer_dir() -> Path:
    """Directory of the shipped tiny byte-level BPE tokenizer (800 tokens, English + Arabic)."""
    return TINY_TOKENIZER_DIR


def load_tiny_tokenizer() -> Any:
    """The shipped tiny tokenizer, loaded with AutoTokenizer (pad, bos, eos and a ChatML template set)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(TINY_TOKENIZER_DIR))


def make_tiny_model_dir(
    path: str | os.PathLike[str],
    vocab_from: str | os.PathLike[str] | None = None,
    seed: int = 0,
    layers: int = 2,
    hidden: int = 64,
    heads: int = 4,
    kv_heads: int | None = None,
    intermediate: int | None = None,
    max_position_embeddings: int = 512,
    tie_word_embeddings: bool = False,
    dtype: str = "float32",
) -> Path:
    """Build a tiny LlamaForCausalLM (random init under `seed`) and save it with its tokenizer.

    `vocab_from` is the tokenizer directory (default: the shipped tiny tokenizer); the model's
    vocabulary size and bos/eos/pad ids follow it. `kv_heads` defaults to `heads` (no GQA),
    `intermediate` to 2 * `hidden`. Weights are written as safetensors. Returns the path.
    """
    import torch
    from transformers import AutoTokenizer, GenerationConfig, LlamaConfig, LlamaForCausalLM

    out = Path(path)
    tokenizer = AutoTokenizer.from_pretrained(str(vocab_from or TINY_TOKENIZER_DIR))
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=intermediate or 2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads or heads,
        max_position_embeddings=max_position_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=tie_word_embeddings,
    )
    torch_dtype = getattr(torch, dtype)
    # fork_rng: seeding here must not move the caller's global random stream.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config).to(torch_dtype)
    model.generation_config = GenerationConfig.from_model_config(config)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)  # safetensors
    tokenizer.save_pretrained(out)
    return out


def _default_root() -> Path:
    if os.environ.get("PROSPECT_CACHE"):
        return cache_root() / "testing"
    return Path(tempfile.gettempdir()) / f"prospect-testing-{os.getuid() if hasattr(os, 'getuid') else 'user'}"


def _settings_key(settings: dict[str, Any], vocab_from: Path) -> str:
    import transformers

    h = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    h.update(transformers.__version__.encode())
    # The tokenizer's files define the vocabulary: a rebuilt tokenizer gives a new model dir.
    for f in sorted(vocab_from.glob("*.json")):
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


@cache
def _cached_tiny_model_dir(root: str, items: tuple[tuple[str, Any], ...]) -> Path:
    settings = dict(items)
    vocab_from = Path(settings.pop("vocab_from", None) or TINY_TOKENIZER_DIR)
    target = Path(root) / f"tiny-llama-{_settings_key(settings, vocab_from)}"
    if (target / "model.safetensors").is_file() and (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        make_tiny_model_dir(tmp, vocab_from=vocab_from, **settings)
        try:
            os.replace(tmp, target)  # atomic: a concurrent builder's finished copy wins
        except OSError:
            if not (target / "model.safetensors").is_file():
                shutil.rmtree(target, ignore_errors=True)
                os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def tiny_model_dir(root: str | os.PathLike[str] | None = None, **settings: Any) -> Path:
    """A tiny model directory built by `make_tiny_model_dir(**settings)`, cached and reused.

    Cached under `root` (default ``$PROSPECT_CACHE/testing`` or a per-user temp dir), keyed
    by the settings, the tokenizer files and the transformers version; built atomically.
    Callers must not modify the returned directory (copy it first).
    """
    base = str(Path(root) if root is not None else _default_root())
    if "vocab_from" in settings and settings["vocab_from"] is not None:
        settings["vocab_from"] = str(Path(settings["vocab_from"]).resolve())
    return _cached_tiny_model_dir(base, tuple(sorted(settings.items())))
