"""Generated benchmark data and the models it runs on (bench/bench_train.py, bench/bench_prefix.py).

Rows are random words that are one token each after a space, so lengths in tokens are what the
generator draws; token ids are made the way TRL 1.16 makes them (see `make_data`).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

BATCH = 8


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
    tok: Any, method: str, n_rows: int, seed: int, prompt_range=(32, 256), completion_range=(16, 256)
) -> dict:
    """Deterministic text rows of unequal lengths and their token ids, tokenized the way TRL 1.16 does
    (prompt alone; prompt+completion; the completion starts where the two diverge; EOS appended)."""
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
