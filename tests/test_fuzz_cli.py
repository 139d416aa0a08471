"""Nothing let in, through the command line: arbitrary configs, overrides and data files.

Every failure must be a message on stderr starting `prospect: error:` with a non-zero exit
code and no traceback: one line for bad data (refused before a model loads); for a config,
exit code 2 and one line per problem found (the loader lists up to five).
Runs in-process through `prospect.cli.main` (the `prospect` entry point), so hypothesis can
try hundreds of inputs in seconds.
"""

from __future__ import annotations

import gzip
import io
import json
import tempfile
import warnings
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from helpers import learnable_unpaired, write_config, write_jsonl
from prospect.cli import SHORTCUTS, main
from prospect.config.loader import valid_keys
from prospect.errors import ProspectError

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    """main(argv) -> (exit code, stdout, stderr); argparse's own exits count as exit codes."""
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            rc = main(argv)
        except SystemExit as e:  # argparse usage errors
            rc = e.code
    return rc, out.getvalue(), err.getvalue()


def assert_one_line_error(rc: int, err: str, codes: tuple[int, ...]) -> str:
    assert rc in codes, (rc, err)
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("prospect: error: "), err
    return lines[0]


def assert_config_error(rc: int, err: str, codes: tuple[int, ...] = (2,)) -> None:
    """A config error is a validation message: one line per problem found (at most 5, then '... and N more')."""
    assert rc in codes, (rc, err)
    assert "Traceback" not in err, err
    lines = [line for line in err.split("\n") if line.strip()]  # a key may hold a \r: split on newlines only
    assert 1 <= len(lines) <= 6 and lines[0].startswith("prospect: error: "), err
    assert not any(line.startswith("prospect: error: ") for line in lines[1:]), err


# ------------------------------------------------------------------ config fuzzing
KEYS = valid_keys()
SECTIONS = sorted({k.split(".")[0] for k in KEYS})
FIELDS = sorted({k.split(".")[-1] for k in KEYS})
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True),
    st.text(max_size=12),
    st.sampled_from(["kto", "dpo", "auto", "1e-6", "-1", "", "~", "hf_x"]),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.one_of(st.sampled_from(FIELDS), st.text(max_size=6)), inner, max_size=3),
    ),
    max_leaves=10,
)
# Mostly the config's own sections and field names, so validation itself is exercised, not only "unknown key".
TREES = st.dictionaries(
    st.one_of(st.sampled_from(SECTIONS), st.text(max_size=6)),
    st.one_of(st.dictionaries(st.sampled_from(FIELDS), VALUES, max_size=4), VALUES),
    max_size=5,
)
# YAML features a hand-written or hostile file may use.
SNIPPETS = [
    "model: !!python/object/apply:os.system [echo hi]\n",
    "a: &x [*x]\n",
    "<<: {kto: {beta: 1}}\n",
    "kto:\n\tbeta: 1\n",
    "kto: {beta: 1}\nkto: {beta: 2}\n",
    "--- \n...\n---\n",
    "!!binary aGk=\n",
    "model: {name: !!str 1}\n",
    "? [a]\n: b\n",
    "training: {learning_rate: .inf}\n",
    "\ufeffmethod: kto\n",
    "%YAML 1.1\n---\nmethod: kto\n",
    "'\n",
    "method: [kto]\n",
    "training: {seed: 1e400}\n",
]
YAML_TEXT = st.one_of(
    st.text(max_size=200),
    TREES.map(lambda t: yaml.safe_dump(t, allow_unicode=True)),
    st.lists(st.sampled_from(SNIPPETS), min_size=1, max_size=3).map("".join),
)
OVERRIDES = st.lists(
    st.one_of(
        st.text(max_size=30),
        st.builds(
            lambda k, v: f"{k}={v}",
            st.sampled_from(KEYS),
            st.one_of(
                st.text(max_size=12),
                st.sampled_from(
                    [
                        "null",
                        "[1, 2]",
                        "{a: 1}",
                        "-1",
                        "1e999",
                        "nan",
                        "!!python/name:os.system",
                        "&a [*a]",
                        "'",
                        "auto",
                    ]
                ),
            ),
        ),
    ),
    max_size=4,
)


def _check_config_cli(argv: list[str]) -> None:
    rc, out, err = run_cli(argv)
    if rc == 0:  # a valid config: the resolved YAML is printed and reads back
        assert isinstance(yaml.safe_load(out), dict) and err.strip() == ""
    else:
        assert_config_error(rc, err)


