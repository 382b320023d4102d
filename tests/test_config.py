"""Typed config: strict keys (closest match), types, --set parsing and precedence."""

from __future__ import annotations

import argparse

import pytest

from precipgen.config import (
    Config,
    ConfigError,
    load_config,
    parse_override,
    split_overrides,
)
from precipgen.steps import flags as cli


def test_defaults_match_configs_default_yaml():
    assert load_config() == Config()


def test_unknown_key_names_path_and_closest():
    with pytest.raises(ConfigError, match=r"unknown config key 'loss.lamda_ext' \(did you mean 'lambda_ext'\?\)"):
        load_config(overrides=["loss.lamda_ext=2"])
    with pytest.raises(ConfigError, match=r"unknown config key 'trian' \(did you mean 'train'\?\)"):
        load_config(overrides=["trian.epochs=2"])


def test_unknown_key_in_yaml_file(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("data:\n  heavy_percentil: 90\n")
    with pytest.raises(ConfigError, match=r"'data.heavy_percentil' \(did you mean 'heavy_percentile'"):
        load_config(f)


def test_wrong_type_names_key_and_expected_type():
    with pytest.raises(ConfigError, match=r"config key 'train.epochs': expected int, got str \('many'\)"):
        load_config(overrides=["train.epochs=many"])
    with pytest.raises(ConfigError, match=r"config key 'train.amp': expected bool, got int"):
        load_config(overrides=["train.amp=1"])
    with pytest.raises(ConfigError, match="config key 'data' must be a mapping"):
        load_config(overrides=["data=3"])


def test_set_values_parse_as_yaml():
    cfg = load_config(overrides=["loss.lambda_ext=5", "train.amp=false", "data.path=/x y",
                                 "data.heavy_percentile=99"])
    assert cfg.loss.lambda_ext == 5.0 and isinstance(cfg.loss.lambda_ext, float)
    assert cfg.train.amp is False
    assert cfg.data.path == "/x y"
    assert cfg.data.heavy_percentile == 99.0
    assert parse_override("a.b.c=[1, 2]") == {"a": {"b": {"c": [1, 2]}}}
    with pytest.raises(ConfigError, match="must look like section.key=value"):
        parse_override("loss.lambda_ext")


def test_value_checks():
    with pytest.raises(ConfigError, match=r"'model.prior': 'flat' is not one of"):
        load_config(overrides=["model.prior=flat"])
    with pytest.raises(ConfigError, match="data.val_fraction' \\+ 'data.test_fraction"):
        load_config(overrides=["data.val_fraction=0.6", "data.test_fraction=0.5"])
    with pytest.raises(ConfigError, match="config file not found"):
        load_config("/nonexistent/config.yaml")


def test_cli_precedence_file_then_overrides_then_set(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("loss:\n  lambda_ext: 1.5\n  beta_kl: 0.1\ntrain:\n  epochs: 7\n")
    args = argparse.Namespace(config=str(f), overrides="loss.lambda_ext=2,train.epochs=9",
                              set=["loss.lambda_ext=4"])
    cfg = cli.config_from_args(args)
    assert cfg.loss.lambda_ext == 4.0  # --set wins over --overrides
    assert cfg.train.epochs == 9  # --overrides wins over the file
    assert cfg.loss.beta_kl == 0.1  # file wins over defaults
    assert split_overrides("a=1  b=2,c=3") == ["a=1", "b=2", "c=3"]
    assert cli.empty_to_none("") is None and cli.empty_to_none("x") == "x"


def test_roundtrip_yaml_and_flat():
    cfg = load_config(overrides=["loss.lambda_ext=5"])
    assert cfg.flat()["loss.lambda_ext"] == 5.0
    f = cfg.to_yaml()
    assert "lambda_ext: 5.0" in f
