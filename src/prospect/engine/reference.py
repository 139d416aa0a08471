"""Reference log-probs computed once, under `torch.inference_mode`, sorted by length, cached.

The cache key covers what defines the reference: the base weights (not a disabled
adapter, so runs that differ only in LoRA settings share it), the tokenizer and chat
template, the tokenized data and the length settings. An entry whose stored key or
checksum does not match is refused (with a message) and recomputed, never used.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from prospect.data.collate import layout
from prospect.engine.logprobs import sequence_logps
from prospect.io import atomic_path, cache_root

log = logging.getLogger("prospect")


def dataset_fingerprint(ds: Any, columns: list[str]) -> str:
    h = hashlib.sha256()
    for row in ds.select_columns(columns):
        h.update(json.dumps([row[c] for c in columns]).encode())
    return h.hexdigest()[:20]


def _digest(t: torch.Tensor) -> str:
    return hashlib.sha256(t.contiguous().numpy().tobytes()).hexdigest()[:16]


def reference_cache_key(*, base_fingerprint: str, tokenizer_key: str, data_key: str, settings: dict[str, Any]) -> str:
    src = json.dumps(
        {"base": base_fingerprint, "tok": tokenizer_key, "data": data_key, "settings": settings}, sort_keys=True
    )
    return hashlib.sha256(src.encode()).hexdigest()[:24]


def compute_reference_logps(
    ref_model: Any,
    sequences: list[tuple[list[int], list[int]]],
    *,
    pad_id: int,
    batch_tokens: int = 4096,
    desc: str = "Reference log-probs",
) -> torch.Tensor:
    """Summed completion log-probs of each (prompt_ids, completion_ids) under `ref_model`.

    Sequences are sorted by length and batched up to ~`batch_tokens` padded tokens, so
    almost no padding is computed.
    """
    from tqdm.auto import tqdm

    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i][0]) + len(sequences[i][1]))
    out = torch.zeros(len(sequences), dtype=torch.float32)
    device = next(ref_model.parameters()).device
    batches, cur, width = [], [], 0
    for i in order:
        L = len(sequences[i][0]) + len(sequences[i][1])
        if cur and max(width, L) * (len(cur) + 1) > batch_tokens:
            batches.append(cur)
            cur, width = [], 0
        cur.append(i)
        width = max(width, L)
    if cur:
        batches.append(cur)
    was_training = ref_model.training
    ref_model.eval()
    with torch.inference_mode():
        for idx in tqdm(batches, desc=desc, unit="batch"):
            b = layout([sequences[i][0] for i in idx], [sequences[i][1] for i in idx], pad_id=pad_id)
            b = {k: v.to(device) for k, v in b.items()}
            logps, _ = sequence_logps(ref_model, b, "", len(idx))
            out[torch.tensor(idx)] = logps.float().cpu()
    ref_model.train(was_training)
    return out


def cached_reference_logps(
    key: str,
    compute: Callable[[], dict[str, torch.Tensor]],
    cache_dir: Path | None = None,
) -> tuple[dict[str, torch.Tensor], str]:
    """Load reference log-probs for `key`, or compute and store them. Returns (tensors, 'hit'|'miss')."""
    path = (cache_dir or cache_root() / "reference") / f"{key}.safetensors"
    if path.exists():
        try:
            tensors = load_file(str(path))
            meta = json.loads(path.with_suffix(".json").read_text())
            if meta.get("key") == key and all(meta["digest"][k] == _digest(v) for k, v in tensors.items()):
                return tensors, "hit"
            log.warning("reference cache %s does not match this run (key or checksum differs); recomputing", path)
        except Exception as e:  # damaged entry: recompute, never trust
            log.warning("reference cache %s unreadable (%s); recomputing", path, e)
    tensors = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp))
    with atomic_path(path.with_suffix(".json")) as tmp:
        tmp.write_text(json.dumps({"key": key, "digest": {k: _digest(v) for k, v in tensors.items()}}))
    return tensors, "miss"
