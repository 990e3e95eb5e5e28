"""Every head of the registry: shapes, dtypes, softmax maps, save/load, flip TTA (tiny sizes, CPU)."""
import numpy as np
import pytest

from pipeline.config import _CHOICES, load_config
from pipeline.keypoints import category_flip_index
from pipeline.models import MODELS, build_model

HEADS = sorted(MODELS)
SIZE = 64


def cfg_with(*overrides):
    return load_config("configs/demo.yaml", [f"model.input_size={SIZE}", "model.width=16"] + list(overrides))


def expected_outputs(name, stages, stride=4, deep_stride=32):
    """T of each head: CPM stages, hourglass stacks, one deconv output, CPN levels + RefineNet."""
    levels = int(np.log2(deep_stride // stride)) + 1
    return {"cpm": stages, "hourglass": stages, "simplebaseline": 1, "cpn": levels + 1}[name]


def test_config_choices_are_the_registry():
    assert set(_CHOICES[("model", "name")]) == set(MODELS)
    with pytest.raises(ValueError, match="model.name"):
        cfg_with("model.name=resnet")


@pytest.mark.parametrize("policy", ["float32", "mixed_bfloat16"])
@pytest.mark.parametrize("name", HEADS)
def test_head_outputs_float32_maps_of_every_supervised_output(name, policy):
    import keras

    stages = 2
    cfg = cfg_with(f"model.name={name}", f"model.stages={stages}")
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(policy)
    try:
        model = build_model(cfg, 5)
    finally:
        keras.mixed_precision.set_global_policy(previous)
    out = model.predict_on_batch(np.zeros((2, SIZE, SIZE, 3), np.uint8))
    assert out.shape == (2, expected_outputs(name, stages), SIZE // 4, SIZE // 4, 5)
    assert out.dtype == np.float32


@pytest.mark.parametrize("name", ["hourglass", "cpn", "simplebaseline"])
def test_deep_stride_sets_depth(name):
    """deep_stride 16 instead of 32: one level less (CPN), still stride-4 maps for every head."""
    cfg = cfg_with(f"model.name={name}", "model.deep_stride=16", "model.stages=3")
    model = build_model(cfg, 3)
    assert model.output_shape == (None, expected_outputs(name, 3, deep_stride=16), SIZE // 4, SIZE // 4, 3)


@pytest.mark.parametrize("bad", [("model.deep_stride=2",), ("model.deep_stride=24",),
                                 ("model.input_size=48", "model.deep_stride=32")])
def test_deep_stride_errors_name_the_keys(bad):
    with pytest.raises(ValueError, match="deep_stride"):
        build_model(cfg_with("model.name=cpn", *bad), 3)


@pytest.mark.parametrize("name", HEADS)
def test_softmax_maps_are_distributions(name):
    x = np.random.default_rng(0).integers(0, 255, (2, SIZE, SIZE, 3), dtype=np.uint8)
    soft = build_model(cfg_with(f"model.name={name}", "train.loss=softmax_ce"), 4).predict_on_batch(x)
    np.testing.assert_allclose(soft.sum(axis=(2, 3)), 1.0, rtol=1e-3)
    raw = build_model(cfg_with(f"model.name={name}", "train.loss=mse"), 4).predict_on_batch(x)
    assert not np.allclose(raw.sum(axis=(2, 3)), 1.0, rtol=1e-3)


@pytest.mark.parametrize("name", HEADS)
def test_head_round_trips_through_save_and_load(name, tmp_path):
    import keras

    model = build_model(cfg_with(f"model.name={name}", "model.stages=2"), 3)
    x = np.random.default_rng(1).integers(0, 255, (2, SIZE, SIZE, 3), dtype=np.uint8)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path, compile=False)
    np.testing.assert_allclose(loaded.predict_on_batch(x), model.predict_on_batch(x), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", HEADS)
def test_flip_tta_makes_the_head_flip_equivariant(name):
    """predict_images with flip TTA: the mirrored image's merged maps are the mirrored (and left/right
    swapped) merged maps of the original, and its keypoints the mirrored keypoints."""
    from pipeline.predict import predict_images

    cat = "trousers"
    flip = category_flip_index(cat)
    cfg = cfg_with(f"model.name={name}", "model.stages=2", "predict.flip_tta=true", "predict.merge=heatmap")
    model = build_model(cfg, len(flip))
    images = np.random.default_rng(2).integers(0, 255, (3, SIZE, SIZE, 3), dtype=np.uint8)
    params = np.tile([1.0, 1.0, 0.0, 0.0], (3, 1))  # original pixels = input pixels
    plain = predict_images(model, images, params, cfg, flip, return_heatmaps=True)
    mirrored = predict_images(model, images[:, :, ::-1], params, cfg, flip, return_heatmaps=True)
    expected = plain["heatmaps"][:, :, ::-1][..., flip]
    np.testing.assert_allclose(mirrored["heatmaps"], expected, rtol=1e-4, atol=1e-7)
    xy = plain["xy"][:, flip].copy()
    xy[..., 0] = SIZE - 1 - xy[..., 0]
    np.testing.assert_allclose(mirrored["xy"], xy, atol=1e-3)
    # the plain pass alone is not equivariant (the test would notice a broken merge)
    assert not np.allclose(mirrored["xy_plain"], np.where([True, False], SIZE - 1, 0)
                           + np.where([True, False], -1, 1) * plain["xy_plain"][:, flip], atol=1e-3)
