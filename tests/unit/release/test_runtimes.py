"""pipeline.runtimes: a TFLite or ONNX model answers like its Keras original, at any batch size."""

import numpy as np
import pytest
from conftest import REPO as ROOT  # noqa: E402

from pipeline.config import load_config
from pipeline.keypoints import category_indices
from pipeline.models import build_model
from pipeline.release.runtimes import OnnxModel, TFLiteModel, convert, convert_onnx


@pytest.mark.parametrize("runtime", ["tflite", "onnx"])
def test_converted_model_matches_keras_and_resizes_its_batch(runtime):
    cfg = load_config(ROOT / "configs" / "demo.yaml", ["model.input_size=64", "model.width=16", "model.stages=2"])
    model = build_model(cfg, len(category_indices("skirt")))
    lite = TFLiteModel(convert(model)) if runtime == "tflite" else OnnxModel(convert_onnx(model))
    assert lite.output_shape == tuple(model.output_shape)
    rng = np.random.default_rng(0)
    for n in (3, 1, 3):  # a new batch size reallocates; going back works too
        images = rng.integers(0, 256, (n, 64, 64, 3), dtype=np.uint8)
        want = model.predict_on_batch(images)
        got = lite.predict_on_batch(images)
        assert got.shape == want.shape and got.dtype == np.float32
        assert np.abs(got - want).max() < 1e-4