@FUZZ
@given(text=YAML_TEXT)
@example(text="? 008\n? '\n\n'\n09:\n080:\n08:\n0: 0")  # a key that is a newline: shown escaped, on its line
def test_arbitrary_yaml_files_exit_0_or_2_with_one_line(text):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "run.yaml"
        path.write_text(text, encoding="utf-8")
        _check_config_cli(["config", "show", str(path)])


@settings(max_examples=60, deadline=None)
@given(data=st.binary(max_size=200))
def test_arbitrary_bytes_as_config_exit_0_or_2_with_one_line(data):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "run.yaml"
        path.write_bytes(data)
        _check_config_cli(["config", "show", str(path)])


@FUZZ
@given(overrides=OVERRIDES, shortcuts=st.lists(st.tuples(st.sampled_from(SHORTCUTS), st.text(max_size=12)), max_size=2))
def test_arbitrary_overrides_and_shortcuts_exit_0_or_2_with_one_line(overrides, shortcuts):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "run.yaml"
        path.write_text("method: kto\nmodel: {name: some/model}\ntraining: {max_steps: 3}\n", encoding="utf-8")
        argv = ["config", "show", str(path)] + [f"--set={o}" for o in overrides]
        argv += [f"--{name}={value}" for name, value in shortcuts]
        _check_config_cli(argv)


@settings(max_examples=40, deadline=None)
@given(text=YAML_TEXT, overrides=OVERRIDES)
def test_train_refuses_bad_configs_before_any_work(text, overrides):
    """`prospect train` on the same inputs: exit 2 with one line, or (valid config) the run starts."""
    import prospect.recipes.training as training

    def start(cfg, **kw):
        raise _Reached("training reached")

    real, training.train = training.train, start
    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "run.yaml"
            path.write_text(text, encoding="utf-8")
            rc, _, err = run_cli(["train", str(path)] + [f"--set={o}" for o in overrides])
    finally:
        training.train = real
    if rc != _Reached.exit_code:
        assert_config_error(rc, err)


