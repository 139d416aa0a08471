"""bench/gpu_check.py keeps working before anyone has a GPU: its --dry-run runs every case on CPU."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "gpu_check.py"


def _run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=600)


def test_wheels_lists_the_packages_and_one_pip_download_line():
    proc = _run("--wheels")
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [line for line in proc.stdout.splitlines() if "pip download" in line]
    assert len(lines) == 1
    for req in ("trl==1.16.0", "datasets==5.2.0", "bitsandbytes==0.50.2"):
        assert req in lines[0]


def test_dry_run_runs_prospect_trl_and_qlora_and_agrees_with_trl(tmp_path):
    pytest.importorskip("trl")
    pytest.importorskip("bitsandbytes")
    out = tmp_path / "gpu_check.json"
    proc = _run("--dry-run", "--out", str(out))
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    res = json.loads(out.read_text())
    assert res["dry_run"] is True and res["batch"] == 8
    runs = {(r["method"], r["impl"]): r for r in res["runs"]}
    assert set(runs) == {(m, i) for m in ("kto", "dpo") for i in ("prospect", "trl", "qlora")}
    for r in runs.values():
        assert "error" not in r, r
        assert r["tokens_per_s"] > 0 and r["tflops"] > 0 and math.isfinite(r["first_loss"])
        assert r["peak_gpu_mem_gb"] is None  # CPU: no GPU memory figure
    assert runs[("kto", "trl")]["token_ids_match"] and runs[("dpo", "trl")]["token_ids_match"]
    # float32 on CPU, same weights, adapter and rows: TRL is the oracle for the first-step loss
    pairs = {p["method"]: p for p in res["first_step_losses"]}
    assert set(pairs) == {"kto", "dpo"}
    for p in pairs.values():
        assert p["abs_diff"] < 1e-5, p
    assert "model  method" in proc.stdout  # the table
