"""Tokenizer loading (pad token, padding side, chat template) under the config's rules."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prospect.config.schema import ModelConfig
from prospect.engine.model.gguf import materialize_model_source
from prospect.engine.model.sources import _first_line
from prospect.engine.model.weights import _adapter_base
from prospect.errors import ConfigError, ModelLoadError


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