def test_yaml_alias_bomb_is_refused_quickly():
    """A few hundred bytes of nested aliases must not expand into millions of nodes."""
    from prospect.config.loader import loads_config
    from prospect.errors import ConfigError

    lines = ["model:", "  name: m", "  model_init_kwargs:", '    l0: &a0 ["lol", "lol", "lol", "lol", "lol"]']
    lines += [f"    l{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 9)]
    text = "\n".join(lines) + "\n"
    assert len(text) < 700
    with pytest.raises(ConfigError):
        loads_config(text)


# ------------------------------------------------------------------ bad data through `prospect train`
class _Reached(ProspectError):
    """Raised instead of loading a model: the data was accepted."""

    exit_code = 99


GOOD = '{"prompt": "a b", "completion": "c d", "label": true}\n{"prompt": "a e", "completion": "c f", "label": false}\n'
BAD_FILES = {
    "empty": ("train.jsonl", b""),
    "blank_lines": ("train.jsonl", b"\n \n\t\n"),
    "binary": ("train.jsonl", bytes(range(256)) * 4),
    "gzip_named_jsonl": ("train.jsonl", b"\x1f\x8b\x08\x00" + bytes(40)),
    "utf16": ("train.jsonl", GOOD.encode("utf-16")),
    "truncated_json_array": ("train.json", b'[{"prompt": "a", "completion": "b", "label": true}, {"prompt": "x'),
    "jsonl_named_csv": ("train.csv", GOOD.encode()),
    "jsonl_named_parquet": ("train.parquet", GOOD.encode()),
    "one_class_kto": ("train.jsonl", GOOD.replace("false", "true").encode()),
    "all_rows_filtered": ("train.jsonl", GOOD.encode()),
    "truncated_gzip_jsonl": ("train.jsonl.gz", gzip.compress((GOOD * 200).encode())[:300]),
    "corrupt_gzip_csv": ("train.csv.gz", gzip.compress(b"prompt,completion,label\na,b,true\n" * 50)[:-12] + bytes(12)),
    "not_gzip_named_gz": ("train.jsonl.gz", GOOD.encode()),
}


@pytest.mark.parametrize("method", ["kto", "dpo"])
@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_data_files_fail_with_one_line_before_model_loading(tmp_path, case, method):
    if case == "one_class_kto" and method == "dpo":
        pytest.skip("labels are a KTO notion")
    name, data = BAD_FILES[case]
    path = tmp_path / name
    path.write_bytes(data)
    extra = ["--set", "data.min_response_length=1000"] if case == "all_rows_filtered" else []
    cfg = write_config(tmp_path / "run.yaml", method=method, data={"train_file": str(path)})
    rc, _, err = run_cli(["train", str(cfg), "--dry-run", *extra])
    line = assert_one_line_error(rc, err, (1,))
    assert str(path) in line


def test_missing_file_and_directory_as_data(tmp_path):
    for target, expected in ((tmp_path / "nope.jsonl", "file not found"), (tmp_path, "")):
        cfg = write_config(tmp_path / "run.yaml", data={"train_file": str(target)})
        rc, _, err = run_cli(["train", str(cfg), "--dry-run"])
        line = assert_one_line_error(rc, err, (1,))
        assert str(target) in line and expected in line


def test_one_class_kto_refused_by_the_engine_when_the_reader_allows_it(tmp_path):
    """With data.min_samples_per_label: 0 the reader lets one-class data through; training still refuses it."""
    path = tmp_path / "train.jsonl"
    path.write_text(GOOD.replace("false", "true"), encoding="utf-8")
    cfg = write_config(
        tmp_path / "run.yaml",
        data={"train_file": str(path), "min_samples_per_label": 0, "validation_split_percentage": 0.0},
    )
    rc, _, err = run_cli(["train", str(cfg), "--dry-run"])
    line = assert_one_line_error(rc, err, (1,))
    assert "KTO needs both desirable and undesirable rows, got 2 desirable and 0 undesirable" in line


def test_truncated_last_row_is_rejected_with_a_reason_and_counted(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text(GOOD + '{"prompt": "x y", "compl', encoding="utf-8")
    rc, out, err = run_cli(["data", "inspect", str(path), "--json"])
    assert rc == 0, err
    report = json.loads(out)
    assert report["rows_read"] == 3 and report["accepted"] == 2
    assert len(report["rejected"]) == 1 and "invalid JSON" in report["rejected"][0]["reason"]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    data=st.binary(max_size=300),
    suffix=st.sampled_from([".jsonl", ".json", ".csv", ".parquet", ".txt", "", ".jsonl.gz", ".csv.gz"]),
)
def test_arbitrary_data_bytes_through_train(tmp_path, data, suffix):
    path = tmp_path / f"train{suffix}"
    path.write_bytes(data)
    cfg = write_config(tmp_path / "run.yaml", data={"train_file": str(path)})
    rc, _, err = run_cli(["train", str(cfg), "--dry-run"])  # --dry-run loads no model
    if rc != 0:
        assert str(path) in assert_one_line_error(rc, err, (1,))


# ------------------------------------------------------------------ resource limits (a real tiny run)
def test_max_length_over_context_and_batch_over_data_are_told_and_handled(tmp_path, caplog):
    """kto.max_length 100000 on a 512-token model: capped with a warning; batch 64 on 12 rows: a warning."""
    rows = learnable_unpaired(6, seed=5)
    rows[0] = {**rows[0], "completion": "word " * 700}  # ~1400 tokens with the tiny byte-level tokenizer
    data = write_jsonl(tmp_path / "train.jsonl", rows)
    cfg = write_config(
        tmp_path / "run.yaml",
        data={"train_file": str(data), "validation_split_percentage": 0.0},
        training={"max_steps": 1, "batch_size": 64},
        kto={"max_length": 100000, "max_prompt_length": 100000, "max_target_length": 100000},
    )
    assert main(["train", str(cfg), "--quiet"]) == 0
    err = caplog.text  # the CLI logs these to stderr; pytest captures the log records
    assert "max_length 100000 exceeds the model's context of 512 tokens; sequences are capped at 512" in err
    assert (
        "training.batch_size x gradient_accumulation_steps = 64 is larger than the 12 training rows; "
        "each optimizer step uses all 12 rows"
    ) in err
    tok = json.loads((tmp_path / "runs" / "t" / "data_report.json").read_text())["tokenization"]["train"]
    assert tok["completion_truncated"] == 1
    # uncapped, the long completion would keep its ~1400 tokens
    assert tok["completion_token_lengths"]["max"] <= 512 - tok["prompt_token_lengths"]["min"]
