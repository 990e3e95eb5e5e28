"""Stage dependencies are checked against what the stage reads (pipeline.config.recording).

A stage records (in its stamps and records) the settings of STAGE_SETTINGS; while it runs, every
setting it reads is noted, and one that neither its own settings, UNRECORDED nor its upstream
stages cover fails (the tests run strict: conftest sets PIPELINE_STRICT_SETTINGS=1).
"""
import ast
import dataclasses
import threading
from pathlib import Path

import pytest
from conftest import good_dataset

from pipeline import config as config_module
from pipeline.config import (
    STAGE_SETTINGS,
    UNRECORDED,
    UPSTREAM,
    Config,
    UncoveredSetting,
    covered_settings,
    load_config,
    recording,
)

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "configs" / "demo.yaml"


def test_reads_are_noted_and_bookkeeping_is_not_a_read():
    cfg = load_config(DEMO)
    with recording("ensemble", strict=True) as reads:
        cfg.ensemble.name
        cfg.to_dict(), cfg.digest(), cfg.stage_settings("train"), cfg.for_category("dress")
    assert reads == {("ensemble", "name")}
    cfg.train.epochs  # outside a recording nothing is noted
    assert reads == {("ensemble", "name")}


def test_an_uncovered_read_fails_naming_the_setting_and_the_stage():
    cfg = load_config(DEMO)
    with pytest.raises(UncoveredSetting, match=r"stage prep read train\.epochs.*STAGE_SETTINGS\['prep'\]"):
        with recording("prep", strict=True):
            cfg.train.epochs


def test_not_strict_an_uncovered_read_is_one_warning_line(capsys):
    with recording("prep", strict=False):
        load_config(DEMO).model.width
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("warning: stage prep read model.width")


def test_reads_from_other_threads_count():
    """tf.data and Keras read settings from their own threads."""
    cfg = load_config(DEMO)
    with pytest.raises(UncoveredSetting, match="augment.rotation"):
        with recording("prep", strict=True):
            worker = threading.Thread(target=lambda: cfg.augment.rotation)
            worker.start()
            worker.join()


def test_own_unrecorded_and_upstream_settings_are_covered():
    cfg = load_config(DEMO)
    with recording("predict", strict=True) as reads:
        cfg.predict.flip_tta      # its own
        cfg.predict.batch_size    # speed only
        cfg.model.input_size      # prep's (the cache it reads)
        cfg.train.epochs          # train's (the models it reads)
        cfg.crop.enabled          # decides the crop section of its settings
    assert len(reads) == 5
    assert ("train", "epochs") not in covered_settings("prep")  # upstream only, never downstream
    assert ("train", "epochs") in covered_settings("ensemble")  # through the predictions it averages


def test_tables_name_real_settings():
    sections = {f.name: {g.name for g in dataclasses.fields(getattr(Config(), f.name))}
                for f in dataclasses.fields(Config) if f.name not in ("name", "categories")}
    for table in (STAGE_SETTINGS, UNRECORDED):
        for stage, by_section in table.items():
            for section, keys in by_section.items():
                assert keys == "*" or set(keys) <= sections[section], (stage, section, keys)
    assert set(STAGE_SETTINGS) <= set(UPSTREAM)
    for stage, ups in UPSTREAM.items():
        assert set(ups) <= set(STAGE_SETTINGS), stage


def test_the_recorded_settings_leave_out_exactly_the_unrecorded_ones():
    cfg = load_config(DEMO)
    train = cfg.stage_settings("train")["train"]
    assert "threads" not in train and "checkpoint_s" not in train and "epochs" in train
    assert "batch_size" not in cfg.stage_settings("predict")["predict"]


def test_codec_refine_is_read_by_train_but_recorded_by_predict_only():
    """Validation decodes with codec.refine (val NE picks the best epoch): train may read it, but a
    decoding edit re-predicts and never retrains (an UNRECORDED setting of train)."""
    assert ("codec", "refine") in covered_settings("train")
    a, b = load_config(DEMO), load_config(DEMO, ["codec.refine=none"])
    assert a.stage_settings("train") == b.stage_settings("train")
    assert a.stage_settings("predict") != b.stage_settings("predict")


def _stage_modules():
    stage_of = {"preprocess": "prep", "train": "train", "predict": "predict", "ensemble": "ensemble",
                "stack": "stack", "submit": "submit", "score": "score", "baseline": "baseline",
                "report": "report"}
    return stage_of


@pytest.mark.parametrize("module, stage", sorted(_stage_modules().items()))
def test_every_cached_stage_runs_inside_its_recording(module, stage):
    tree = ast.parse((ROOT / "pipeline" / "stages" / f"{module}.py").read_text())
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "recording"]
    assert [c.args[0].value for c in calls] == [stage]


def test_a_stage_reading_a_setting_nobody_recorded_fails(tmp_path, monkeypatch):
    """The deliberate miss: take data.fold_seed out of prep's settings; the real preprocess stage,
    which reads it, now fails (and passes with the table as it is)."""
    from pipeline.stages import preprocess

    good_dataset(tmp_path / "input", per_cat=2, warm_per_cat=0)
    args = ["--input", str(tmp_path / "input"), "--output", str(tmp_path / "out"), "--config", str(DEMO),
            "--set", "data.folds=2", "--set", "data.jobs=1"]
    assert preprocess.main(args) == 0
    missed = {**STAGE_SETTINGS, "prep": {"data": ("folds", "fold_models"), "model": ("input_size", "margin")}}
    monkeypatch.setattr(config_module, "STAGE_SETTINGS", missed)
    with pytest.raises(UncoveredSetting, match=r"stage prep read data\.fold_seed"):
        preprocess.main(args)
