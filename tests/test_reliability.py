"""Nothing lost: kill and resume, SIGTERM/Ctrl-C, non-finite steps, damaged caches, atomic files.

The reference for every interrupted run is one uninterrupted run with the same seed, data
and config (`reference_run`, trained once per module). On CPU, resuming restores weights,
optimizer, scheduler, RNG state and the sampler position, so the interrupted run must end
with bit-identical adapter weights and identical per-step metrics (only wall times differ).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from helpers import learnable_unpaired, write_config, write_jsonl
from prospect.cli import main
from prospect.io import read_jsonl

ROOT = Path(__file__).resolve().parents[1]
MAX_STEPS = 12
# Wall-clock figures: the only things allowed to differ between an interrupted and an uninterrupted run.
TIMING_KEYS = {"time_s", "train_runtime", "train_samples_per_second", "train_steps_per_second"}


def _make_run(tmp: Path, **training) -> Path:
    """16 rows, batch 4: 4 steps per epoch, 3 epochs. Checkpoints every 3 steps fall inside an epoch
    (resume must skip batches) and, after step 4, inside a later epoch (the data order of that epoch
    must be the same)."""
    tmp.mkdir(parents=True, exist_ok=True)
    data = write_jsonl(tmp / "train.jsonl", learnable_unpaired(8, seed=1))
    return write_config(
        tmp / "run.yaml",
        data={"train_file": str(data), "validation_split_percentage": 0.0},
        training={"max_steps": MAX_STEPS, "save_steps": 3, "save_total_limit": 3, **training},
    )


def _run_dir(cfg: Path) -> Path:
    return cfg.parent / "runs" / "t"


def _adapter(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path / "adapter_model.safetensors"))


def _assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k}: max |diff| {(a[k] - b[k]).abs().max().item()}"


def _complete(ckpt: Path) -> bool:
    try:
        return json.loads((ckpt / "trainer_state.json").read_text())["global_step"] == int(ckpt.name.split("-")[1])
    except (OSError, ValueError, KeyError):
        return False


def _metric_rows(run: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in read_jsonl(run / "metrics.jsonl")]


def _env() -> dict[str, str]:
    return {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
    }


def _as_from_a_terminal() -> None:
    """In the child before exec: SIGINT/SIGTERM at their defaults, as a foreground shell starts a command.

    A background job of a non-interactive shell inherits SIGINT ignored, and `prospect train`
    rightly leaves an ignored signal ignored; these tests are about a user who can press Ctrl-C.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _start(cfg: Path, *extra: str, from_terminal: bool = True) -> tuple[subprocess.Popen, Path]:
    err = cfg.parent / f"stderr-{time.monotonic_ns()}.txt"
    with open(err, "w") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "prospect", "train", str(cfg), "--quiet", *extra],
            stdout=subprocess.DEVNULL,
            stderr=fh,
            env=_env(),
            cwd=cfg.parent,
            preexec_fn=_as_from_a_terminal if from_terminal else None,
        )
    return proc, err


@pytest.fixture
def ctrl_c_raises():
    """SIGINT handled by Python's default handler (KeyboardInterrupt) for the test, whatever this process inherited."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, before)


def _wait_for_step(proc: subprocess.Popen, err: Path, run: Path, step: int, timeout: float = 300) -> None:
    """Poll metrics.jsonl until a train row with `step` >= the given one is logged."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(r.get("step", 0) >= step and "loss" in r for r in read_jsonl(run / "metrics.jsonl")):
            return
        if proc.poll() is not None:
            pytest.fail(
                f"training ended (rc {proc.returncode}) before step {step} was logged:\n" + err.read_text()[-3000:]
            )
        time.sleep(0.05)
    proc.kill()
    pytest.fail(f"step {step} not logged within {timeout} s:\n" + err.read_text()[-3000:])


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    """The uninterrupted run every interrupted one is compared with."""
    tmp = tmp_path_factory.mktemp("reference")
    cfg = _make_run(tmp)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PROSPECT_CACHE", str(tmp_path_factory.getbasetemp() / "prospect-cache"))
        assert main(["train", str(cfg), "--quiet"]) == 0
    run = _run_dir(cfg)
    return {"adapter": _adapter(run / "final"), "metrics": _metric_rows(run)}


