"""Secret redaction: what `config.yaml`, `prospect config show`, logs and error messages never show."""

from __future__ import annotations

import re
from typing import Any

REDACTED = "***REDACTED***"

_SECRET_SUBSTRINGS = ("password", "passwd", "secret", "api_key", "apikey")
_TOKEN_WORD = re.compile(r"(?:^|[^a-z])token(?:$|[^a-z])")  # token, hf_token, auth-token; not max_new_tokens
_SECRET_VALUES = (
    re.compile(r"hf_[A-Za-z0-9]{20,}"),  # Hugging Face access token
    re.compile(r"sk-[A-Za-z0-9_-]{20,}"),  # OpenAI-style key
    re.compile(r"\b(?:local-|wandb_v1_)[0-9A-Za-z_]{32,}"),  # W&B keys with a prefix
)
_BARE_KEY = re.compile(r"^[0-9a-f]{40}$")  # W&B key - or a git commit id, see `redact_value`
_URL_PASSWORD = re.compile(r"(://[^/\s:@]+:)[^/\s@]+@")


def _is_secret_key(key: Any) -> bool:
    if not isinstance(key, str):
        return False
    snake = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", key).lower()
    return any(s in snake for s in _SECRET_SUBSTRINGS) or bool(_TOKEN_WORD.search(snake))


def redact_value(key: Any, value: str) -> str:
    for pattern in _SECRET_VALUES:
        value = pattern.sub(REDACTED, value)
    value = _URL_PASSWORD.sub(r"\1" + REDACTED + "@", value)
    # 40 hex characters is a W&B key, or a commit id under `revision`, which must survive.
    if _BARE_KEY.match(value) and not (isinstance(key, str) and ("revision" in key.lower() or "commit" in key.lower())):
        return REDACTED
    return value


def redact_secrets(obj: Any, key: Any = None) -> Any:
    """A copy of `obj` with secrets replaced by REDACTED: every non-empty value under a key
    naming a secret (token, password, secret, api_key; `max_new_tokens` is not one), and
    strings that look like a Hugging Face / W&B / API key or a URL password anywhere."""
    if _is_secret_key(key) and obj is not None and not isinstance(obj, bool) and obj != "":
        return REDACTED
    if isinstance(obj, dict):
        return {k: redact_secrets(v, k) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [redact_secrets(v, key) for v in obj]
    if isinstance(obj, str):
        return redact_value(key, obj)
    return obj
