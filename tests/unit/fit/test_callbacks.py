"""ema_weights and train.ema (pipeline/fit/callbacks.py, pipeline/fit/trainer.py)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[3]


def _dense(use_ema: bool, momentum: float = 0.5):
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(keras.optimizers.Adam(0.1, use_ema=use_ema, ema_momentum=momentum), "mse")
    return model


def _weights(model):
    return [v.numpy().copy() for v in model.trainable_variables]


def test_ema_weights_holds_the_moving_average_then_gives_the_training_weights_back():
    from pipeline.fit.callbacks import ema_weights

    model = _dense(True, momentum=0.5)
    rng = np.random.default_rng(0)
    x, y = rng.random((16, 3), np.float32), rng.random((16, 2), np.float32)
    expected = None
    for _ in range(5):
        model.train_on_batch(x, y)
        now = _weights(model)
        # the first step's average is the weights themselves, then 0.5 × average + 0.5 × weights
        expected = now if expected is None else [0.5 * e + 0.5 * w for e, w in zip(expected, now)]
    training = _weights(model)
    with ema_weights(model.optimizer):
        inside = _weights(model)
    for got, want, train in zip(inside, expected, training):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
        assert np.abs(got - train).max() > 1e-3  # an average, not the last step's weights
    for got, train in zip(_weights(model), training):
        np.testing.assert_array_equal(got, train)


def test_ema_weights_changes_nothing_without_an_average():
    from pipeline.fit.callbacks import ema_weights

    model = _dense(False)
    rng = np.random.default_rng(1)
    model.train_on_batch(rng.random((8, 3), np.float32), rng.random((8, 2), np.float32))
    before = _weights(model)
    with ema_weights(model.optimizer):
        for got, want in zip(_weights(model), before):
            np.testing.assert_array_equal(got, want)


def test_train_ema_gives_adam_a_moving_average_and_is_checked():
    from pipeline.config import load_config
    from pipeline.fit.trainer import build_trainer

    demo = ROOT / "configs" / "demo.yaml"
    on = build_trainer(load_config(demo, ["train.ema=0.99"]), 24)
    assert on.optimizer.use_ema and on.optimizer.ema_momentum == pytest.approx(0.99)
    assert not build_trainer(load_config(demo), 24).optimizer.use_ema
    with pytest.raises(ValueError, match="train.ema"):
        load_config(demo, ["train.ema=1.0"])