# ------------------------------------------------------------------ SIGKILL, then resume
def test_sigkill_mid_run_then_resume_matches_uninterrupted_run(tmp_path, reference_run, caplog):
    cfg = _make_run(tmp_path)
    run = _run_dir(cfg)
    proc, err = _start(cfg)
    # checkpoint-6 (second epoch) exists and step 7 is logged: a row the resume must not repeat.
    _wait_for_step(proc, err, run, 7)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL
    assert not (run / "final").exists() and not (run / "results.json").exists()

    # What else a kill can leave: a checkpoint cut short while saving (Trainer writes
    # trainer_state.json last), and a torn last line in metrics.jsonl.
    complete = sorted(int(d.name.split("-")[1]) for d in (run / "checkpoints").iterdir() if _complete(d))
    assert complete and complete[-1] >= 6
    partial = run / "checkpoints" / f"checkpoint-{complete[-1] + 3}"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    data = (run / "checkpoints" / f"checkpoint-{complete[-1]}" / "adapter_model.safetensors").read_bytes()
    (partial / "adapter_model.safetensors").write_bytes(data[: len(data) // 2])
    with open(run / "metrics.jsonl", "a", encoding="utf-8") as fh:
        fh.write('{"step": 11, "epoch": 2.5, "lo')

    # The same command again (in this process, to save a second interpreter start-up).
    caplog.set_level(logging.INFO, logger="prospect")
    assert main(["train", str(cfg), "--quiet", "--resume"]) == 0
    log = caplog.text
    assert f"resuming from {run / 'checkpoints' / f'checkpoint-{complete[-1]}'}" in log
    assert f"checkpoint-{complete[-1] + 3} is incomplete" in log

    _assert_same_weights(_adapter(run / "final"), reference_run["adapter"])
    rows = _metric_rows(run)
    assert [r["step"] for r in rows if "loss" in r] == list(range(1, MAX_STEPS + 1))  # each step once
    assert rows == reference_run["metrics"]
    assert json.loads((run / "results.json").read_text())["global_step"] == MAX_STEPS


# ------------------------------------------------------------------ SIGTERM / SIGINT
@pytest.mark.parametrize(
    "sig", [signal.SIGTERM, pytest.param(signal.SIGINT, marks=pytest.mark.slow)], ids=["SIGTERM", "SIGINT"]
)
def test_signal_saves_checkpoint_exits_nonzero_and_resumes(tmp_path, reference_run, sig):
    # No scheduled checkpoint before step 100: the only one is the one the signal asks for.
    cfg = _make_run(tmp_path, save_steps=100)
    run = _run_dir(cfg)
    proc, err = _start(cfg)
    _wait_for_step(proc, err, run, 5)  # in the second epoch
    proc.send_signal(sig)
    rc = proc.wait(timeout=120)
    stderr = err.read_text()
    assert rc == 128 + sig, stderr
    assert "Traceback" not in stderr
    errors = re.findall(r"prospect: error: [^\r\n]*", stderr)
    assert len(errors) == 1, stderr
    m = re.search(rf"stopped by {sig.name} at step (\d+) of {MAX_STEPS}; checkpoint saved in (\S+);", errors[0])
    assert m, errors[0]
    step, ckpt = int(m.group(1)), Path(m.group(2))
    assert 5 <= step < MAX_STEPS
    assert ckpt == run / "checkpoints" / f"checkpoint-{step}"
    state = json.loads((ckpt / "trainer_state.json").read_text())
    assert state["global_step"] == step
    for name in ("adapter_model.safetensors", "optimizer.pt", "scheduler.pt", "rng_state.pth"):
        assert (ckpt / name).is_file(), name
    assert not (run / "final").exists() and not (run / "results.json").exists()

    # The same command resumes from the signal's checkpoint and ends where an uninterrupted run ends.
    assert main(["train", str(cfg), "--quiet"]) == 0
    _assert_same_weights(_adapter(run / "final"), reference_run["adapter"])
    assert _metric_rows(run) == reference_run["metrics"]


def test_stop_request_handles_first_signal_and_second_stops_at_once(ctrl_c_raises):
    from types import SimpleNamespace

    from prospect.engine.signals import StopOnSignalCallback, stop_on_signals

    before = signal.getsignal(signal.SIGINT)
    with stop_on_signals() as stop:
        assert signal.getsignal(signal.SIGINT) is not before
        os.kill(os.getpid(), signal.SIGINT)  # a real Ctrl-C: recorded, no KeyboardInterrupt
        time.sleep(0.01)
        assert stop.signum == signal.SIGINT and stop.name == "SIGINT"
        control = SimpleNamespace(should_save=False, should_training_stop=False)
        StopOnSignalCallback(stop).on_step_end(None, SimpleNamespace(global_step=7), control)
        assert control.should_save and control.should_training_stop and stop.stopped_at_step == 7
        with pytest.raises(KeyboardInterrupt):  # the second Ctrl-C does not wait for the step
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)
    assert signal.getsignal(signal.SIGINT) is before


def test_a_signal_ignored_at_start_stays_ignored_and_the_other_still_stops(caplog):
    """nohup / a background job starts with SIGINT ignored: leave it so, say it once, still stop on SIGTERM."""
    from prospect.engine.signals import stop_on_signals

    before_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
    before_term = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        with caplog.at_level("WARNING", logger="prospect"), stop_on_signals() as stop:
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
            os.kill(os.getpid(), signal.SIGINT)  # ignored: no request, no KeyboardInterrupt
            time.sleep(0.01)
            assert not stop.requested
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.01)
            assert stop.signum == signal.SIGTERM
        notes = [r.getMessage() for r in caplog.records if "ignored" in r.getMessage()]
        assert len(notes) == 1 and "SIGINT" in notes[0] and "SIGTERM still saves a checkpoint" in notes[0]
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    finally:
        signal.signal(signal.SIGINT, before_int)
        signal.signal(signal.SIGTERM, before_term)


