"""Trackers for real: a tiny run per tracker, the logged values read back from each store and
compared with the run's own metrics.jsonl (TensorBoard event files, W&B offline files, MLflow
local file store). No network: W&B runs offline (the engine's default), MLflow on a local store."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest
import yaml

from prospect.io import read_jsonl

PAIRS = [
    ("What is two plus two?", "Two plus two is four.", "It is five."),
    ("Name a primary colour.", "Red is a primary colour.", "Green, always."),
    ("What is the capital of France?", "Paris is the capital of France.", "Lyon."),
    ("Say hello politely.", "Hello, nice to meet you.", "Go away."),
]

TRACKER_ENV = (
    "WANDB_MODE",
    "WANDB_DIR",
    "WANDB_PROJECT",
    "WANDB_ENTITY",
    "WANDB_API_KEY",
    "MLFLOW_TRACKING_URI",
    "MLFLOW_EXPERIMENT_NAME",
    "MLFLOW_ALLOW_FILE_STORE",
    "TENSORBOARD_LOGGING_DIR",
)


def _needs(module: str) -> pytest.MarkDecorator:
    return pytest.mark.skipif(
        importlib.util.find_spec(module) is None, reason=f"{module} is not installed (pip install 'prospect[trackers]')"
    )


@pytest.fixture
def clean_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """No tracker variables from the outside; everything the run sets is undone afterwards."""
    from prospect.recipes.sweep.runner import scoped_environ

    for k in TRACKER_ENV:
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("PROSPECT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("WANDB_SILENT", "true")
    with scoped_environ():
        yield


def _config(tmp: Path, tracker: str, sweep: dict | None = None, **logging: object):
    from prospect.config.loader import loads_config
    from prospect.testing import tiny_model_dir

    data = tmp / "train.jsonl"
    data.write_text("".join(json.dumps({"prompt": p, "chosen": c, "rejected": r}) + "\n" for p, c, r in PAIRS))
    cfg = {
        "method": "dpo",
        "model": {"name": str(tiny_model_dir()), "max_length": 64},
        "training": {
            "learning_rate": 1e-3,
            "batch_size": 2,
            "max_steps": 2,
            "logging_steps": 1,
            "save_steps": 2,
            "output_dir": str(tmp / "runs"),
            "run_name": f"tiny_{tracker}",
            "seed": 0,
        },
        "data": {"train_file": str(data), "validation_split_percentage": 0},
        "dpo": {"max_length": 64, "max_prompt_length": 32, "max_target_length": 32},
        "optimization": {"use_lora": True, "lora_rank": 4, "lora_target_modules": ["q_proj", "v_proj"]},
        "logging": {"report_to": [tracker], **logging},
    }
    if sweep:
        cfg["sweep"] = sweep
        cfg["models"] = [{"id": cfg["model"]["name"], "short": "tiny"}]
        del cfg["training"]["run_name"]
    return loads_config(yaml.safe_dump(cfg, sort_keys=False), source="<test>")


def _losses(run_dir: Path) -> dict[int, float]:
    losses = {r["step"]: r["loss"] for r in read_jsonl(run_dir / "metrics.jsonl") if "loss" in r}
    assert sorted(losses) == [1, 2]
    return losses


def _train(tmp: Path, tracker: str, **logging: object):
    from prospect.recipes import train

    result = train(_config(tmp, tracker, **logging), quiet=True)
    return result.run_dir, _losses(result.run_dir)


@_needs("tensorboard")
def test_tensorboard_event_files_hold_the_logged_losses(tmp_path: Path, clean_env: None) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir, losses = _train(tmp_path, "tensorboard")
    event_files = list(run_dir.rglob("events.out.tfevents.*"))
    assert event_files, f"no TensorBoard event file under {run_dir}"
    acc = EventAccumulator(str(event_files[0].parent))
    acc.Reload()
    logged = {e.step: e.value for e in acc.Scalars("train/loss")}
    assert logged == pytest.approx(losses, rel=1e-5)


def read_wandb_records(path: Path):
    """Records of a W&B offline run file (*.wandb): a ':W&B' header, then LevelDB-log style 32 KiB
    blocks of chunks (crc32 u32, length u16, type u8: 1 full, 2 first, 3 middle, 4 last), each
    record a serialized wandb_internal_pb2.Record. Written here so the test does not depend on
    wandb's private reader (gone from wandb 0.2x)."""
    import struct

    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B", "not a W&B run file"
    pos, block, pending = 7, 32768, b""
    while pos + 7 <= len(data):
        left = block - pos % block
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if left < 7 or (length == 0 and kind == 0):  # block trailer / padding
            pos += left
            continue
        chunk = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            rec = wandb_internal_pb2.Record()
            rec.ParseFromString(pending)
            yield rec
            pending = b""


@_needs("wandb")
def test_wandb_offline_runs_of_a_sweep_hold_their_own_losses(tmp_path: Path, clean_env: None) -> None:
    """Two sweep runs -> two offline W&B runs, each in its own run directory, each holding its own
    losses, named <run_prefix>_<run name> (seed 004); nothing needs the network."""
    from prospect.recipes.sweep import run_sweep

    cfg = _config(
        tmp_path, "wandb", sweep={"dpo.beta": [0.1, 0.5]}, wandb_project="prospect-test", run_prefix="FactualDPO"
    )
    assert run_sweep(cfg, quiet=True) == 0
    assert "WANDB_MODE" not in os.environ  # the engine's offline default did not leak past the sweep
    sweep_dir = tmp_path / "runs" / "dpo_beta"
    for name in ("tiny_dpo_beta0.1", "tiny_dpo_beta0.5"):
        run_dir = sweep_dir / name
        losses = _losses(run_dir)
        runs = list((run_dir / "wandb").glob("offline-run-*"))
        assert len(runs) == 1, runs
        history: dict[int, float] = {}
        names = []
        for rec in read_wandb_records(next(runs[0].glob("*.wandb"))):
            kind = rec.WhichOneof("record_type")
            if kind == "run":
                names.append(rec.run.display_name)
            elif kind == "history":
                items = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in rec.history.item}
                if "train/loss" in items:
                    history[int(items["train/global_step"])] = items["train/loss"]
        assert history == pytest.approx(losses, rel=1e-5)
        assert names and names[0] == f"FactualDPO_{name}"


@_needs("mlflow")
def test_mlflow_local_store_holds_the_logged_losses(tmp_path: Path, clean_env: None) -> None:
    from mlflow.tracking import MlflowClient

    run_dir, losses = _train(tmp_path, "mlflow")
    store = run_dir.parent / "mlruns"  # the engine's default: a local store beside the runs
    assert store.is_dir()
    import mlflow

    if mlflow.active_run() is not None:
        mlflow.end_run()
    client = MlflowClient(tracking_uri=store.as_uri())
    runs = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
    assert len(runs) == 1
    history = {m.step: m.value for m in client.get_metric_history(runs[0].info.run_id, "loss")}
    assert history == pytest.approx(losses, rel=1e-5)
