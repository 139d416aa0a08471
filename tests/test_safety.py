"""Safe defaults, end to end: nothing runs that was not asked for, nothing escapes, no secret is written.

- configs are read with safe_load semantics: a `!!python/...` tag is refused, its payload never runs;
- `model.trust_remote_code` is off unless set, and pickle weights are refused unless trusted;
- what a run writes is safetensors and JSON, except the Trainer's own optimizer/scheduler/RNG
  state in checkpoints (pickles it reads back with `torch.load(weights_only=True)`);
- run and sweep names cannot leave the output directory;
- API keys and tokens from the environment or the config appear in no file a run or an export writes.

Each refusal is paired with a positive control showing the payload is live, so a test cannot
pass merely because the payload was broken.
"""

from __future__ import annotations

import io
import json
import pickle
import shutil
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
import yaml

from helpers import learnable_unpaired, write_config, write_jsonl
from prospect.cli import main
from prospect.testing import tiny_model_dir, tiny_tokenizer_dir


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        rc = main(argv)
    return rc, out.getvalue(), err.getvalue()


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("prospect: error: ") and "Traceback" not in err, err
    return lines[0]


# ------------------------------------------------------------------ YAML: safe_load only
PAYLOADS = [
    "!!python/object/apply:os.system ['touch {m}']",
    "!!python/object/apply:subprocess.check_call [['touch', '{m}']]",
    "!!python/object/apply:builtins.exec [\"open('{m}', 'w').close()\"]",
]


@pytest.mark.parametrize("payload", PAYLOADS, ids=["os.system", "check_call", "exec"])
@pytest.mark.parametrize("where", ["file", "override"])
def test_python_yaml_tags_are_refused_and_never_run(tmp_path, payload, where):
    marker = tmp_path / "PWNED"
    value = payload.format(m=marker)
    # Positive control: an unsafe loader does run it.
    control = tmp_path / "CONTROL"
    yaml.unsafe_load(f"x: {payload.format(m=control)}\n")
    assert control.exists()

    cfg = tmp_path / "run.yaml"
    if where == "file":
        cfg.write_text(f"method: kto\nmodel:\n  name: {value}\n", encoding="utf-8")
        argv = ["config", "show", str(cfg)]
    else:
        cfg.write_text("method: kto\n", encoding="utf-8")
        argv = ["config", "show", str(cfg), "--set", f"model.name={value}"]
    rc, out, err = run_cli(argv)
    if where == "file":
        assert rc == 2
        assert "could not determine a constructor" in one_error_line(err)
    else:  # an override value YAML cannot read safely stays what it is: an inert string
        assert rc == 0 and yaml.safe_load(out)["model"]["name"] == value
    assert not marker.exists()


# ------------------------------------------------------------------ remote code and pickles
def _data(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "train.jsonl", learnable_unpaired(4, seed=1))


def test_model_code_from_the_repository_does_not_run_unless_trusted(tmp_path):
    model = tmp_path / "custom-model"
    shutil.copytree(tiny_tokenizer_dir(), model)
    marker = tmp_path / "RAN"
    (model / "config.json").write_text(
        json.dumps(
            {
                "model_type": "prospect_custom",
                "auto_map": {"AutoConfig": "custom.CustomConfig", "AutoModelForCausalLM": "custom.CustomModel"},
            }
        )
    )
    (model / "custom.py").write_text(f"import pathlib\npathlib.Path({str(marker)!r}).write_text('x')\n")
    cfg = write_config(tmp_path / "run.yaml", model={"name": str(model)}, data={"train_file": str(_data(tmp_path))})
    rc, _, err = run_cli(["train", str(cfg), "--quiet"])
    assert rc == 1
    assert "trust_remote_code" in one_error_line(err)
    assert not marker.exists()
    resolved = yaml.safe_load((tmp_path / "runs" / "t" / "config.yaml").read_text(encoding="utf-8"))
    assert resolved["model"]["trust_remote_code"] is False  # the default, written into the run


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (Path.write_text, (Path(self.marker), "x"))


def test_pickle_weights_are_refused_unless_trusted(tmp_path):
    model = tmp_path / "pickled-model"
    shutil.copytree(tiny_model_dir(), model)
    (model / "model.safetensors").unlink()
    marker = tmp_path / "UNPICKLED"
    with open(model / "pytorch_model.bin", "wb") as fh:
        pickle.dump(_Payload(marker), fh)
    # Positive control: a plain unpickler runs it.
    with open(model / "pytorch_model.bin", "rb") as fh:
        pickle.load(fh)
    assert marker.exists()
    marker.unlink()

    line = _train_refused(tmp_path, model)
    assert "pickle" in line and "model.use_safetensors: false" in line
    assert not marker.exists()


