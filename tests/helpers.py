"""Shared test helpers: tiny data files and run configs (the tiny model comes from prospect.testing)."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import yaml

from prospect.testing import tiny_model_dir

TOPICS = [
    "the sky",
    "water",
    "a cat",
    "the sun",
    "bread",
    "music",
    "a river",
    "the moon",
    "snow",
    "a tree",
    "coffee",
    "a book",
    "the sea",
    "a bird",
    "rain",
    "a city",
    "salt",
    "fire",
    "a song",
    "ice",
]


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def learnable_unpaired(n_prompts: int, seed: int, offset: int = 0) -> list[dict[str, Any]]:
    """A task a tiny model can learn: desirable answers are polite and on-topic, undesirable ones rude.

    Every prompt gets one desirable and one undesirable completion, so rewards can be compared per prompt.
    """
    rng = random.Random(seed)
    rows = []
    for i in range(n_prompts):
        topic = TOPICS[(i + offset) % len(TOPICS)]
        q = f"Tell me about {topic}, item {offset + i}."
        rows.append({"prompt": q, "completion": f"Gladly! Here is a kind answer about {topic}.", "label": True})
        rows.append({"prompt": q, "completion": "No. Go away, stupid question.", "label": False})
    rng.shuffle(rows)
    return rows


def write_config(path: Path, **sections: Any) -> Path:
    """A tiny-model run config; keyword sections are merged over the defaults."""
    cfg: dict[str, Any] = {
        "method": "kto",
        "model": {"name": str(tiny_model_dir())},
        "training": {
            "learning_rate": 1e-3,
            "batch_size": 4,
            "max_steps": 4,
            "logging_steps": 1,
            "save_steps": 2,
            "output_dir": str(path.parent / "runs"),
            "run_name": "t",
            "seed": 0,
        },
        "data": {},
        "kto": {"max_length": 96, "max_prompt_length": 48, "max_target_length": 48},
        "dpo": {"max_length": 96, "max_prompt_length": 48, "max_target_length": 48},
        "optimization": {"use_lora": True, "lora_rank": 4, "lora_dropout": 0.0},
    }
    for k, v in sections.items():
        if isinstance(v, dict) and isinstance(cfg.get(k), dict):
            cfg[k].update(v)
        else:
            cfg[k] = v
    path.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    return path


def sgd_training(name: str, runs_dir: Path, batch: int, **extra: Any) -> dict[str, Any]:
    """`training:` for equality tests: plain SGD without clipping, batches in file order, one log row a step.

    With these, two runs that see the same rows in the same summed gradients take the same
    steps, so their losses and adapters can be compared to float rounding.
    """
    return {
        "batch_size": batch,
        "max_steps": 3,
        "learning_rate": 0.5,
        "optim": "sgd",
        "max_grad_norm": 0.0,
        "shuffle": False,
        "logging_steps": 1,
        "save_steps": 100,
        "run_name": name,
        "output_dir": str(runs_dir),
        "seed": 0,
        **extra,
    }
