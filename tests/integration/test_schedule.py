"""The training loop's clock: decaying learning-rate schedules (train.schedule cosine /
linear) and checkpoints written every train.checkpoint_s seconds."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.fit.resume import resume_key
from pipeline.fit.schedule import run_progress, scheduled_lr
from pipeline.tools import synth
from tests.integration.test_chain import tiny_config


@pytest.mark.parametrize("kind", ["cosine", "linear"])
def test_decay_runs_from_peak_to_floor_and_never_rises(kind):
    grid = np.linspace(0, 1, 101)
    lrs = np.array([scheduled_lr(p, 1e-2, 1e-5, kind) for p in grid])
    assert lrs[0] == pytest.approx(1e-2) and lrs[-1] == pytest.approx(1e-5)
    assert np.all(np.diff(lrs) <= 1e-15)
    mid = scheduled_lr(0.5, 1e-2, 1e-5, kind)
    assert mid == pytest.approx((1e-2 + 1e-5) / 2)  # both shapes cross the middle at half way
    # the cosine holds the LR higher early and lower late than the straight line
    assert scheduled_lr(0.25, 1.0, 0.0, "cosine") > scheduled_lr(0.25, 1.0, 0.0, "linear")
    assert scheduled_lr(0.75, 1.0, 0.0, "cosine") < scheduled_lr(0.75, 1.0, 0.0, "linear")


def test_warmup_ramps_up_then_decays_over_the_rest():
    assert scheduled_lr(0.0, 1.0, 0.0, "linear", warmup=0.2) == pytest.approx(0.0)
    assert scheduled_lr(0.1, 1.0, 0.0, "linear", warmup=0.2) == pytest.approx(0.5)
    assert scheduled_lr(0.2, 1.0, 0.0, "linear", warmup=0.2) == pytest.approx(1.0)
    assert scheduled_lr(0.6, 1.0, 0.0, "linear", warmup=0.2) == pytest.approx(0.5)
    assert scheduled_lr(1.5, 1.0, 0.1, "cosine", warmup=0.2) == pytest.approx(0.1)  # clamped past the end


def test_progress_follows_whichever_of_steps_and_clock_is_further():
    assert run_progress(10, 100, 5.0, 0) == pytest.approx(0.1)      # no budget: steps only
    assert run_progress(10, 100, 30.0, 60.0) == pytest.approx(0.5)  # the clock is ahead
    assert run_progress(90, 100, 30.0, 60.0) == pytest.approx(0.9)  # the steps are ahead


def test_decaying_schedule_starts_over_when_its_length_changes():
    plateau = resume_key(tiny_config("train.epochs=9"))
    assert plateau == resume_key(tiny_config())  # plateau: more epochs resume
    cos = "train.schedule=cosine"
    assert resume_key(tiny_config(cos, "train.epochs=9")) != resume_key(tiny_config(cos))
    assert resume_key(tiny_config(cos, "train.time_budget_s=30")) != resume_key(tiny_config(cos))
    assert resume_key(tiny_config(cos, "train.threads=1")) == resume_key(tiny_config(cos))


def test_bad_schedule_settings_are_refused():
    with pytest.raises(ValueError, match="train.schedule"):
        tiny_config("train.schedule=onecycle")
    with pytest.raises(ValueError, match="train.warmup"):
        tiny_config("train.warmup=1.0")


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """A tiny preprocessed dataset bound to run "cos" (no model trained)."""
    from pipeline.prep.preprocess import preprocess

    root = tmp_path_factory.mktemp("schedule")
    data, out = root / "input", root / "output"
    synth.generate(data, train_per_cat=6, test_per_cat=1, seed=5, jobs=1, progress=False)
    cfg = tiny_config()
    preprocess(data, out, cfg.model.input_size, cfg.data.folds, cfg.data.fold_seed, jobs=1, margin=cfg.model.margin,
               run="cos")
    return out


def test_training_sets_the_scheduled_lr_before_every_step(prepared):
    """2 epochs × 3 steps, no time budget: the LR logged after epoch e is the one the
    schedule gives at the epoch's last step (step 2 and 5 of 6)."""
    from pipeline.fit.trainer import train

    cfg = tiny_config("train.schedule=cosine", "train.lr=0.004", "train.min_lr=0.0001", "train.time_budget_s=0")
    m = train(prepared, cfg, "cos", "trousers", 1)
    hist = pd.read_csv(prepared / "runs/cos/trousers/fold1/history.csv")
    expected = [scheduled_lr(step / 6, 0.004, 0.0001, "cosine") for step in (2, 5)]
    np.testing.assert_allclose(hist["lr"], expected, rtol=1e-5)
    assert m["lr"] == pytest.approx(0.004)  # metrics keep the peak (scaled) LR


def test_sparse_checkpoints_still_save_the_best_epoch(prepared, monkeypatch):
    """checkpoint_s far above the run: nothing is written until the end; then model.keras
    holds the best epoch's weights (epoch 2 of 4 here, by a scripted val NE), not the last's,
    and the resume state the finished run."""
    import json

    from pipeline.fit import callbacks
    from pipeline.fit import trainer as train_module
    from pipeline.heatmap.inference import load_model

    scripted, seen = iter([0.5, 0.3, 0.4, 0.6]), []

    def fake_validation(model, data, cfg, forward=None):
        seen.append([w.copy() for w in model.get_weights()])
        return next(scripted)

    monkeypatch.setattr(callbacks, "validation_ne", fake_validation)
    cfg = tiny_config("train.epochs=4", "train.checkpoint_s=1000000")
    m = train_module.train(prepared, cfg, "cos", "skirt", 0)
    fold = prepared / "runs/cos/skirt/fold0"
    state = json.loads((fold / "resume/state.json").read_text())
    assert state["epoch"] == 4 and state["finished"] and m["val_ne"] == 0.3 and m["best_epoch"] == 2
    saved = load_model(fold / "model.keras").get_weights()
    assert len(seen) == 4 and not all(np.array_equal(a, b) for a, b in zip(seen[1], seen[3]))
    for a, b in zip(saved, seen[1]):
        np.testing.assert_array_equal(a, b)


def test_a_model_being_trained_refuses_a_second_trainer(tmp_path):
    """The fold's lock: a second trainer stops at once naming the directory; free again after."""
    from pipeline.fit.resume import model_lock
    from pipeline.fsutil import file_lock

    with model_lock(tmp_path):
        with pytest.raises(RuntimeError, match=f"{tmp_path} is being trained by another process"):
            with model_lock(tmp_path):
                pass
        with pytest.raises(BlockingIOError):
            with file_lock(tmp_path / ".lock", wait=False):
                pass
    with model_lock(tmp_path):
        pass
