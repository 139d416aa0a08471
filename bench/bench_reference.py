"""The reference precompute's layout: each row's completions padded to a common width (the training
batch's layout, which the precompute used until 2026-12-03) against one suffix row per completion,
sorted and cut into runs (`engine.reference_logps.compute_prompt_shared_logps`). Both run each prompt
once, on the same rows, interleaved in one process; prints seconds, tokens computed (padded) over
real tokens, and the largest log-prob difference. Usage:

    HF_HUB_OFFLINE=1 python bench/bench_reference.py [--profiles short,mixed] [--rows 16,128] [--methods kto,dpo]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).parent))
from profiles import BATCH, PROFILES, make_data, smol_model_dir  # noqa: E402
from prospect.data.layout import shared_layout  # noqa: E402
from prospect.engine.prefix import prompt_states, suffix_logps  # noqa: E402
from prospect.engine.reference_logps import compute_paired_reference_logps, inference  # noqa: E402


def row_padded_logps(model: Any, triples: list, batch_tokens: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """The earlier layout: rows sorted by prefix + 2 x suffix width, batches of <= batch_tokens padded
    tokens, both completions of a row padded to the batch's longest suffix (`data.layout.shared_layout`)."""
    widths = [(max(len(p) - 1, 0), 1 + max(len(a), len(b))) for p, a, b in triples]
    order = sorted(range(len(triples)), key=lambda i: sum(widths[i]))
    batches, cur, top = [], [], (0, 0)
    for i in order:
        wide = (max(top[0], widths[i][0]), max(top[1], widths[i][1])) if cur else widths[i]
        if cur and (len(cur) + 1) * (wide[0] + 2 * wide[1]) > batch_tokens:
            batches.append(cur)
            cur, wide = [], widths[i]
        cur.append(i)
        top = wide
    batches.append(cur)
    first, second = torch.zeros(len(triples)), torch.zeros(len(triples))
    with inference(model):
        for idx in batches:
            b = shared_layout(
                [triples[i][0] for i in idx], [[triples[i][1] for i in idx], [triples[i][2] for i in idx]], pad_id=0
            )
            lp, _ = suffix_logps(model, b, prompt_states(model, b), "", 2 * len(idx), repeats=2)
            first[torch.tensor(idx)], second[torch.tensor(idx)] = lp[: len(idx)], lp[len(idx) :]
    return first, second


def triples_of(data: dict) -> list[tuple[list[int], list[int], list[int]]]:
    """DPO: (prompt, chosen, rejected). KTO: (prompt, completion, mismatched completion), rows taken in
    order in batches of 8, row i paired with the completion of row i - 1 of its batch (TRL's rotation)."""
    rows = data["rows"]
    if data["method"] == "dpo":
        return [(r["prompt_ids"], r["chosen_ids"], r["rejected_ids"]) for r in rows]
    out = []
    for i, r in enumerate(rows):
        start = i - i % BATCH
        size = min(BATCH, len(rows) - start)
        partner = start + (i - start - 1) % size
        out.append((r["prompt_ids"], r["completion_ids"], rows[partner]["completion_ids"]))
    return out


def counted(model: Any) -> tuple[dict, Any]:
    """A counter of forward calls and input tokens (padding included) on `model`, and its hook handle."""
    count = {"calls": 0, "tokens": 0}

    def hook(_module: Any, args: tuple, kwargs: dict) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        count["calls"] += 1
        count["tokens"] += int(ids.numel())

    return count, model.register_forward_pre_hook(hook, with_kwargs=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--profiles", default="short,mixed,long_completion,long_prompt,imbalanced")
    ap.add_argument("--rows", default="16,128")
    ap.add_argument("--methods", default="kto")
    ap.add_argument("--out", default="")
    a = ap.parse_args()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    smol = smol_model_dir()
    tok = AutoTokenizer.from_pretrained(smol)
    model = AutoModelForCausalLM.from_pretrained(smol, dtype=torch.float32)
    warm = triples_of(make_data(tok, "kto", BATCH, seed=1, profile=PROFILES["short"]))
    row_padded_logps(model, warm), compute_paired_reference_logps(model, warm, pad_id=0)  # first calls allocate
    results = []
    for method in a.methods.split(","):
        for name in a.profiles.split(","):
            for n in (int(x) for x in a.rows.split(",")):
                triples = triples_of(make_data(tok, method, n, seed=0, profile=PROFILES[name]))
                real = sum(len(p) + len(x) + len(y) for p, x, y in triples)
                row = {"method": method, "profile": name, "rows": n, "real_tokens": real}
                outs = {}
                for layout_name, fn in (("rows_padded", row_padded_logps), ("suffix_runs", None)):
                    count, handle = counted(model)
                    t0 = time.perf_counter()
                    if fn is None:
                        outs[layout_name] = compute_paired_reference_logps(model, triples, pad_id=0)
                    else:
                        outs[layout_name] = fn(model, triples)
                    row[layout_name] = {
                        "seconds": round(time.perf_counter() - t0, 2),
                        "calls": count["calls"],
                        "tokens_over_real": round(count["tokens"] / real, 3),
                    }
                    handle.remove()
                row["speedup"] = round(row["rows_padded"]["seconds"] / row["suffix_runs"]["seconds"], 2)
                row["max_abs_logp_diff"] = max(
                    float((x - y).abs().max()) for x, y in zip(outs["rows_padded"], outs["suffix_runs"])
                )
                print(json.dumps(row), flush=True)
                results.append(row)
    if a.out:
        Path(a.out).write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