def _train_refused(tmp_path, model_name):
    """`prospect train` on model.name = model_name: exit 1 with one error line, returned."""
    cfg = write_config(
        tmp_path / "run.yaml", model={"name": str(model_name)}, data={"train_file": str(_data(tmp_path))}
    )
    rc, _, err = run_cli(["train", str(cfg), "--quiet"])
    assert rc == 1
    return one_error_line(err)


def test_pickle_adapters_are_refused_unless_trusted(tmp_path):
    """An adapter directory (model.name pointing at a PEFT adapter) stored as adapter_model.bin is refused."""
    adapter = tmp_path / "pickled-adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(
        json.dumps(
            {
                "peft_type": "LORA",
                "base_model_name_or_path": str(tiny_model_dir()),
                "task_type": "CAUSAL_LM",
                "r": 2,
                "lora_alpha": 4,
                "target_modules": ["q_proj"],
            }
        )
    )
    marker = tmp_path / "UNPICKLED"
    with open(adapter / "adapter_model.bin", "wb") as fh:
        pickle.dump(_Payload(marker), fh)
    line = _train_refused(tmp_path, adapter)
    assert "adapter_model.bin" in line and "model.use_safetensors: false" in line
    assert not marker.exists()


# ------------------------------------------------------------------ run and sweep names
NASTY_NAMES = [
    "../../etc",
    "/etc/passwd",
    "..",
    ".",
    "...",
    "",
    " ",
    "a/../../b",
    "~root",
    "\x00",
    "a\\..\\..\\b",
    "C:\\Windows",
    "..／..／etc",
    "-rf",
    ".hidden",
    "x" * 500,
    "ok\n../..",
    "%2e%2e%2f",
]


@pytest.mark.parametrize("name", NASTY_NAMES)
def test_run_names_stay_inside_the_output_directory(tmp_path, name):
    from prospect.config.schema import RunConfig
    from prospect.engine.rundir import run_directory

    root = tmp_path / "out"
    run = run_directory(RunConfig(training={"output_dir": str(root), "run_name": name}))
    assert run.parent == root.resolve()
    assert run.name and run.name not in (".", "..") and not run.name.startswith((".", "-"))
    assert "/" not in run.name and "\\" not in run.name and "\x00" not in run.name and len(run.name) <= 120


def test_run_name_escape_through_the_cli_writes_inside_output_dir(tmp_path):
    out = tmp_path / "a" / "b" / "out"
    cfg = write_config(
        tmp_path / "run.yaml",
        data={"train_file": str(tmp_path / "missing.jsonl")},
        training={"output_dir": str(out), "run_name": "../../../escaped"},
    )
    rc, _, err = run_cli(["train", str(cfg), "--quiet"])
    assert rc == 1 and "file not found" in one_error_line(err)  # fails on the data, after the run dir is made
    assert (out / "escaped" / "config.yaml").is_file()
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_dir()) == [
        "a",
        "a/b",
        "a/b/out",
        "a/b/out/escaped",
    ]


def test_sweep_run_names_stay_inside_the_output_directory(tmp_path):
    from prospect.config.loader import loads_config
    from prospect.recipes.sweep.grid import expand_grid

    root = (tmp_path / "out").resolve()
    cfg = loads_config(f"""
method: kto
training: {{output_dir: {root}, run_name: ../../sweeps}}
models:
  - {{id: org/model-a, short: ../../evil}}
  - {{id: /abs/../../model-b}}
sweep:
  data.train_file: [a.jsonl, ../../x.jsonl]
""")
    runs = expand_grid(cfg)
    assert len(runs) == 4
    for run in runs:
        assert root in run.run_dir.parents, run.run_dir
        assert run.run_dir.parent.parent == root  # <output_dir>/<sweep>/<run>


# ------------------------------------------------------------------ secrets and what a run writes
SECRETS = {
    "WANDB_API_KEY": "e1f2a3b4c5d6e7f8091a2b3c4d5e6f7081920a1b",  # W&B: 40 hex characters
    "HF_TOKEN": "hf_EnvTokenAbcdefghijklmnopqrstuvwxyz12",
    "config token": "hf_CfgTokenAbcdefghijklmnopqrstuvwxyz12",
    "config password": "S3cretPassw0rdInAUrl",
}
# The Trainer's own state in checkpoints: pickles, read back with torch.load(weights_only=True).
TRAINER_PICKLES = {"optimizer.pt", "scheduler.pt", "rng_state.pth", "training_args.bin"}


