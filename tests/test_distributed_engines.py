"""FSDP-2, DeepSpeed ZeRO-2 and ZeRO-3 in 2 CPU processes (gloo) train like one process with twice the batch.

Each launch is `accelerate launch --config_file examples/accelerate/<engine>_cpu.yaml -m prospect train
CONFIG` with the run YAML of the one-process run, batch_size halved (KTO: `window_mismatch`, whose z0 covers
the same 4 rows as one process's in-batch estimate); nothing engine-specific in it. The one-process run is the
oracle: plain SGD without clipping, rows in file order, so equal weights after a few steps mean equal
(averaged) gradients, and equal losses mean equal log-probs, reference log-probs and z0.

Largest differences seen on this machine (2 processes vs 1, float32, 3 steps; relative on losses, absolute
on adapter weights): FSDP-2 KTO 2.3e-6 / 6.7e-8, DPO 3.4e-6 / 1.9e-7; ZeRO-2 KTO 7.4e-7 / 6.7e-8, DPO
1.8e-6 / 6.0e-8; ZeRO-3 KTO 5.6e-7 / 3.0e-8, DPO 3.4e-6 / 8.9e-8 (gradients are summed in another order).
Asserted: rel 1e-5 on losses, 1e-4 on gradient norms and z0, rel 1e-4 / abs 1e-6 on the adapter. The
precomputed reference log-probs are bit-identical (computed once, on the main process).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from helpers import learnable_unpaired, sgd_training, write_config, write_jsonl
from prospect.cli import main
from prospect.io import read_jsonl

pytestmark = pytest.mark.slow
pytest.importorskip("deepspeed")

ROOT = Path(__file__).resolve().parents[1]
ENGINES = {  # accelerate config -> what results.json must say ran
    "fsdp": ("fsdp_cpu.yaml", "fsdp2"),
    "zero2": ("deepspeed_zero2_cpu.yaml", "deepspeed_zero2"),
    "zero3": ("deepspeed_zero3_cpu.yaml", "deepspeed_zero3"),
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _paired(n: int) -> list[dict[str, str]]:
    rows = []
    for r in learnable_unpaired(n, seed=5):
        if r["label"]:
            rows.append({"prompt": r["prompt"], "chosen": r["completion"], "rejected": "No. Go away, stupid question."})
    return rows


def _config(tmp: Path, method: str, name: str, batch: int, data_section: dict | None = None, **training) -> Path:
    data = tmp / f"{method}.jsonl"
    if not data.exists():
        # enough rows that 3 steps x 4 rows stay in the first epoch (no partial batch, no padding rows)
        write_jsonl(data, learnable_unpaired(8, seed=3) if method == "kto" else _paired(16))
    section = {"beta": 0.5, "precompute_ref_log_probs": True}
    if method == "kto":
        # 1 process x 4 rows: z0 over its 4 rows; 2 processes x 2 rows: z0 over the same 4 rows (the window)
        section["reference_point"] = "batch_mismatch" if name.startswith("one") else "window_mismatch"
    t = sgd_training(name, tmp / "runs", batch, **training)
    data_section = {"train_file": str(data), **(data_section or {})}
    return write_config(tmp / f"{name}.yaml", method=method, data=data_section, **{method: section}, training=t)


def _launch(accel: str, cfg: Path, cache: Path) -> subprocess.Popen:
    """Start the 2-process run; its stderr goes to a file next to the config (read with `_stderr`)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PROSPECT_CACHE": str(cache)}
    env.pop("ACCELERATE_USE_CPU", None)
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(ROOT / "examples" / "accelerate" / accel),
    ]
    cmd += ["--main_process_port", str(_free_port()), "-m", "prospect", "train", str(cfg), "--quiet"]
    log = open(cfg.with_suffix(".stderr"), "w")  # a file, not a pipe: nothing blocks while we poll
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=log, text=True)
    log.close()
    proc.log = cfg.with_suffix(".stderr")  # type: ignore[attr-defined]
    return proc


def _finish(proc: subprocess.Popen, timeout: float = 300) -> str:
    proc.wait(timeout=timeout)
    return proc.log.read_text()  # type: ignore[attr-defined]


def _run(accel: str, cfg: Path, cache: Path) -> tuple[int, str]:
    proc = _launch(accel, cfg, cache)
    err = _finish(proc)
    return proc.returncode, err


