"""pipeline.release.runtimes: a TFLite or ONNX model answers like its Keras original, at any batch size."""

import numpy as np
import pytest
from conftest import REPO as ROOT  # noqa: E402

from pipeline.config import load_config
from pipeline.keypoints import category_indices
from pipeline.models import build_model
from pipeline.release.runtimes import OnnxModel, TFLiteModel, convert, convert_onnx

pytestmark = pytest.mark.slow  # TFLite and ONNX conversions (~15 s each)


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


def test_a_mixed_precision_model_converts_through_its_float32_copy():
    """Trained under mixed_bfloat16 (what `precision: auto` picks on bf16 CPUs), a model keeps that
    policy; TFLite has no bfloat16 kernels. float32_model gives the same weights computing in
    float32, which converts and answers like the mixed model up to bfloat16 rounding."""
    from conftest import build_model_under

    from pipeline.release.runtimes import float32_model

    cfg = load_config(ROOT / "configs" / "demo.yaml", ["model.input_size=64", "model.width=16", "model.stages=2"])
    mixed = build_model_under("mixed_bfloat16", cfg, len(category_indices("skirt")))
    assert any(layer.dtype_policy.name == "mixed_bfloat16" for layer in mixed.layers)
    plain = float32_model(mixed)
    assert all(layer.dtype_policy.name == "float32" for layer in plain.layers)
    for a, b in zip(mixed.get_weights(), plain.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert float32_model(plain) is plain
    images = np.random.default_rng(1).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    lite = TFLiteModel(convert(mixed))  # converts the float32 copy
    want = plain.predict_on_batch(images)
    assert np.abs(lite.predict_on_batch(images) - want).max() < 1e-4
    assert np.abs(np.asarray(mixed.predict_on_batch(images), np.float32) - want).max() < 0.05
