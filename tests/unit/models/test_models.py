"""Model registry and CPM shapes (tiny sizes, CPU)."""
import numpy as np
import pytest
from conftest import build_model_under

from pipeline.config import load_config
from pipeline.models import MODELS, build_model


def cfg_with(*overrides):
    return load_config("configs/demo.yaml", ["model.name=cpm", "model.input_size=64", "model.width=16"] + list(overrides))


@pytest.mark.parametrize("policy", ["float32", "mixed_bfloat16"])
@pytest.mark.parametrize("stages", [1, 3])
def test_cpm_outputs_every_stage(stages, policy):
    """Beliefs of every stage, in float32 whatever the compute dtype (loss and decoding stay float32)."""
    cfg = cfg_with(f"model.stages={stages}")
    model = build_model_under(policy, cfg, 7)
    out = model.predict_on_batch(np.zeros((2, 64, 64, 3), np.uint8))
    assert out.shape == (2, stages, 16, 16, 7)
    assert out.dtype == np.float32


def test_softmax_beliefs_are_distributions_and_mse_beliefs_are_not():
    x = np.random.default_rng(0).integers(0, 255, (2, 64, 64, 3), dtype=np.uint8)
    soft = build_model(cfg_with("train.loss=softmax_ce"), 4).predict_on_batch(x)
    np.testing.assert_allclose(soft.sum(axis=(2, 3)), 1.0, rtol=1e-3)
    raw = build_model(cfg_with("train.loss=mse"), 4).predict_on_batch(x)
    assert not np.allclose(raw.sum(axis=(2, 3)), 1.0, rtol=1e-3)


def test_applications_backbone_without_download():
    cfg = cfg_with("model.backbone=mobilenetv2", "model.weights=null", "model.stages=2")
    model = build_model(cfg, 5)
    assert model.output_shape == (None, 2, 16, 16, 5)


def test_imagenet_weights_offline_error_is_clear(monkeypatch):
    import keras

    def no_network(*args, **kwargs):
        raise OSError("URL fetch failure: no network")

    monkeypatch.setattr(keras.applications, "MobileNetV2", no_network)
    with pytest.raises(RuntimeError, match="needs the internet.*efficientnet_lite0"):
        build_model(cfg_with("model.backbone=mobilenetv2", "model.weights=imagenet"), 5)


def test_registry_rejects_unknown_model():
    assert "cpm" in MODELS
    cfg = cfg_with()
    object.__setattr__(cfg.model, "name", "nope")
    with pytest.raises(ValueError, match="unknown model.name"):
        build_model(cfg, 3)


@pytest.mark.slow  # saves and reloads ResNet50 and MobileNetV2 (~10 s)
@pytest.mark.parametrize("backbone", ["simple", "mobilenetv2", "resnet50", "efficientnet_lite0"])
def test_every_backbone_round_trips_through_save_and_load(backbone, tmp_path):
    """A saved model loads back with stock Keras (no custom objects) and predicts the same maps."""
    import keras

    from pipeline.models.backbones import BACKBONES

    assert backbone == "simple" or backbone in BACKBONES
    cfg = cfg_with(f"model.backbone={backbone}", "model.weights=null", "model.stages=1")
    model = build_model(cfg, 3)
    x = np.random.default_rng(1).integers(0, 255, (2, 64, 64, 3), dtype=np.uint8)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path, compile=False)
    np.testing.assert_allclose(loaded.predict_on_batch(x), model.predict_on_batch(x), rtol=1e-4, atol=1e-6)


def test_resnet_preprocessing_matches_keras_applications():
    """The serializable caffe-style conv equals resnet50.preprocess_input on the 0..255 image."""
    import keras

    from pipeline.models.backbones import caffe_preprocess

    rgb = np.random.default_rng(2).integers(0, 255, (1, 8, 8, 3)).astype(np.float32)
    inputs = keras.Input((8, 8, 3))
    model = keras.Model(inputs, caffe_preprocess(inputs))
    ours = model.predict_on_batch(rgb / 127.5 - 1.0)
    np.testing.assert_allclose(ours, keras.applications.resnet50.preprocess_input(rgb.copy()), atol=1e-3)


def test_bn_momentum_is_a_config_key():
    model = build_model(cfg_with("model.bn_momentum=0.99"), 3)
    moms = {layer.momentum for layer in model.layers if layer.__class__.__name__ == "BatchNormalization"}
    assert moms == {0.99}
