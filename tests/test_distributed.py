"""Data-parallel training on CPU (gloo): 2 processes x batch b train like 1 process x batch 2b; z0 is averaged."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
import torch

from helpers import learnable_unpaired, sgd_training, write_config, write_jsonl
from prospect.cli import main
from prospect.io import read_jsonl


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _z0_worker(rank: int, port: int, out_dir: str) -> None:
    import torch.distributed as dist

    from prospect.engine.dist import distributed_mean
    from prospect.losses.reference_point import build_reference_point

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        est = build_reference_point("batch_mismatch", reduce=distributed_mean)
        # rank 0: mismatched log-ratios 1, 2 (mean 1.5); rank 1: 3, 6 (mean 4.5) -> z0 = 3
        pol = torch.tensor([[1.0, 2.0], [3.0, 6.0]][rank])
        z0 = est.estimate(pol, torch.zeros(2))
        # rank 0 mean -2, rank 1 mean +1: averaged first (-0.5), then clamped -> 0 (clamping first would give 0.5)
        neg = est.estimate(torch.tensor([[-2.0], [1.0]][rank]), torch.zeros(1))
        with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as fh:
            json.dump({"z0": float(z0), "neg": float(neg)}, fh)
    finally:
        dist.destroy_process_group()


def test_z0_is_averaged_across_processes_before_the_clamp(tmp_path):
    import torch.multiprocessing as mp

    # fork: the workers inherit the imports (CPU only, no threads of ours started yet)
    mp.start_processes(_z0_worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=True, start_method="fork")
    for rank in (0, 1):
        got = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert got["z0"] == pytest.approx(3.0) and got["neg"] == 0.0


def _stop_worker(rank: int, port: int, out_dir: str) -> None:
    import torch.distributed as dist

    from prospect.engine.signals import StopOnSignalCallback, StopRequest

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        request = StopRequest()
        if rank == 1:  # the signal reached one process only
            request.signum = 15
        control = type("C", (), {"should_save": False, "should_training_stop": False})()
        StopOnSignalCallback(request).on_step_end(
            type("A", (), {"device": "cpu"})(), type("S", (), {"global_step": 7})(), control
        )
        with open(os.path.join(out_dir, f"stop{rank}.json"), "w") as fh:
            json.dump(
                {
                    "save": control.should_save,
                    "stop": control.should_training_stop,
                    "at": request.stopped_at_step,
                    "signum": request.signum,  # rank 0 learns which signal (it exits 128 + 15 too)
                },
                fh,
            )
    finally:
        dist.destroy_process_group()


def test_a_signal_to_one_process_stops_every_process_after_the_same_step(tmp_path):
    import torch.multiprocessing as mp

    mp.start_processes(_stop_worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=True, start_method="fork")
    for rank in (0, 1):
        got = json.loads((tmp_path / f"stop{rank}.json").read_text())
        assert got == {"save": True, "stop": True, "at": 7, "signum": 15}


def _config(tmp_path, name, batch, reference_point):
    data = tmp_path / "train.jsonl"
    if not data.exists():
        write_jsonl(data, learnable_unpaired(8, seed=3))
    return write_config(
        tmp_path / f"{name}.yaml",
        data={"train_file": str(data)},
        kto={"beta": 0.5, "precompute_ref_log_probs": False, "reference_point": reference_point},
        training=sgd_training(name, tmp_path / "runs", batch),
    )


def _outputs(run):
    from safetensors.torch import load_file

    rows = read_jsonl(run / "metrics.jsonl")
    return (
        [r for r in rows if "loss" in r],
        load_file(str(run / "final" / "adapter_model.safetensors")),
        json.loads((run / "results.json").read_text()),
        rows,
    )


def test_two_processes_train_like_one_process_with_twice_the_batch(tmp_path):
    """1 process x batch 4 (in-batch z0, TRL's estimate) == 2 processes x batch 2 (z0 over both processes' rows).

    Sequential order: process 0 takes rows 0-1, process 1 rows 2-3 of each step, the rows one process
    takes as its batch of 4; the window pairs (x_g, y_{g-1}) run over both processes' rows in that order.
    Plain SGD without clipping: equal weights after 3 steps mean equal (averaged) gradients.
    """
    assert main(["train", str(_config(tmp_path, "one", 4, "batch_mismatch")), "--quiet"]) == 0
    cfg = _config(tmp_path, "two", 2, "window_mismatch")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    env.pop("ACCELERATE_USE_CPU", None)  # prospect sets use_cpu itself when there is no GPU
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "accelerate.commands.launch",
            "--multi_gpu",
            "--num_processes",
            "2",
            "--num_machines",
            "1",
            "--mixed_precision",
            "no",
            "--dynamo_backend",
            "no",
            "--main_process_port",
            str(_free_port()),
            "-m",
            "prospect",
            "train",
            str(cfg),
            "--quiet",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]

    one, w_one, res_one, _ = _outputs(tmp_path / "runs" / "one")
    two, w_two, res_two, all_rows = _outputs(tmp_path / "runs" / "two")
    # files from the main process only: one metrics row per logged step, no duplicates
    assert [r["step"] for r in two] == [1, 2, 3]
    assert sum(1 for r in all_rows if "train_loss" in r) == 1
    assert res_two["z0_estimator"] == "window_mismatch" and res_two["z0_rows_per_estimate"] == 4
    # it really ran data-parallel: each step covered 4 rows of 16 (epoch 0.25 per step), like batch 4
    assert two[0]["epoch"] == pytest.approx(0.25) == one[0]["epoch"]
    assert any(r["kl"] > 1e-3 for r in one[1:])  # z0 is not trivially 0 after the first update
    for a, b in zip(one, two):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5, abs=1e-7)
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-4, abs=1e-7)
        assert b["kl"] == pytest.approx(a["kl"], rel=1e-4, abs=1e-6)  # rank 0 logs the averaged z0
    for k in w_one:
        torch.testing.assert_close(w_two[k], w_one[k], rtol=1e-4, atol=1e-6)


def test_example_accelerate_configs_load():
    from pathlib import Path

    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.utils import DistributedType

    root = Path(__file__).resolve().parents[1] / "examples" / "accelerate"
    expected = {
        "ddp.yaml": DistributedType.MULTI_GPU,
        "cpu_ddp.yaml": DistributedType.MULTI_GPU,
        "multinode_ddp.yaml": DistributedType.MULTI_GPU,
        "fsdp.yaml": DistributedType.FSDP,
        "deepspeed_zero2.yaml": DistributedType.DEEPSPEED,
        "deepspeed_zero3.yaml": DistributedType.DEEPSPEED,
        "fsdp_cpu.yaml": DistributedType.FSDP,
        "deepspeed_zero2_cpu.yaml": DistributedType.DEEPSPEED,
        "deepspeed_zero3_cpu.yaml": DistributedType.DEEPSPEED,
    }
    for name, kind in expected.items():
        cfg = load_config_from_file(str(root / name))
        assert cfg.distributed_type == kind, name
    assert load_config_from_file(str(root / "deepspeed_zero3.yaml")).deepspeed_config["zero_stage"] == 3
    assert load_config_from_file(str(root / "fsdp.yaml")).fsdp_config["fsdp_version"] == 2
    assert load_config_from_file(str(root / "multinode_ddp.yaml")).num_machines == 2


def test_gpu_configs_differ_from_their_cpu_twins_only_in_what_a_gpu_needs():
    from pathlib import Path

    import yaml

    root = Path(__file__).resolve().parents[1] / "examples" / "accelerate"
    gpu_only = {"num_processes", "gpu_ids", "mixed_precision"}
    for name in ("fsdp", "deepspeed_zero2", "deepspeed_zero3"):
        cpu = yaml.safe_load((root / f"{name}_cpu.yaml").read_text())
        gpu = yaml.safe_load((root / f"{name}.yaml").read_text())
        differ = {k for k in cpu.keys() | gpu.keys() if cpu.get(k) != gpu.get(k)}
        assert differ <= gpu_only, (name, differ)
        assert cpu["num_processes"] == 2 and cpu["use_cpu"] is False and gpu["gpu_ids"] == "all"
