"""The data section of the config: seed 001's KTODataConfig keywords, label mappings, aliases that must not
silently lose to each other (lazy_loading / streaming, kto.max_completion_length / max_target_length)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
from pydantic import ValidationError

import prospect.config.schema as schema
from prospect.config.loader import ConfigWarning, config_with_overrides, dump_config, loads_config
from prospect.config.schema import DataUtilityConfig, KTOConfig, KTODataConfig, KTOSpecificConfig
from prospect.data import inspect_file, load_records
from prospect.data.filters import response_quality
from prospect.errors import ConfigError


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def labels_of(path: Path, **kw) -> dict[str, bool]:
    """completion -> label of every training record."""
    cfg = KTODataConfig(train_file=str(path), validation_split_percentage=0, min_samples_per_label=0, **kw)
    return {r.completion: r.label for r in load_records(cfg, kind="unpaired").train}


# ---- seed 001's keyword arguments ---------------------------------------------------
def test_seed001_data_config_examples_construct():
    """Every KTODataConfig(...) call of seed 001 validates (its memory keywords warn that they do nothing)."""
    binary = KTODataConfig(
        train_file="data/kto_binary_train.jsonl",
        validation_file="data/kto_binary_val.jsonl",
        label_column="feedback",
        response_column="completion",
        balance_labels=True,
        label_imbalance_tolerance=0.05,
    )
    assert (binary.label_column, binary.balance_labels, binary.label_imbalance_tolerance) == ("feedback", True, 0.05)
    pairwise = KTODataConfig(
        train_file="data/dpo_train.jsonl",
        convert_pairwise_to_binary=True,
        pairwise_sampling_strategy="balanced",
        balance_labels=True,
    )
    assert pairwise.pairwise_sampling_strategy == "balanced"
    with pytest.warns(ConfigWarning, match=r"data\.buffer_size=10000 has no effect"):
        streaming = KTODataConfig(
            train_file="data/large_kto_train.jsonl",
            streaming=True,
            buffer_size=10000,
            balance_labels=True,
            preprocessing_num_workers=8,
        )
    assert streaming.streaming and streaming.buffer_size == 10000 and streaming.preprocessing_num_workers == 8
    with pytest.warns(ConfigWarning, match=r"data\.max_samples_in_memory=30000 has no effect"):
        memory = KTODataConfig(
            train_file="data/kto_train.jsonl",
            max_samples_in_memory=30000,
            streaming=True,
            lazy_loading=True,
            balance_labels=True,
            label_imbalance_tolerance=0.1,
        )
    assert memory.streaming is True and memory.max_samples_in_memory == 30000
    assert KTODataConfig().kto_specific == DataUtilityConfig(alpha=0.88, lambda_param=2.25)
    assert KTODataConfig(kto_specific={"alpha": 0.5}).kto_specific.lambda_param == 2.25


def test_no_effect_fields_say_so_and_do_not_warn_when_unset(tmp_path):
    for name in ("buffer_size", "max_samples_in_memory"):
        text = KTODataConfig.model_fields[name].description
        assert "NO effect" in text and "bounded memory" in text and "file order" in text
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        KTODataConfig()  # unset: no warning
    p = write_jsonl(
        tmp_path / "d.jsonl", [{"prompt": f"q{i}", "completion": f"a{i}", "label": i % 2 == 0} for i in range(8)]
    )
    with pytest.warns(ConfigWarning):
        cfg = KTODataConfig(train_file=str(p), buffer_size=2, max_samples_in_memory=1, validation_split_percentage=0)
    plain = KTODataConfig(train_file=str(p), validation_split_percentage=0)
    assert load_records(cfg, kind="unpaired").train == load_records(plain, kind="unpaired").train


def test_every_data_field_has_help_text_and_the_docstring_names_no_missing_flag():
    missing = [n for n, f in KTODataConfig.model_fields.items() if not (f.description or "").strip()]
    assert missing == []
    assert all((f.description or "").strip() for f in DataUtilityConfig.model_fields.values())
    assert "--help-fields" not in (schema.__doc__ or "")


# ---- label mappings -----------------------------------------------------------------
def test_arabic_label_mapping_default_override_and_precedence(tmp_path):
    assert KTODataConfig().arabic_label_mapping == {
        "جيد": "good",
        "ممتاز": "good",
        "مقبول": "good",
        "سيء": "bad",
        "ضعيف": "bad",
        "مرفوض": "bad",
    }
    rows = [
        {"prompt": "q", "completion": "c1", "label": "مقبول"},
        {"prompt": "q", "completion": "c2", "label": "مَقبول"},  # with a harakah: same word once cleaned
        {"prompt": "q", "completion": "c3", "label": "رائع"},
        {"prompt": "q", "completion": "c4", "label": "ممتاز"},
    ]
    p = write_jsonl(tmp_path / "ar.jsonl", rows)
    rep = inspect_file(p)
    assert rep["accepted"] == 3 and rep["rejected"][0]["code"] == "unknown_label"  # رائع is unknown by default
    assert labels_of(p, arabic_label_mapping={"مقبول": "bad", "رائع": "good"}) == {
        "c1": False,
        "c2": False,
        "c3": True,
        "c4": True,
    }  # seed 001's custom loader treats مقبول as bad
    # label_mapping wins over arabic_label_mapping
    assert (
        labels_of(p, arabic_label_mapping={"مقبول": "bad", "رائع": "bad"}, label_mapping={"رائع": True})["c3"] is True
    )


def test_label_mapping_values_may_be_bools_ints_or_words(tmp_path):
    cfg = KTODataConfig(
        label_mapping={
            "ok": "good",
            "nah": "bad",
            "fine": 1,
            "nope": 0,
            "sure": True,
            "hmm": False,
            "aywa": "نعم",
            "meh": "0",
        }
    )
    assert cfg.label_mapping == {
        "ok": True,
        "nah": False,
        "fine": True,
        "nope": False,
        "sure": True,
        "hmm": False,
        "aywa": True,
        "meh": False,
    }
    assert all(type(v) is bool for v in cfg.label_mapping.values())
    rows = [{"prompt": "q", "completion": w, "label": w} for w in ("ok", "nah", "fine", "nope", "aywa")]
    p = write_jsonl(tmp_path / "w.jsonl", rows)
    # "nah": "bad" must be undesirable (bool("bad") would have made it desirable)
    assert labels_of(p, label_mapping=cfg.label_mapping) == {
        "ok": True,
        "nah": False,
        "fine": True,
        "nope": False,
        "aywa": True,
    }
    # the resolved config round-trips through YAML
    run = loads_config("data:\n  label_mapping: {ok: good, nah: bad}\n")
    assert run.data.label_mapping == {"ok": True, "nah": False}
    assert loads_config(dump_config(run)) == run


@pytest.mark.parametrize(
    "mapping, key",
    [
        ({"label_mapping": {"meh": "maybe"}}, "label_mapping['meh']"),
        ({"label_mapping": {"two": 2}}, "label_mapping['two']"),
        ({"label_mapping": {"  ": True}}, "label_mapping['  ']"),
        ({"arabic_label_mapping": {"جيد": "حسن"}}, "arabic_label_mapping['جيد']"),
    ],
)
def test_unusable_mapping_value_is_a_validation_error_naming_the_key(mapping, key):
    with pytest.raises(ValidationError) as e:
        KTODataConfig(**mapping)
    assert key in str(e.value)
    section = next(iter(mapping))
    yaml_text = f"data:\n  {section}: {json.dumps(mapping[section], ensure_ascii=False)}\n"
    with pytest.raises(ConfigError) as e:
        loads_config(yaml_text)
    assert str(e.value).startswith(f"<string>:2: data.{section}") and key in str(e.value)


# ---- data.kto_specific drives the utility filter ------------------------------------
def test_kto_specific_alpha_and_lambda_drive_the_utility_filter(tmp_path):
    q = response_quality("ok")  # 0.5067 (see test_data_pipeline)
    rows = [
        {"prompt": "Q1", "completion": "ok", "label": False},  # -2.25 * (1-q)**0.88 = -1.208
        {"prompt": "Q2", "completion": "ok", "label": True},
    ]  # q**0.88 = 0.550
    p = write_jsonl(tmp_path / "u.jsonl", rows)
    bounds = dict(filter_low_utility=True, min_utility_threshold=-1.0, max_utility_threshold=0.52)
    default = inspect_file(p, KTODataConfig(**bounds))
    assert [r["row"] for r in default["rejected"]] == [1, 2]
    assert default["filters"]["settings"]["utility_params"] == {"alpha": 0.88, "lambda_param": 2.25}
    # lambda 1: -(1-q)**0.88 = -0.537 is inside [-1, 0.52]; alpha 2: q**2 = 0.257 too
    assert inspect_file(p, KTODataConfig(**bounds, kto_specific={"lambda_param": 1.0}))["accepted"] == 1
    both = inspect_file(p, KTODataConfig(**bounds, kto_specific={"alpha": 2.0, "lambda_param": 1.0}))
    assert both["accepted"] == 2, (q, both["rejected"])
    # the YAML layout and --set reach it too, and the loss's parameters stay independent
    run = loads_config("data: {kto_specific: {alpha: 2.0}}\n", ["data.kto_specific.lambda_param=1.5"])
    assert (run.data.kto_specific.alpha, run.data.kto_specific.lambda_param) == (2.0, 1.5)
    assert (run.kto.kto_alpha, run.kto.kto_lambda) == (1.0, 2.25)


# ---- lazy_loading is streaming ------------------------------------------------------
def test_lazy_loading_means_streaming(tmp_path):
    cfg = KTODataConfig(lazy_loading=True)
    assert cfg.streaming is True and cfg.lazy_loading is None  # folded into streaming
    cfg.streaming = False  # a later assignment is not undone by the alias
    assert cfg.streaming is False
    cfg.lazy_loading = True
    assert cfg.streaming is True
    assert KTODataConfig(lazy_loading=False).streaming is False
    assert KTODataConfig(lazy_loading=True, streaming=True).streaming is True
    with pytest.raises(ValidationError, match="lazy_loading .* and streaming .* are one setting"):
        KTODataConfig(lazy_loading=True, streaming=False)
    run = loads_config("data: {lazy_loading: true}\n")
    assert run.data.streaming is True and loads_config(dump_config(run)) == run
    # a resolved config reloaded with an override of streaming (a sweep point) takes the override
    assert config_with_overrides(run, ["data.streaming=false"]).data.streaming is False
    # and the loader streams
    p = write_jsonl(
        tmp_path / "d.jsonl", [{"prompt": "q", "completion": f"a{i}", "label": i % 2 == 0} for i in range(4)]
    )
    import datasets

    from prospect.data import KTODataLoader

    ds = KTODataLoader(KTODataConfig(train_file=str(p), lazy_loading=True)).load_dataset("train")
    assert isinstance(ds, datasets.IterableDataset)


# ---- kto.max_completion_length / max_target_length -----------------------------------
def test_max_completion_length_is_folded_and_never_resets_a_later_value():
    k = KTOSpecificConfig(max_completion_length=200)
    assert (k.max_target_length, k.max_completion_length) == (200, None)
    k.max_target_length = 100  # was reset to 200 by the old validator
    assert k.max_target_length == 100
    k.max_completion_length = 300  # assigning the alias later wins as well
    assert (k.max_target_length, k.max_completion_length) == (300, None)
    assert KTOSpecificConfig(max_completion_length=64, max_target_length=64).max_target_length == 64
    with pytest.raises(
        ValidationError, match=r"max_completion_length \(200\) and max_target_length \(100\) are one setting"
    ):
        KTOSpecificConfig(max_completion_length=200, max_target_length=100)


def test_max_target_length_override_is_not_silently_ignored():
    """kto.max_completion_length (TRL's name) is an alias of kto.max_target_length: the later setting wins."""
    file = "kto:\n  max_completion_length: 200\n"
    assert loads_config(file).kto.max_target_length == 200
    assert loads_config(file, ["kto.max_completion_length=100"]).kto.max_target_length == 100
    # the bug: --set kto.max_target_length=100 was silently replaced by the file's 200
    assert loads_config(file, ["kto.max_target_length=100"]).kto.max_target_length == 100
    with pytest.raises(
        ConfigError, match=r"<string>:2: kto.max_completion_length: conflicts with kto.max_target_length"
    ):
        loads_config("kto:\n  max_completion_length: 200\n  max_target_length: 100\n")
    # a resolved config reloaded with an override (how sweeps apply grid values) takes it, under either name
    run = loads_config(file)
    assert config_with_overrides(run, ["kto.max_target_length=64"]).kto.max_target_length == 64
    assert config_with_overrides(KTOConfig(), ["kto.max_completion_length=32"]).kto.max_target_length == 32


def test_dpo_max_completion_length_is_an_alias_resolved_before_overrides():
    """DPOSpecificConfig has no such field: `dpo.max_completion_length` is renamed by the alias table before
    --set is applied, so the later value wins and two values in one file are refused."""
    assert "max_completion_length" not in schema.DPOSpecificConfig.model_fields
    file = "dpo:\n  max_completion_length: 200\n"
    assert loads_config(file).dpo.max_target_length == 200
    assert loads_config(file, ["dpo.max_target_length=100"]).dpo.max_target_length == 100
    assert (
        loads_config("dpo: {max_target_length: 200}\n", ["dpo.max_completion_length=100"]).dpo.max_target_length == 100
    )
    with pytest.raises(ConfigError, match="conflicts with"):
        loads_config("dpo:\n  max_completion_length: 200\n  max_target_length: 100\n")
