"""Generation samples: greedy completions of a few prompts by the policy (and the reference).

Prompts are rendered and tokenized exactly as for training (`RecordTokenizer.encode`, chat
template and BOS rules included), so a sample shows what the trained model does on the
inputs it was trained on. Decoding is greedy (deterministic), `max_new_tokens` long.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager as ContextManager
from dataclasses import dataclass
from typing import Any

import torch

from prospect.data.records import PairedRecord, Text, UnpairedRecord
from prospect.data.text import plain


@dataclass
class SampleSpec:
    """One prompt to sample: its text, system prompt, the data's good completion (or None), source row."""

    prompt: Text
    system: str | None
    reference: str | None
    source_row: int | None


def pick_prompts(records: Sequence[PairedRecord | UnpairedRecord], n: int) -> list[SampleSpec]:
    """The first `n` distinct prompts: pairs give their chosen completion as the reference;
    unpaired data prefers prompts with a desirable completion (the reference), then the rest."""
    out: list[SampleSpec] = []
    seen: set[str] = set()
    ordered: list[PairedRecord | UnpairedRecord] = [r for r in records if isinstance(r, PairedRecord) or r.label]
    ordered += [r for r in records if isinstance(r, UnpairedRecord) and not r.label]
    for r in ordered:
        if len(out) >= n:
            break
        key = plain(r.prompt) + "\x00" + (r.system or "")
        if key in seen:
            continue
        seen.add(key)
        if isinstance(r, PairedRecord):
            ref: str | None = plain(r.chosen)
        else:
            ref = plain(r.completion) if r.label else None
        out.append(SampleSpec(prompt=r.prompt, system=r.system, reference=ref, source_row=r.source_row))
    return out


@torch.inference_mode()
def greedy(model: Any, prompt_ids: list[int], *, max_new_tokens: int, pad_id: int, eos_id: int | None) -> list[int]:
    """Greedy continuation of `prompt_ids` (new tokens only)."""
    device = next(model.parameters()).device
    ids = torch.tensor([prompt_ids], dtype=torch.long, device=device)
    out = model.generate(
        input_ids=ids,
        attention_mask=torch.ones_like(ids),
        max_new_tokens=max_new_tokens,
        do_sample=False,
        pad_token_id=pad_id,
        eos_token_id=eos_id,
    )
    return out[0, ids.shape[1] :].tolist()


def generate_samples(
    model: Any,
    tokenizer: Any,
    encode_prompt: Callable[[Text, str | None], list[int]],
    specs: Sequence[SampleSpec],
    *,
    max_new_tokens: int,
    reference_context: Callable[[], ContextManager[Any]] | None = None,
) -> list[dict[str, Any]]:
    """One dict per prompt: prompt, system, source_row, generation, reference (the data's
    completion) and, when `reference_context` is given (a context manager yielding the
    reference model), reference_generation."""
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    eos_id = tokenizer.eos_token_id
    rows = []
    for s in specs:
        ids = encode_prompt(s.prompt, s.system)
        new = greedy(model, ids, max_new_tokens=max_new_tokens, pad_id=pad_id, eos_id=eos_id)
        row: dict[str, Any] = {
            "prompt": plain(s.prompt),
            "system": s.system,
            "source_row": s.source_row,
            "generation": tokenizer.decode(new, skip_special_tokens=True),
            "reference": s.reference,
            "generated_tokens": len(new),
        }
        if reference_context is not None:
            with reference_context() as ref_model:
                ref_new = greedy(ref_model, ids, max_new_tokens=max_new_tokens, pad_id=pad_id, eos_id=eos_id)
            row["reference_generation"] = tokenizer.decode(ref_new, skip_special_tokens=True)
        rows.append(row)
    return rows


def null_context(model: Any) -> Callable[[], ContextManager[Any]]:
    """A reference context that simply yields `model` (a separate reference copy)."""
    return lambda: contextlib.nullcontext(model)
