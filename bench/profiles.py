"""Generated benchmark data, its named length profiles, and the models it runs on.

Rows are random words that are one token each after a space, so a text of n words is n tokens
(a completion gets EOS on top); token ids are made the way TRL 1.16 makes them (`make_data`).

Length profiles (issue 17), in tokens, drawn uniformly per row:

    short            prompts 10-60,   completions 10-60
    mixed            prompts 32-256,  completions 16-256   (the profile bench/ always had)
    long_completion  prompts 32-64,   completions 256-448
    long_prompt      prompts 256-448, completions 16-64
    imbalanced       rows as `short`, except one row in every 8 (row i with i % 8 == 3) with a
                     prompt of 192-256 and a completion of 384-512: every batch TRL takes in order
                     holds one very long row among seven short ones

DPO rows draw chosen and rejected each from the completion range.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BATCH = 8
Range = tuple[int, int]


@dataclass(frozen=True)
class Profile:
    """Token-length ranges of a generated data set; `long_every` > 0 mixes in long rows (imbalanced)."""

    name: str
    prompt: Range
    completion: Range
    long_every: int = 0
    long_prompt: Range = (0, 0)
    long_completion: Range = (0, 0)

    def ranges(self, i: int) -> tuple[Range, Range]:
        """(prompt range, completion range) of row i."""
        if self.long_every and i % self.long_every == 3:
            return self.long_prompt, self.long_completion
        return self.prompt, self.completion


PROFILES: dict[str, Profile] = {
    p.name: p
    for p in (
        Profile("short", (10, 60), (10, 60)),
        Profile("mixed", (32, 256), (16, 256)),
        Profile("long_completion", (32, 64), (256, 448)),
        Profile("long_prompt", (256, 448), (16, 64)),
        Profile("imbalanced", (10, 60), (10, 60), long_every=BATCH, long_prompt=(192, 256), long_completion=(384, 512)),
    )
}


# --------------------------------------------------------------------------- data and models
def _word_pool(tok: Any, size: int = 3000) -> list[str]:
    """Words that are exactly one token after a space, so text lengths in tokens are controlled."""
    words = []
    for piece, _ in sorted(tok.get_vocab().items(), key=lambda kv: kv[1]):
        if piece.startswith("Ġ") and piece[1:].isalpha() and piece[1:].islower() and len(piece) > 3:
            w = piece[1:]
            if len(tok(" " + w, add_special_tokens=False)["input_ids"]) == 1:
                words.append(w)
        if len(words) >= size:
            break
    return words


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def make_data(
    tok: Any,
    method: str,
    n_rows: int,
    seed: int,
    prompt_range: Range = (32, 256),
    completion_range: Range = (16, 256),
    profile: Profile | None = None,
) -> dict:
    """Deterministic text rows of unequal lengths and their token ids, tokenized the way TRL 1.16 does
    (prompt alone; prompt+completion; the completion starts where the two diverge; EOS appended).

    The lengths come from `profile` when given, else from the two ranges (the `mixed` profile)."""
    profile = profile or Profile("custom", prompt_range, completion_range)
    rng = random.Random(seed)
    pool = _word_pool(tok)
    eos = tok.eos_token

    def text(lo: int, hi: int) -> str:
        return "".join(" " + rng.choice(pool) for _ in range(rng.randint(lo, hi)))

    def ids(prompt: str, completion: str) -> tuple[list[int], list[int]]:
        p = tok(prompt)["input_ids"]
        full = tok(prompt + completion)["input_ids"]
        k = _common_prefix(p, full)
        return p[:k], full[k:]

    rows = []
    for i in range(n_rows):
        prompt_range, completion_range = profile.ranges(i)
        prompt = text(*prompt_range)
        if method == "kto":
            completion = text(*completion_range) + eos
            p, c = ids(prompt, completion)
            rows.append(
                {"prompt": prompt, "completion": completion, "label": i % 2 == 0, "prompt_ids": p, "completion_ids": c}
            )
        else:
            chosen, rejected = text(*completion_range) + eos, text(*completion_range) + eos
            p, c = ids(prompt, chosen)
            p2, r = ids(prompt, rejected)
            k = min(len(p), len(p2))
            rows.append(
                {
                    "prompt": prompt,
                    "chosen": chosen,
                    "rejected": rejected,
                    "prompt_ids": p[:k],
                    "chosen_ids": (p + c)[k:],
                    "rejected_ids": (p2 + r)[k:],
                }
            )
    return {"method": method, "rows": rows}


def tiny_model_dir(tok: Any, root: Path) -> Path:
    """A 4-layer Llama (hidden 128) with the real tokenizer's vocabulary, built from a config (random weights)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    d = root / "tiny-llama"
    if not (d / "config.json").exists():
        torch.manual_seed(0)
        cfg = LlamaConfig(
            vocab_size=len(tok),
            hidden_size=128,
            intermediate_size=256,
            num_hidden_layers=4,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=2048,
            tie_word_embeddings=True,
            pad_token_id=tok.pad_token_id,
            eos_token_id=tok.eos_token_id,
        )
        LlamaForCausalLM(cfg).save_pretrained(d)
        tok.save_pretrained(d)
    return d


def smol_model_dir() -> Path:
    from prospect.engine.model import materialize_model_source

    return Path(materialize_model_source("smollm2-135m-instruct"))