def test_ctrl_c_during_a_sweep_checkpoints_and_stops_the_sweep(tmp_path, monkeypatch, capsys, ctrl_c_raises):
    """The graceful stop must stop `prospect sweep` too, not count as one failed run and go on to the next."""
    import csv

    from prospect.engine.trainer import PreferenceTrainer

    real_step = PreferenceTrainer.training_step

    def ctrl_c_in_step_2(self, *args, **kw):
        if self.state.global_step == 1:
            os.kill(os.getpid(), signal.SIGINT)  # a real Ctrl-C, delivered to the handler
        return real_step(self, *args, **kw)

    monkeypatch.setattr(PreferenceTrainer, "training_step", ctrl_c_in_step_2)
    data = write_jsonl(tmp_path / "train.jsonl", learnable_unpaired(4, seed=1))
    cfg = write_config(
        tmp_path / "sweep.yaml",
        data={"train_file": str(data), "validation_split_percentage": 0.0},
        training={"max_steps": 4, "save_steps": 100},
        sweep={"kto.beta": [0.1, 0.2]},
    )
    assert main(["sweep", str(cfg)]) == 130
    assert re.search(
        r"prospect: error: stopped by SIGINT at step 2 of 4; checkpoint saved in \S+checkpoint-2;",
        capsys.readouterr().err,
    )
    table = list(csv.DictReader((tmp_path / "runs" / "t" / "results.csv").open()))
    assert [row["status"] for row in table] == ["interrupted", "pending"]
    first = next(d for d in (tmp_path / "runs" / "t").iterdir() if d.name.endswith("beta0.1"))
    assert (first / "checkpoints" / "checkpoint-2" / "trainer_state.json").is_file()


def test_length_grouped_order_depends_on_seed_and_epoch_only():
    from prospect.engine.order import EpochSeededLengthGroupedSampler

    lengths = [(7 * i) % 23 + 5 for i in range(40)]
    sampler = EpochSeededLengthGroupedSampler(8, lengths, seed=3)
    orders = []
    for epoch in (0, 1, 0):
        sampler.set_epoch(epoch)
        torch.manual_seed(epoch + 100)  # the global RNG (what a resume restores late) plays no part
        orders.append(list(sampler))
    assert orders[0] == orders[2] != orders[1]
    assert sorted(orders[0]) == sorted(orders[1]) == list(range(40))
    other = EpochSeededLengthGroupedSampler(8, lengths, seed=4)
    other.set_epoch(0)
    assert list(other) != orders[0]


# ------------------------------------------------------------------ non-finite loss and gradients
class _Poisoned:
    """Wraps a loss: at the given calls (= optimizer steps here) the loss or its gradient is made non-finite."""

    def __init__(self, inner, steps: dict[int, str]) -> None:
        self.inner, self.kind, self.steps, self.calls = inner, inner.kind, steps, 0

    def __getattr__(self, name):  # what the loss says it needs (needs_reference_point, ...)
        return getattr(self.inner, name)

    def __call__(self, logps):
        out = self.inner(logps)
        self.calls += 1
        if self.calls in self.steps:
            if self.steps[self.calls] == "loss":
                out.loss = out.loss * float("nan")
            else:  # value 0 added, gradient sqrt'(0) * 0 = inf * 0 = NaN: a finite loss with NaN gradients
                s = (logps.policy - logps.policy.detach()).sum()
                out.loss = out.loss + torch.sqrt(s * s)
        return out


