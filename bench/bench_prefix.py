"""Micro-benchmark of the shared-prompt path: one KTO / DPO policy step's log-prob work, shared vs unshared,
interleaved in one process (so machine noise hits both). Usage:
    HF_HUB_OFFLINE=1 python bench/bench_prefix.py [--reps 3] [--model smol|tiny]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from profiles import BATCH, make_data, smol_model_dir, tiny_model_dir  # noqa: E402
from prospect.data.collate import PairedCollator, UnpairedCollator  # noqa: E402
from prospect.engine.logprobs import sequence_logps  # noqa: E402
from prospect.engine.prefix import prompt_states, suffix_logps  # noqa: E402
from train_workers import _load_lora_model  # noqa: E402


def kto_step(model, batch, shared):
    n = int(batch["n"])
    if shared:
        st = prompt_states(model, batch)
        lp, _ = suffix_logps(model, batch, st, "", n)
        with torch.no_grad():
            suffix_logps(model, batch, st, "kl_", n, detach=True)
    else:
        lp, _ = sequence_logps(model, batch, "", n)
        with torch.no_grad():
            sequence_logps(model, batch, "kl_", n)
    lp.sum().backward()


def dpo_step(model, batch, shared):
    n = int(batch["n"])
    if shared:
        lp, _ = suffix_logps(model, batch, prompt_states(model, batch), "", 2 * n, repeats=2)
    else:
        lp, _ = sequence_logps(model, batch, "", 2 * n)
    lp.sum().backward()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--model", default="smol")
    ap.add_argument("--methods", default="kto,dpo")
    a = ap.parse_args()
    import tempfile

    from transformers import AutoTokenizer

    smol = smol_model_dir()
    tok = AutoTokenizer.from_pretrained(smol)
    d = smol if a.model == "smol" else tiny_model_dir(tok, Path(tempfile.mkdtemp()))
    model = _load_lora_model(str(d), 0, "float32").train()
    for method in a.methods.split(","):
        rows = make_data(tok, method, BATCH, seed=7)["rows"]
        times = {False: [], True: []}
        for rep in range(a.reps + 1):
            for shared in (False, True):
                if method == "kto":
                    b = UnpairedCollator(pad_id=tok.pad_token_id, max_length=1024, share_prompt=shared)(rows)
                    f = kto_step
                else:
                    b = PairedCollator(pad_id=tok.pad_token_id, max_length=1024, share_prompt=shared)(rows)
                    f = dpo_step
                t0 = time.perf_counter()
                f(model, b, shared)
                model.zero_grad()
                if rep:
                    times[shared].append(time.perf_counter() - t0)
        u, s = sum(times[False]) / len(times[False]), sum(times[True]) / len(times[True])
        print(
            f"{method}: unshared {u:.2f}s shared {s:.2f}s  speedup x{u / s:.2f}  "
            f"(per rep unshared {[round(t, 2) for t in times[False]]}, shared {[round(t, 2) for t in times[True]]})",
            flush=True,
        )


if __name__ == "__main__":
    main()