def test_no_secret_in_any_file_a_run_or_an_export_writes(tmp_path, monkeypatch):
    for k in ("WANDB_MODE", "WANDB_DIR", "WANDB_PROJECT", "WANDB_ENTITY", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(k, raising=False)  # the engine sets some; monkeypatch restores them afterwards
    monkeypatch.setenv("WANDB_API_KEY", SECRETS["WANDB_API_KEY"])
    monkeypatch.setenv("HF_TOKEN", SECRETS["HF_TOKEN"])
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = write_config(
        tmp_path / "run.yaml",
        data={"train_file": str(_data(tmp_path)), "validation_split_percentage": 0.0},
        training={"max_steps": 2, "save_steps": 1},
        model={"name": str(tiny_model_dir()), "model_init_kwargs": {"token": SECRETS["config token"]}},
        logging={
            "report_to": ["wandb"],
            "wandb_project": "prospect-safety",
            "mlflow_tracking_uri": f"https://bob:{SECRETS['config password']}@mlflow.example.com/",
        },
    )
    rc, out, err = run_cli(["train", str(cfg), "--quiet"])
    assert rc == 0, err
    run = tmp_path / "runs" / "t"
    rc, out2, err2 = run_cli(["export", str(run), "-o", str(tmp_path / "export")])
    assert rc == 0, err2
    assert (tmp_path / "export" / "README.md").is_file() and (run / "wandb").is_dir()

    files = [p for d in (run, tmp_path / "export") for p in d.rglob("*") if p.is_file()]
    assert len(files) > 20
    for name, secret in SECRETS.items():
        for text in (out, err, out2, err2):
            assert secret not in text, name
        for p in files:
            assert secret.encode() not in p.read_bytes(), f"{name} in {p}"
    resolved = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8"))
    assert resolved["model"]["model_init_kwargs"]["token"] == "***REDACTED***"

    # Weights are safetensors; final/ and the export hold no pickle at all; checkpoints only Trainer's state.
    def pickles(d: Path) -> set[str]:
        return {p.name for p in d.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".pkl", ".pickle")}

    for d in (run / "final", tmp_path / "export"):
        assert (d / "adapter_model.safetensors").is_file() and pickles(d) == set(), d
    for ckpt in (run / "checkpoints").iterdir():
        assert (ckpt / "adapter_model.safetensors").is_file() and pickles(ckpt) == TRAINER_PICKLES, ckpt


def test_secret_in_an_unknown_config_key_is_not_echoed(tmp_path):
    """A key Prospect does not know (e.g. logging.wandb_api_key) is refused without printing its value."""
    key = SECRETS["WANDB_API_KEY"]
    cfg = tmp_path / "run.yaml"
    cfg.write_text(f"method: kto\nlogging:\n  wandb_api_key: {key}\n  hf_token: {SECRETS['HF_TOKEN']}\n")
    rc, _, err = run_cli(["config", "show", str(cfg)])
    assert rc == 2 and "logging.wandb_api_key: unknown key" in err
    assert key not in err and SECRETS["HF_TOKEN"] not in err


@pytest.mark.parametrize(
    "override", [f"logging.wandb_api_key={SECRETS['WANDB_API_KEY']}", f"model.token={SECRETS['HF_TOKEN']}"]
)
def test_secret_in_a_bad_override_is_not_echoed(tmp_path, override):
    cfg = tmp_path / "run.yaml"
    cfg.write_text("method: kto\n")
    rc, _, err = run_cli(["config", "show", str(cfg), "--set", override])
    assert rc == 2 and "unknown key" in err
    assert override.split("=", 1)[1] not in err


def test_a_saved_config_never_hands_redacted_secrets_back(tmp_path):
    """eval/export reload config.yaml: a REDACTED token is dropped (the environment's applies), not used."""
    from prospect.config.loader import REDACTED, load_saved_config
    from prospect.config.schema import RunConfig

    cfg = RunConfig.model_validate(
        {
            "method": "kto",
            "model": {"name": "m", "model_init_kwargs": {"token": SECRETS["HF_TOKEN"], "revision": "main"}},
            "kto": {"beta": 0.3},
        }
    )
    path = tmp_path / "config.yaml"
    cfg.to_yaml(str(path))
    assert REDACTED in path.read_text() and SECRETS["HF_TOKEN"] not in path.read_text()
    back = load_saved_config(path)
    assert back.model.model_init_kwargs == {"revision": "main"} and back.kto.beta == 0.3