def test_nonfinite_steps_are_skipped_without_touching_the_weights(tmp_path, monkeypatch, caplog):
    import prospect.recipes.preparation as preparation

    real = preparation.build_loss
    poison = {2: "loss", 4: "gradients"}  # fault injection: the run's loss turns non-finite at these steps
    monkeypatch.setattr(preparation, "build_loss", lambda *a, **k: _Poisoned(real(*a, **k), poison))
    cfg = _make_run(tmp_path, max_steps=5, save_steps=1, save_total_limit=None)
    assert main(["train", str(cfg), "--quiet"]) == 0
    run = _run_dir(cfg)
    ckpt = run / "checkpoints"
    for step, what in poison.items():
        # The step was skipped: parameters (and Adam's moments) untouched ...
        _assert_same_weights(_adapter(ckpt / f"checkpoint-{step}"), _adapter(ckpt / f"checkpoint-{step - 1}"))
        assert f"step {step}: non-finite {what}; update skipped" in caplog.text
    # ... and the steps in between, and after, trained.
    for a, b in ((3, 2), (5, 4)):
        before, after = _adapter(ckpt / f"checkpoint-{b}"), _adapter(ckpt / f"checkpoint-{a}")
        assert any(not torch.equal(after[k], before[k]) for k in after)
    assert json.loads((run / "results.json").read_text())["nonfinite_steps"] == 2
    counts = {r["step"]: r.get("nonfinite_steps", 0) for r in read_jsonl(run / "metrics.jsonl") if "loss" in r}
    assert counts == {1: 0, 2: 1, 3: 1, 4: 2, 5: 2}