def _outputs(run: Path):
    from safetensors.torch import load_file

    rows = read_jsonl(run / "metrics.jsonl")
    return (
        [r for r in rows if "loss" in r],
        load_file(str(run / "final" / "adapter_model.safetensors")),
        json.loads((run / "results.json").read_text()),
        rows,
    )


def _reference_cache(cache: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    out: dict[str, torch.Tensor] = {}
    for f in sorted((cache / "reference").glob("*.safetensors")):
        for k, v in load_file(str(f)).items():
            out[f"{len(v)}:{k}"] = v  # train and validation splits differ in length
    return out


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    """The oracle runs: 1 process x batch 4, for KTO and DPO (computed once for every engine)."""
    out = {}
    for method in ("kto", "dpo"):
        tmp = tmp_path_factory.mktemp(f"one-{method}")
        cache = tmp / "cache"
        old = os.environ.get("PROSPECT_CACHE")
        os.environ["PROSPECT_CACHE"] = str(cache)
        try:
            assert main(["train", str(_config(tmp, method, "one", 4)), "--quiet"]) == 0
        finally:
            if old is None:
                os.environ.pop("PROSPECT_CACHE", None)
            else:
                os.environ["PROSPECT_CACHE"] = old
        out[method] = (_outputs(tmp / "runs" / "one"), _reference_cache(cache))
    return out


@pytest.mark.parametrize("method", ["kto", "dpo"])
@pytest.mark.parametrize("engine", list(ENGINES))
def test_two_processes_with_each_engine_train_like_one_process_with_twice_the_batch(
    tmp_path, one_process, engine, method
):
    accel, engine_name = ENGINES[engine]
    cache = tmp_path / "cache"
    rc, err = _run(accel, _config(tmp_path, method, "two", 2), cache)
    assert rc == 0, err[-4000:]
    (one, w_one, _, _), ref_one = one_process[method]
    two, w_two, res_two, all_rows = _outputs(tmp_path / "runs" / "two")

    assert res_two["distributed"] == {"engine": engine_name, "processes": 2}
    # files from the main process only: one metrics row per logged step, one summary, one cache entry per split
    assert [r["step"] for r in two] == [1, 2, 3]
    assert sum(1 for r in all_rows if "train_loss" in r) == 1
    assert two[0]["epoch"] == pytest.approx(one[0]["epoch"])  # each step covered 4 rows, as batch 4
    # reference log-probs precomputed once (the main process; the other receives them) and equal to 1 process
    assert res_two["reference"] == {"mode": "precomputed", "cache": {"train": "miss", "validation": "miss"}}
    assert err.count("Reference log-probs (train)") >= 1
    ref_two = _reference_cache(cache)
    # One process also precomputes the mismatched pairs of its planned batches (ref_kl_logps; KTO), each
    # prompt run once for the row's own completion and its mismatched one, so its ref_logps are float
    # rounding apart from the plain pass of several processes, which compute the mismatched pass in the step.
    assert ref_two.keys() == {k for k in ref_one if "ref_kl_logps" not in k}
    assert len(list((cache / "reference").glob("*.safetensors"))) == 2
    tolerance = 0 if method == "dpo" else 1e-5
    for k in ref_two:
        torch.testing.assert_close(ref_two[k], ref_one[k], rtol=tolerance, atol=tolerance)
    worst = {"loss": 0.0, "weight": 0.0}
    for a, b in zip(one, two):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5, abs=1e-7)
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-4, abs=1e-7)
        if method == "dpo":  # per-batch means over equal batches (KTO's desirable rows split unevenly)
            assert b["rewards/chosen"] == pytest.approx(a["rewards/chosen"], rel=1e-4, abs=1e-6)
        # KTO: rank 0 logs z0, the mean over both processes' rows (its on-the-fly reference under the engine)
        assert b["kl"] == pytest.approx(a["kl"], rel=1e-4, abs=1e-5)  # DPO step 1: ~0 (2e-6 from padding)
        worst["loss"] = max(worst["loss"], abs(b["loss"] - a["loss"]) / max(abs(a["loss"]), 1e-12))
    if method == "kto":
        assert any(r["kl"] > 1e-3 for r in one[1:])  # z0 is not trivially 0 after the first update
    for k in w_one:
        torch.testing.assert_close(w_two[k], w_one[k], rtol=1e-4, atol=1e-6)
        worst["weight"] = max(worst["weight"], float((w_two[k] - w_one[k]).abs().max()))
    print(f"\n{engine} {method}: max rel |d loss| {worst['loss']:.2e}, max |d adapter| {worst['weight']:.2e}")


