"""The reference model, and its log-probs computed once, under `torch.inference_mode`, cached.

`reference_context` is the one place that says what computes reference log-probs: a separate
frozen model, or the policy itself with its LoRA adapter disabled (no second copy).

`attach_reference` adds the precomputed columns to the tokenized datasets; sequences are
sorted by length so almost no padding is computed, and a pair's prompt runs once for its
chosen and rejected completions where the model allows it (`engine.prefix`). The cache key covers what defines the reference: the base weights (not a disabled
adapter, so runs that differ only in LoRA settings share it), the tokenizer and chat
template, the tokenized data, the length settings and, for a quantized base, its quantization
settings (bits, type, compute dtype, ...). An entry whose stored key or
checksum does not match is refused (with a message) and recomputed, never used.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from prospect.data.layout import mismatched_pairs, mismatched_partners
from prospect.data.tokenize import TokenizeSettings, tokenizer_fingerprint
from prospect.engine.dist import gathered_parameters, on_main_then_shared
from prospect.engine.model import base_weights_fingerprint, model_quantization
from prospect.engine.prefix import supports_prompt_sharing
from prospect.engine.reference_logps import compute_paired_reference_logps, compute_reference_logps
from prospect.io import atomic_path, cache_root

ReferenceContext = Callable[[], AbstractContextManager[Any]]

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


def reference_context(policy: Any, ref_model: Any = None) -> ReferenceContext | None:
    """A zero-argument callable whose context yields the module that computes reference log-probs.

    `ref_model` when there is one (full fine-tuning, `reference_model_name`); else the policy
    with its adapter disabled (LoRA: the base model, no second copy); None when neither exists
    (a full model with no reference: callers treat log pi_ref as 0 or refuse).
    """
    if ref_model is not None:
        return lambda: contextlib.nullcontext(ref_model)
    if hasattr(policy, "disable_adapter"):

        @contextlib.contextmanager
        def adapter_disabled() -> Any:
            with policy.disable_adapter():
                yield policy

        return adapter_disabled
    return None


def _sequences(ds: Any, kind: str) -> list[tuple[list[int], list[int]]]:
    """(prompt, completion) token ids of every row; pairs give chosen rows then rejected rows."""
    if kind == "unpaired":
        return [(r["prompt_ids"], r["completion_ids"]) for r in ds]
    return [(r["prompt_ids"], r["chosen_ids"]) for r in ds] + [(r["prompt_ids"], r["rejected_ids"]) for r in ds]


def _compute_split(
    ref_src: Any,
    ds: Any,
    kind: str,
    split: str,
    pad_id: int,
    max_length: int,
    batches: list[list[int]] | None,
) -> dict[str, torch.Tensor]:
    """The reference columns of one split (run inside the reference context).

    batches: the loader's batches of an unpaired split whose mismatched pairs are known now; each
    row then also gets `ref_kl_logps`, its prompt run once for its own and its mismatched completion.
    """
    desc, desc_pairs = f"Reference log-probs ({split})", f"Reference log-probs ({split}, with mismatched pairs)"
    shared = supports_prompt_sharing(ref_src)
    if kind == "paired" and shared:  # prompts once for chosen and rejected
        pairs = [(r["prompt_ids"], r["chosen_ids"], r["rejected_ids"]) for r in ds]
        chosen, rejected = compute_paired_reference_logps(ref_src, pairs, pad_id=pad_id, desc=desc)
        return {"ref_chosen_logps": chosen, "ref_rejected_logps": rejected}
    seqs = _sequences(ds, kind)
    if batches is not None and kind == "unpaired":
        kl = mismatched_pairs([p for p, _ in seqs], [c for _, c in seqs], batches, max_length)
        if shared:  # one prompt run for the row's completion and its mismatched one
            triples = [(p, c, k) for (p, c), (_, k) in zip(seqs, kl)]
            main, mismatched = compute_paired_reference_logps(ref_src, triples, pad_id=pad_id, desc=desc_pairs)
        else:
            main = compute_reference_logps(ref_src, seqs, pad_id=pad_id, desc=desc)
            mismatched = compute_reference_logps(ref_src, kl, pad_id=pad_id, desc=desc_pairs)
        return {"ref_logps": main, "ref_kl_logps": mismatched}
    logps = compute_reference_logps(ref_src, seqs, pad_id=pad_id, desc=desc)
    if kind == "paired":
        return {"ref_chosen_logps": logps[: len(ds)], "ref_rejected_logps": logps[len(ds) :]}
    return {"ref_logps": logps}


def attach_reference(
    context: ReferenceContext,
    tokenizer: Any,
    settings: TokenizeSettings,
    datasets: dict[str, Any],
    kind: str,
    *,
    pair_batches: dict[str, list[list[int]]] | None = None,
) -> tuple[dict[str, Any], dict[str, str]]:
    """Add precomputed reference log-prob columns to each dataset of `datasets` ({split: ds}), cached on disk.

    Returns the datasets with ref_logps (unpaired) or ref_chosen_logps / ref_rejected_logps
    (paired), and {split: "hit" | "miss"}. `pair_batches` ({split: batches}, unpaired splits): the
    batches, in loader order, that split's loader will make (`engine.order.planned_train_batches`
    for training, the eval order cut into batches for validation). Those rows also get
    `ref_kl_logps`, the reference log-prob of the mismatched pair the collator gives each row in
    those batches, and `kl_row` / `kl_partner` (the row's index, its partner's), with which the
    collator checks that the batches it gets are the planned ones.
    """
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    tok_key = tokenizer_fingerprint(tokenizer)
    pair_batches = pair_batches or {}
    out, notes = {}, {}
    # Several processes: the main process computes (or reads the cache) and shares the columns;
    # under ZeRO-3 every process first gathers the full weights (dist.gathered_parameters).
    with context() as ref_src, gathered_parameters(ref_src):
        base_fp = base_weights_fingerprint(ref_src)
        quant = model_quantization(ref_src)  # a 4-bit reference is not a float one
        for split, ds in datasets.items():
            batches = pair_batches.get(split) if kind == "unpaired" else None
            cols = (
                ["prompt_ids", "completion_ids"] if kind == "unpaired" else ["prompt_ids", "chosen_ids", "rejected_ids"]
            )
            extra: dict[str, Any] = {}
            if batches is not None:  # the mismatched pairs depend on the batches
                extra["pair_batches"] = hashlib.sha256(json.dumps(batches).encode()).hexdigest()[:20]
            if quant is not None:  # only then: unquantized runs keep their cache keys
                extra["quantization"] = quant
            key = reference_cache_key(
                base_fingerprint=base_fp,
                tokenizer_key=tok_key,
                data_key=dataset_fingerprint(ds, cols),
                settings={**asdict(settings), **extra},
            )

            def compute(ds: Any = ds, split: str = split, batches: Any = batches) -> dict[str, torch.Tensor]:
                return _compute_split(ref_src, ds, kind, split, pad_id, settings.max_length, batches)

            tensors, notes[split] = on_main_then_shared(
                lambda key=key, compute=compute: cached_reference_logps(key, compute)
            )
            for name, t in tensors.items():
                ds = ds.add_column(name, t.tolist())
            if batches is not None:
                ds = ds.add_column("kl_row", list(range(len(ds))))
                ds = ds.add_column("kl_partner", mismatched_partners(batches, len(ds)))
            out[split] = ds
    return out, notes
