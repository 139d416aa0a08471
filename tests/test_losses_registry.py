"""The method registry (`@register_method`) agrees with the method table, and the loss files stay small."""

from __future__ import annotations

from pathlib import Path

import pytest

import prospect.losses as losses
from prospect.config.methods import LOSS_TYPES, METHODS
from prospect.config.schema import RunConfig
from prospect.errors import ConfigError
from prospect.losses import base

LOSSES_DIR = Path(losses.__file__).parent


def test_registries_are_the_method_table():
    assert set(losses.method_names()) == set(METHODS)
    assert set(losses.unpaired_loss_names()) == set(LOSS_TYPES["kto"])
    assert set(losses.paired_loss_names()) == set(LOSS_TYPES["dpo"])
    for name in METHODS:  # every row builds a loss of its kind
        assert losses.build_loss(RunConfig(method=name)).kind == METHODS[name].kind


def test_a_builder_without_a_table_row_is_caught():
    @base.register_method("not_in_the_table")
    def build(cfg):  # pragma: no cover - never called
        raise AssertionError

    try:
        with pytest.raises(RuntimeError, match="not_in_the_table"):
            losses._check_registries()
    finally:
        del base._METHODS["not_in_the_table"]
    losses._check_registries()


def test_a_method_registered_twice_is_refused():
    with pytest.raises(RuntimeError, match="registered twice"):
        base.register_method("dpo")(lambda cfg: None)


def test_unknown_method_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown method 'nope'"):
        base.method_builder("nope")


def test_no_loss_file_over_400_lines():
    sizes = {p.name: len(p.read_text(encoding="utf-8").splitlines()) for p in LOSSES_DIR.glob("*.py")}
    assert max(sizes.values()) <= 400, sizes