def test_nonfinite_steps_in_a_row_stop_the_run_with_one_clear_line(tmp_path, capsys):
    """A learning rate of 1e30 overflows the weights after one step; every later loss is NaN."""
    cfg = _make_run(tmp_path)
    rc = main(
        [
            "train",
            str(cfg),
            "--quiet",
            "--set",
            "training.learning_rate=1e30",
            "--set",
            "training.max_nonfinite_steps=2",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 1
    # The progress bar redraws without a newline, so the message may follow it on one terminal line.
    lines = re.findall(r"prospect: error: [^\r\n]*", err)
    assert lines == [
        "prospect: error: stopped at step 3: 2 optimizer steps in a row had a non-finite loss or "
        "gradients (training.max_nonfinite_steps=2); lower training.learning_rate, check the data, "
        "or train in float32"
    ]
    assert "Traceback" not in err
    assert not (_run_dir(cfg) / "final").exists()


# ------------------------------------------------------------------ metrics file and checkpoints
def test_truncate_metrics_keeps_rows_up_to_the_resumed_step(tmp_path):
    from prospect.engine.callbacks import truncate_metrics

    path = tmp_path / "metrics.jsonl"
    rows = [{"step": s, "loss": 1.0 / s, "time_s": float(s)} for s in range(1, 7)]
    rows.insert(4, {"step": 4, "eval_loss": 0.3, "time_s": 4.5})
    rows.append({"step": 6, "train_runtime": 6.0, "time_s": 6.1})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 7, "lo', encoding="utf-8")
    assert truncate_metrics(path, 4) == 4.5
    assert read_jsonl(path) == rows[:5]  # train 1-4 and the eval at 4; not 5, 6, the summary or the torn line
    assert path.read_text(encoding="utf-8").endswith("\n")
    assert truncate_metrics(path, -1) == 0.0 and read_jsonl(path) == []  # a fresh start
    assert truncate_metrics(tmp_path / "absent.jsonl", 3) == 0.0 and not (tmp_path / "absent.jsonl").exists()


def test_last_complete_checkpoint_skips_and_removes_partial_ones(tmp_path):
    from prospect.engine.rundir import last_complete_checkpoint

    ck = tmp_path / "checkpoints"
    assert last_complete_checkpoint(ck) is None
    for step, state in [
        (2, {"global_step": 2}),
        (4, {"global_step": 4}),
        (6, None),
        (8, "torn"),
        (10, {"global_step": 2}),
    ]:
        d = ck / f"checkpoint-{step}"
        d.mkdir(parents=True)
        if state == "torn":
            (d / "trainer_state.json").write_text('{"global_step": 8, "log_hi')
        elif state is not None:
            (d / "trainer_state.json").write_text(json.dumps(state))
    (ck / "checkpoint-99.tmp").mkdir()  # not a checkpoint name: ignored, kept
    assert last_complete_checkpoint(ck) == str(ck / "checkpoint-4")
    assert sorted(p.name for p in ck.iterdir()) == ["checkpoint-2", "checkpoint-4", "checkpoint-99.tmp"]


# ------------------------------------------------------------------ caches are never half-trusted
def _reference_entry(tmp_path):
    from prospect.engine.reference import cached_reference_logps

    calls = []
    good = {"ref_logps": torch.tensor([-1.5, -2.25, -3.0, -40.125])}

    def compute():
        calls.append(1)
        return {k: v.clone() for k, v in good.items()}

    def load():
        return cached_reference_logps("k1", compute, cache_dir=tmp_path)

    return load, calls, good, tmp_path / "k1.safetensors"


def _flip_last_data_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x40  # the last byte belongs to the last float, not to the header
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", ["bit_flip", "truncated", "meta_missing", "meta_torn", "other_key"])
def test_damaged_reference_cache_entry_is_recomputed(tmp_path, caplog, damage):
    load, calls, good, path = _reference_entry(tmp_path)
    assert load()[1] == "miss" and load()[1] == "hit" and len(calls) == 1
    meta = path.with_suffix(".json")
    if damage == "bit_flip":
        _flip_last_data_byte(path)
        assert not torch.equal(
            load_file(str(path))["ref_logps"], good["ref_logps"]
        )  # still loads: only the checksum tells
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[:-7])
    elif damage == "meta_missing":
        meta.unlink()
    elif damage == "meta_torn":
        meta.write_text(meta.read_text()[:10])
    else:
        meta.write_text(json.dumps({**json.loads(meta.read_text()), "key": "k0"}))
    tensors, status = load()
    assert status == "miss" and len(calls) == 2 and torch.equal(tensors["ref_logps"], good["ref_logps"])
    assert "recomputing" in caplog.text
    assert load()[1] == "hit" and len(calls) == 2  # the recomputed entry replaced the damaged one
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k1.json", "k1.safetensors"]  # no temp files left


def _tokenize(records):
    from prospect.data.tokenize import TokenizeSettings, tokenize_records
    from prospect.testing import load_tiny_tokenizer

    settings = TokenizeSettings(max_length=64, max_prompt_length=32, max_completion_length=32)
    ds, stats = tokenize_records(records, load_tiny_tokenizer(), settings, kind="unpaired")
    return ds.to_list(), stats["cache"]


def _records():
    from prospect.data.records import UnpairedRecord

    return [
        UnpairedRecord(prompt=f"Tell me about item {i}.", completion=f"A kind answer {i}.", label=bool(i % 2))
        for i in range(6)
    ]


def test_tokenization_cache_ignores_what_a_killed_writer_left(tmp_path, monkeypatch):
    from prospect.io import cache_root

    monkeypatch.setenv("PROSPECT_CACHE", str(tmp_path))
    fresh, status = _tokenize(_records())
    assert status == "miss"
    entry = next((cache_root() / "tokenized").iterdir())
    # A writer killed before its rename leaves only a temp directory: the entry does not exist yet.
    shutil.rmtree(entry)
    (cache_root() / "tokenized" / f"{entry.name}.tmp12345" / "data").mkdir(parents=True)
    (cache_root() / "tokenized" / f"{entry.name}.tmp12345" / "data" / "data-00000-of-00001.arrow").write_bytes(
        b"\0" * 9
    )
    again, status = _tokenize(_records())
    assert status == "miss" and again == fresh
    assert _tokenize(_records()) == (fresh, "hit")


@pytest.mark.parametrize("damage", ["bit_flip", "truncated", "stats_torn"])
def test_damaged_tokenization_cache_entry_is_recomputed(tmp_path, monkeypatch, damage):
    from prospect.io import cache_root

    monkeypatch.setenv("PROSPECT_CACHE", str(tmp_path))
    fresh, _ = _tokenize(_records())
    entry = next((cache_root() / "tokenized").iterdir())
    arrow = next((entry / "data").glob("*.arrow"))
    if damage == "bit_flip":
        data = bytearray(arrow.read_bytes())
        first_id = fresh[0]["prompt_ids"][3].to_bytes(8, "little")
        data[data.index(first_id)] ^= 0x01  # one token id changes; the file still loads
        arrow.write_bytes(bytes(data))
    elif damage == "truncated":
        arrow.write_bytes(arrow.read_bytes()[: arrow.stat().st_size // 2])
    else:
        (entry / "stats.json").write_text('{"rows": 6, "prom')
    again, status = _tokenize(_records())
    assert status == "miss" and again == fresh
    assert _tokenize(_records()) == (fresh, "hit")


# ------------------------------------------------------------------ atomic files
def test_plots_are_written_atomically(tmp_path, monkeypatch):
    import matplotlib.figure

    from prospect.eval.plots import plot_run

    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text(
        "".join(json.dumps({"step": s, "loss": 1 / s, "kl": 0.1 * s}) + "\n" for s in range(1, 5))
    )
    written = plot_run(run)
    assert {p.name for p in written} == {"loss.png", "kl.png", "overview.png"}
    before = {p.name: p.read_bytes() for p in written}
    assert all(b.startswith(b"\x89PNG\r\n\x1a\n") for b in before.values())

    def dies_half_way(self, fname, **kw):  # a process killed inside savefig
        Path(fname).write_bytes(b"\x89PNG half")
        raise KeyboardInterrupt

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        plot_run(run)
    assert {p.name: p.read_bytes() for p in (run / "plots").iterdir()} == before  # old plots intact, no temp files


def test_final_model_is_swapped_in_whole(tmp_path):
    """final/ is saved beside it and renamed into place: a save that dies leaves the previous final/ as it was."""
    from types import SimpleNamespace

    from prospect.engine.rundir import save_final

    class Trainer:  # what save_final uses of transformers.Trainer
        args = SimpleNamespace(should_save=True)
        accelerator = SimpleNamespace(wait_for_everyone=lambda: None)

        def __init__(self, weights: bytes, dies: bool = False) -> None:
            self.weights, self.dies = weights, dies

        def save_model(self, path: str) -> None:
            Path(path).mkdir(parents=True, exist_ok=True)
            (Path(path) / "adapter_model.safetensors").write_bytes(self.weights[:3])
            if self.dies:
                raise KeyboardInterrupt
            (Path(path) / "adapter_model.safetensors").write_bytes(self.weights)
            (Path(path) / "training_args.bin").write_bytes(b"a pickle")

    tokenizer = SimpleNamespace(save_pretrained=lambda p: (Path(p) / "tokenizer.json").write_text("{}"))
    final = tmp_path / "final"

    def contents() -> dict[str, bytes]:
        return {p.name: p.read_bytes() for p in final.iterdir()}

    save_final(Trainer(b"weights-1"), tokenizer, final)
    assert contents() == {"adapter_model.safetensors": b"weights-1", "tokenizer.json": b"{}"}  # no pickle
    with pytest.raises(KeyboardInterrupt):
        save_final(Trainer(b"weights-2", dies=True), tokenizer, final)
    assert contents() == {"adapter_model.safetensors": b"weights-1", "tokenizer.json": b"{}"}
    # What a save killed outright leaves (its temp dir, an old copy being swapped out) is cleared next time.
    (tmp_path / ".final.tmp").mkdir()
    (tmp_path / ".final.old-12345").mkdir()
    save_final(Trainer(b"weights-3"), tokenizer, final)
    assert contents() == {"adapter_model.safetensors": b"weights-3", "tokenizer.json": b"{}"}
    assert [p.name for p in tmp_path.iterdir()] == ["final"]


def test_writes_in_src_go_through_a_temporary_path():
    """Every direct file write in src/ targets a temp path that is renamed into place (prospect.io)."""
    pattern = re.compile(r"\.savefig\(|\.write_text\(|\.write_bytes\(|\bopen\([^)]*['\"][wax]b?['\"]|torch\.save\(")
    allowed = {"io.py", "testing.py", "build_tiny_tokenizer.py"}  # io.py is the mechanism; the others build test assets
    offenders = []
    for path in (ROOT / "src" / "prospect").rglob("*.py"):
        if path.name in allowed:
            continue
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if pattern.search(line) and "tmp" not in line:
                offenders.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert offenders == []
