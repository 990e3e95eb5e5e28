"""Per-category config overrides (`categories:` section, Config.for_category)."""
from __future__ import annotations

import json

import pytest
from conftest import REPO

from pipeline.config import config_from_dict, load_config, save_config
from pipeline.store.stamps import write_stamps

BASE = REPO / "configs" / "base.yaml"


def _child(tmp_path, text, name="child.yaml"):
    (tmp_path / "base.yaml").write_text(BASE.read_text())
    path = tmp_path / name
    path.write_text("base: base.yaml\n" + text)
    return path


SKIRT = "categories:\n  skirt:\n    model: {name: simplebaseline}\n    train: {epochs: 20, lr: 0.001}\n"


def test_for_category_merges_only_that_categorys_overrides(tmp_path):
    cfg = load_config(_child(tmp_path, "train:\n  epochs: 5\n" + SKIRT))
    skirt, dress = cfg.for_category("skirt"), cfg.for_category("dress")
    assert (skirt.model.name, skirt.train.epochs, skirt.train.lr) == ("simplebaseline", 20, 0.001)
    assert isinstance(skirt.train.lr, float)
    assert skirt.train.batch_size == cfg.train.batch_size and skirt.model.width == cfg.model.width
    assert (dress.model.name, dress.train.epochs) == (cfg.model.name, 5)
    assert skirt.categories == {} and dress.categories == {}
    # a category without overrides resolves to the base config's settings
    assert dress.stage_settings("train") == cfg.stage_settings("train")


def test_cli_override_reaches_one_category():
    cfg = load_config(REPO / "configs" / "demo.yaml", ["categories.dress.train.ohkm_topk=4"])
    assert cfg.for_category("dress").train.ohkm_topk == 4
    assert cfg.for_category("blouse").train.ohkm_topk == 0


@pytest.mark.parametrize("text,words", [
    ("categories:\n  skirt:\n    train: {epoch: 3}\n", "'categories.skirt.train.epoch'"),
    ("categories:\n  skirt:\n    trian: {epochs: 3}\n", "'categories.skirt.trian'"),
    ("categories:\n  shirt:\n    train: {epochs: 3}\n", "unknown category 'categories.shirt'"),
    ("categories:\n  skirt:\n    model: {name: resnet}\n", "categories.skirt.model.name='resnet'"),
    ("categories:\n  skirt:\n    train: {epochs: many}\n", "categories.skirt.train.epochs='many'"),
    ("categories:\n  skirt:\n    model: {input_size: 256}\n", "categories.skirt.model.input_size cannot be set"),
    ("categories:\n  skirt:\n    model: {margin: 8}\n", "categories.skirt.model.margin cannot be set"),
    ("categories:\n  skirt:\n    data: {folds: 2}\n", "'categories.skirt.data' cannot be set per category"),
    ("categories:\n  skirt:\n    model: {stride: 3}\n", "(categories.skirt): model.input_size must be a multiple"),
])
def test_bad_overrides_name_the_key_and_file(tmp_path, text, words):
    path = _child(tmp_path, text)
    with pytest.raises(ValueError) as err:
        load_config(path)
    assert words in str(err.value) and str(path) in str(err.value)


def test_saved_config_round_trips_with_categories(tmp_path):
    cfg = load_config(_child(tmp_path, SKIRT))
    save_config(cfg, tmp_path / "saved.yaml")
    import yaml

    back = config_from_dict(yaml.safe_load((tmp_path / "saved.yaml").read_text()))
    assert back == cfg and back.for_category("skirt") == cfg.for_category("skirt")


def test_an_override_change_restamps_only_its_category(tmp_path):
    """train-<cat>.json stamps (make's prerequisites of that category's models) hold the category's
    resolved settings: editing skirt's override rewrites skirt's stamp alone."""
    out = tmp_path / "out"
    first = write_stamps(out, "r", load_config(_child(tmp_path, SKIRT)))
    assert all(first[f"train-{c}"] for c in ("skirt", "dress"))
    stamp = json.loads((out / "runs" / "r" / ".stamps" / "train-skirt.json").read_text())
    assert stamp["model"]["name"] == "simplebaseline" and stamp["train"]["epochs"] == 20
    changed = write_stamps(out, "r", load_config(_child(tmp_path, SKIRT.replace("20", "21"))))
    assert changed["train-skirt"] and not any(changed[f"train-{c}"] for c in ("blouse", "outwear", "dress", "trousers"))
    assert not changed["train"]  # the run-level train stamp holds the base settings
    assert changed["predict"] is False  # predict settings of skirt are unchanged
    changed = write_stamps(out, "r", load_config(_child(
        tmp_path, SKIRT.replace("20", "21") + "    predict: {merge: coords}\n")))
    assert changed["predict"] and not changed["train-skirt"]


def test_train_and_predict_use_the_category_config(tmp_path, monkeypatch):
    """The stage entry points resolve the category's config before anything else."""
    from pipeline.fit import trainer as train
    from pipeline.heatmap import oof as predict

    seen = {}

    def fake_locked(output, cfg, run, category, fold, out, force, devices):
        seen["train"] = cfg
        return {}

    monkeypatch.setattr(train, "_train_locked", fake_locked)
    cfg = load_config(_child(tmp_path, SKIRT))
    train.train(tmp_path / "o", cfg, "r", "skirt", 0)
    assert seen["train"] == cfg.for_category("skirt")
    with pytest.raises(FileNotFoundError, match="missing model"):  # resolved first, then the model is looked up
        predict.predict_fold(tmp_path / "o", cfg, "r", "skirt", 0, None, None, None)
