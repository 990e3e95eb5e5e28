"""Every head of the registry: shapes, dtypes, softmax maps, save/load, flip TTA (tiny sizes, CPU)."""
import numpy as np
import pytest
from conftest import build_model_under

from pipeline.config import _CHOICES, load_config
from pipeline.keypoints import category_flip_index
from pipeline.models import MODELS, build_model

HEADS = sorted(MODELS)
NEW_HEADS = [h for h in HEADS if h != "cpm"]  # CPM shapes and round trip: tests/unit/models/test_models.py
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


@pytest.fixture(scope="module")
def small_models():
    """One softmax model per head, built once (stages 2, deep_stride 16 keeps the graphs small)."""
    built = {}

    def get(name):
        if name not in built:
            cfg = cfg_with(f"model.name={name}", "model.stages=2", "model.deep_stride=16", "train.loss=softmax_ce")
            # float32 whatever an earlier test left as the global policy: bf16 maps of an untrained
            # model hold exact ties, and a tie's argmax is not mirror-symmetric
            built[name] = (cfg, build_model_under("float32", cfg, 7))
        return built[name]

    return get


@pytest.mark.parametrize("policy,loss,deep", [("float32", "mse", 32), ("mixed_bfloat16", "softmax_ce", 16)])
@pytest.mark.parametrize("name", NEW_HEADS)
def test_head_outputs_float32_maps_of_every_supervised_output(name, policy, loss, deep):
    """T outputs at stride 4 whatever deep_stride, float32 whatever the compute dtype; softmax maps
    are distributions over the cells, mse maps are not."""
    stages = 2
    cfg = cfg_with(f"model.name={name}", f"model.stages={stages}", f"model.deep_stride={deep}",
                   f"train.loss={loss}")
    model = build_model_under(policy, cfg, 5)
    x = np.random.default_rng(0).integers(0, 255, (2, SIZE, SIZE, 3), dtype=np.uint8)
    out = model.predict_on_batch(x)
    assert out.shape == (2, expected_outputs(name, stages, deep_stride=deep), SIZE // 4, SIZE // 4, 5)
    assert out.dtype == np.float32
    sums = out.sum(axis=(2, 3))
    if loss == "softmax_ce":
        np.testing.assert_allclose(sums, 1.0, rtol=2e-2)  # bf16 logits, float32 softmax
    else:
        assert not np.allclose(sums, 1.0, rtol=1e-3)


@pytest.mark.parametrize("bad", [("model.deep_stride=2",), ("model.deep_stride=24",),
                                 ("model.input_size=48", "model.deep_stride=32")])
def test_deep_stride_errors_name_the_keys(bad):
    with pytest.raises(ValueError, match="deep_stride"):
        build_model(cfg_with("model.name=cpn", *bad), 3)


@pytest.mark.slow  # saves and reloads every head (~8 s)
@pytest.mark.parametrize("name", NEW_HEADS)
def test_head_round_trips_through_save_and_load(name, small_models, tmp_path):
    import keras

    _, model = small_models(name)
    x = np.random.default_rng(1).integers(0, 255, (2, SIZE, SIZE, 3), dtype=np.uint8)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path, compile=False)
    np.testing.assert_allclose(loaded.predict_on_batch(x), model.predict_on_batch(x), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", HEADS)
def test_flip_tta_makes_the_head_flip_equivariant(name, small_models):
    """predict_images with flip TTA: the mirrored image's merged maps are the mirrored (and left/right
    swapped) merged maps of the original, and its keypoints the mirrored keypoints."""
    from pipeline.heatmap.inference import predict_images

    cat = "trousers"
    flip = category_flip_index(cat)
    cfg, model = small_models(name)
    assert cfg.predict.flip_tta and cfg.predict.merge == "heatmap" and model.output_shape[-1] == len(flip)
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


@pytest.mark.slow  # trains every head (~35 s)
@pytest.mark.parametrize("name", NEW_HEADS)
def test_head_learns_two_images(name):
    """Each head with its trainer (softmax CE, OHKM on) fits two images: the loss falls and the
    predicted peaks move to the targets."""
    import keras

    from pipeline.fit.trainer import make_trainer
    from pipeline.heatmap import codec

    keras.utils.set_random_seed(0)
    cfg = load_config("configs/demo.yaml", ["model.input_size=32", "model.width=16", "model.deep_stride=8",
                                            f"model.name={name}", "model.stages=1", "train.ohkm_topk=2"])
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (2, 32, 32, 3), dtype=np.uint8)
    uv = rng.uniform(1.5, 6.5, size=(2, 3, 2))
    heatmaps = np.stack([codec.encode(u, np.ones(3), (8, 8), 1.0) for u in uv])
    weights = np.ones((2, 3), np.float32)
    trainer = make_trainer(build_model(cfg, 3), cfg.train.loss, ohkm_topk=cfg.train.ohkm_topk)
    trainer.compile(optimizer=keras.optimizers.Adam(3e-3), jit_compile=False)
    hist = trainer.fit(images, (heatmaps, weights), batch_size=2, epochs=40, verbose=0).history["loss"]
    # cross-entropy to a Gaussian cannot fall below the target's own entropy
    dist = heatmaps / heatmaps.sum(axis=(1, 2), keepdims=True)
    floor = float(-(dist * np.log(dist + 1e-8)).sum(axis=(1, 2)).min())
    assert hist[-1] - floor < 0.25 * (hist[0] - floor), (floor, hist[::10])
    found, _ = codec.decode(trainer.net(images, training=False).numpy()[:, -1], "none")
    assert np.abs(found - uv).max() < 1.5
