"""YAML configs → frozen dataclasses (pipeline/config.py)."""
from __future__ import annotations

import dataclasses

import pytest
import yaml
from conftest import REPO, run_module

from pipeline.config import (
    Config,
    config_from_dict,
    load_config,
    parse_overrides,
    save_config,
)
from pipeline.keypoints import CATEGORIES

DEMO = REPO / "configs" / "demo.yaml"
BASE = REPO / "configs" / "base.yaml"


def test_demo_inherits_base():
    demo, base = load_config(DEMO), load_config(BASE)
    assert demo.name == "demo" and base.name == "base"
    raw = yaml.safe_load(DEMO.read_text())
    assert raw.pop("base") == "base.yaml"
    raw.pop("name", None)
    raw_base = yaml.safe_load(BASE.read_text())
    d, b = demo.to_dict(), base.to_dict()
    overridden = 0
    for section, values in b.items():
        if section == "name":
            continue
        for key, value in values.items():
            if key in raw.get(section, {}):  # set by demo.yaml itself
                assert d[section][key] == pytest.approx(raw[section][key]), (section, key)
                overridden += 1
            else:  # everything else comes from base.yaml
                assert d[section][key] == value, (section, key)
                if key in raw_base.get(section, {}):
                    assert value == pytest.approx(raw_base[section][key]) or isinstance(value, list)
    assert overridden >= 1
    assert demo.data.categories == CATEGORIES
    assert isinstance(demo.train.lr, float) and isinstance(demo.train.min_lr, float)
    assert base.heatmap_size == base.model.input_size // base.model.stride


def test_child_overrides_only_what_it_sets(tmp_path):
    child = _child(tmp_path, "model:\n  width: 8\ntrain:\n  epochs: 2\n")
    cfg, base = load_config(child), load_config(tmp_path / "base.yaml")
    assert cfg.name == "child"
    assert cfg.model.width == 8 and cfg.train.epochs == 2
    assert cfg.model.input_size == base.model.input_size and cfg.train.lr == base.train.lr
    assert cfg.codec == base.codec


def _child(tmp_path, text, name="child.yaml"):
    (tmp_path / "base.yaml").write_text(BASE.read_text())
    path = tmp_path / name
    path.write_text("base: base.yaml\n" + text)
    return path


def test_unknown_key_rejected_naming_dotted_key_and_file(tmp_path):
    path = _child(tmp_path, "train:\n  epochs: 2\n  epoch: 3\n")
    with pytest.raises(ValueError) as err:
        load_config(path)
    assert "'train.epoch'" in str(err.value) and str(path) in str(err.value)

    path = _child(tmp_path, "trian:\n  epochs: 2\n", "typo.yaml")
    with pytest.raises(ValueError, match="'trian'") as err:
        load_config(path)
    assert str(path) in str(err.value)


def test_unknown_key_in_parent_names_the_parent(tmp_path):
    (tmp_path / "parent.yaml").write_text("model:\n  widht: 3\n")
    child = tmp_path / "child.yaml"
    child.write_text("base: parent.yaml\ntrain:\n  epochs: 1\n")
    with pytest.raises(ValueError, match="model.widht") as err:
        load_config(child)
    assert str(tmp_path / "parent.yaml") in str(err.value)


def test_cli_overrides_applied_and_typed():
    cfg = load_config(DEMO, ["train.epochs=3", "train.lr=0.01", "augment.flip=false", "codec.refine=quarter",
                             "data.categories=[skirt, dress]", "model.weights=null", "train.min_lr=1e-4"])
    assert cfg.train.epochs == 3 and type(cfg.train.epochs) is int
    assert cfg.train.lr == 0.01
    assert cfg.train.min_lr == pytest.approx(1e-4) and type(cfg.train.min_lr) is float
    assert cfg.augment.flip is False
    assert cfg.codec.refine == "quarter"
    assert cfg.data.categories == ("skirt", "dress")
    assert cfg.model.weights is None
    assert load_config(DEMO, ["train.lr=1"]).train.lr == 1.0  # int where float expected: converted
    assert type(load_config(DEMO, ["train.lr=1"]).train.lr) is float


@pytest.mark.parametrize("override,words", [
    ("codec.refine=foo", "codec.refine='foo'"),
    ("train.epochs=three", "train.epochs"),
    ("train.epochs=2.5", "train.epochs"),
    ("augment.flip=maybe", "augment.flip"),
    ("train.epoch=3", "'train.epoch'"),
    ("data.categories=[hat]", "hat"),
    ("model.stride=5", "multiple"),
])
def test_bad_overrides_rejected(override, words):
    with pytest.raises(ValueError) as err:
        load_config(DEMO, [override])
    assert words in str(err.value)


def test_override_needs_equals():
    with pytest.raises(ValueError, match="section.key=value"):
        parse_overrides(["train.epochs"])
    assert parse_overrides(["train.epochs=3", "model.width=8"]) == {"train": {"epochs": 3}, "model": {"width": 8}}


def test_missing_file_and_circular_base(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_config(tmp_path / "nope.yaml")
    (tmp_path / "a.yaml").write_text("base: b.yaml\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\n")
    with pytest.raises(ValueError, match="circular"):
        load_config(tmp_path / "a.yaml")


def test_frozen():
    cfg = load_config(DEMO)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.train.epochs = 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.name = "x"


def test_save_config_round_trip(tmp_path):
    cfg = load_config(DEMO, ["train.epochs=3", "data.categories=[skirt]", "train.min_lr=1e-6"])
    save_config(cfg, tmp_path / "run" / "config.yaml")
    again = config_from_dict(yaml.safe_load((tmp_path / "run" / "config.yaml").read_text()))
    assert again == cfg
    assert again.digest() == cfg.digest()
    # a saved config is itself a loadable config file (name kept)
    assert load_config(tmp_path / "run" / "config.yaml") == cfg


def test_digest_stable_and_sensitive():
    a, b = load_config(DEMO), load_config(DEMO)
    assert a.digest() == b.digest() and len(a.digest()) == 10
    assert load_config(DEMO, ["train.epochs=13"]).digest() != a.digest()
    assert load_config(DEMO, ["codec.sigma=2.0"]).digest() != a.digest()
    assert Config().digest() == Config().digest()


def test_cli_prints_resolved_values():
    proc = run_module("pipeline.config", "--config", str(DEMO), "--set", "train.epochs=3", "--get", "train.epochs")
    assert proc.returncode == 0 and proc.stdout.strip() == "3"
    proc = run_module("pipeline.config", "--config", str(DEMO), "--get", "data.categories")
    assert proc.stdout.split() == list(CATEGORIES)
