"""Validation forward pass of pipeline.stages.train: the traced forward gives the eager call's maps."""
import numpy as np
import pytest

from pipeline.config import load_config
from pipeline.heatmap.inference import compiled_forward, even_batches, predict_heatmaps
from pipeline.models import build_model


@pytest.mark.parametrize("n, batch_size, expected", [(54, 32, 27), (64, 32, 32), (5, 32, 5), (33, 32, 17), (1, 1, 1)])
def test_even_batches_split_without_a_mostly_padded_last_batch(n, batch_size, expected):
    bs = even_batches(n, batch_size)
    assert bs == expected
    batches = -(-n // bs)
    assert batches == -(-n // batch_size)          # no more model calls than batch_size gives
    assert batches * bs - n < batches              # padding: under one image per batch


def test_traced_forward_matches_the_eager_call_and_traces_once():
    cfg = load_config("configs/demo.yaml", ["model.name=cpm", "model.input_size=64", "model.width=8",
                                            "model.stages=2"])
    model = build_model(cfg, 5)
    images = np.random.default_rng(1).integers(0, 255, (7, 64, 64, 3), dtype=np.uint8)
    forward = compiled_forward(model)
    traced = predict_heatmaps(model, images, 3, forward)        # batches of 3, 3, 1 padded to 3
    eager = predict_heatmaps(model, images, 3)
    one_by_one = np.concatenate([np.asarray(model(images[i:i + 1], training=False))[:, -1] for i in range(7)])
    assert traced.shape == (7, 16, 16, 5)
    np.testing.assert_allclose(traced, eager, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(traced, one_by_one, rtol=1e-4, atol=1e-6)  # padding leaves real rows alone
    assert forward.experimental_get_tracing_count() == 1