def _children(pid: int) -> list:
    import psutil

    return [p for p in psutil.Process(pid).children(recursive=True) if "prospect" in " ".join(p.cmdline())]


def _wait_for(pred, proc: subprocess.Popen, timeout: float = 240.0) -> None:
    end = time.time() + timeout
    while time.time() < end:
        if pred():
            return
        assert proc.poll() is None, proc.log.read_text()[-4000:]  # type: ignore[attr-defined]
        time.sleep(0.1)
    raise AssertionError("timed out")


def _checkpoints(run: Path) -> list[int]:
    """Steps of the complete checkpoints (the Trainer writes trainer_state.json last)."""
    return [int(p.parent.name.split("-")[1]) for p in (run / "checkpoints").glob("checkpoint-*/trainer_state.json")]


def _logged_steps(run: Path) -> int:
    path = run / "metrics.jsonl"
    return max((r["step"] for r in read_jsonl(path) if "loss" in r), default=0) if path.exists() else 0


def test_fsdp_sigterm_to_one_process_stops_both_after_the_same_step_and_resume_after_a_kill_matches(
    tmp_path, monkeypatch
):
    """SIGTERM to rank 1 only: both processes checkpoint after the same step and exit 143. Then a resumed
    run killed with SIGKILL, resumed again, ends with the adapter of an uninterrupted one-process run."""
    cache = tmp_path / "cache"
    steps = 24
    # AdamW: torch's FSDP optimizer-state loading needs a state tensor (plain SGD has none)
    # no held-out rows: 16 training rows, whole batches in every epoch in 1 and in 2 processes
    every = {"validation_split_percentage": 0}
    opt = {"optim": "adamw_torch", "learning_rate": 0.01}
    cfg = _config(tmp_path, "kto", "two", 2, every, max_steps=steps, save_steps=4, **opt)
    run = tmp_path / "runs" / "two"
    proc = _launch("fsdp_cpu.yaml", cfg, cache)
    _wait_for(lambda: _logged_steps(run) >= 2, proc)
    workers = _children(proc.pid)
    rank1 = [p for p in workers if p.environ().get("RANK") == "1"]
    assert len(workers) == 2 and len(rank1) == 1
    rank1[0].send_signal(signal.SIGTERM)
    err = _finish(proc, timeout=120)
    assert proc.returncode != 0
    stops = sorted({line.split("at step ")[1].split()[0] for line in err.splitlines() if "stopped by SIGTERM" in line})
    assert len(stops) == 1 and err.count("stopped by SIGTERM") >= 2, err[-3000:]  # both processes, one step
    stopped = int(stops[0])
    assert stopped < steps and (run / "checkpoints" / f"checkpoint-{stopped}" / "trainer_state.json").exists()

    # resume; kill everything (SIGKILL) once a later checkpoint is complete; resume again to the end
    proc = _launch("fsdp_cpu.yaml", cfg, cache)
    _wait_for(lambda: max(_checkpoints(run), default=0) > stopped, proc)
    import psutil

    for p in [psutil.Process(proc.pid), *_children(proc.pid)]:  # torchrun starts each worker in its own session
        p.kill()
    proc.wait(timeout=60)
    rc, err = _run("fsdp_cpu.yaml", cfg, cache)
    assert rc == 0, err[-4000:]
    two, w_two, res, _ = _outputs(run)
    assert [r["step"] for r in two] == list(range(1, steps + 1))  # each step logged once across the 3 launches

    monkeypatch.setenv("PROSPECT_CACHE", str(tmp_path / "cache-one"))
    one_cfg = _config(tmp_path, "kto", "one", 4, every, max_steps=steps, save_steps=100, **opt)
    assert main(["train", str(one_cfg), "--quiet"]) == 0
    one, w_one, _, _ = _outputs(tmp_path / "runs" / "one")
    for a, b in zip(one, two):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-4, abs=1e-6)
    for k in w_one:
        torch.testing.assert_close(w_two[k], w_one[k], rtol=1e-4, atol=1e-5)
