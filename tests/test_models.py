"""Model registry and CPM shapes (tiny sizes, CPU)."""
import numpy as np
import pytest

from pipeline.config import load_config
from pipeline.models import MODELS, build_model


def cfg_with(*overrides):
    return load_config("configs/demo.yaml", ["model.input_size=64", "model.width=16"] + list(overrides))


@pytest.mark.parametrize("policy", ["float32", "mixed_bfloat16"])
@pytest.mark.parametrize("stages", [1, 3])
def test_cpm_outputs_every_stage(stages, policy):
    """Beliefs of every stage, in float32 whatever the compute dtype (loss and decoding stay float32)."""
    import keras

    cfg = cfg_with(f"model.stages={stages}")
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(policy)
    try:
        model = build_model(cfg, 7)
    finally:
        keras.mixed_precision.set_global_policy(previous)
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
    with pytest.raises(RuntimeError, match="need the internet"):
        build_model(cfg_with("model.backbone=mobilenetv2", "model.weights=imagenet"), 5)


def test_registry_rejects_unknown_model():
    assert "cpm" in MODELS
    cfg = cfg_with()
    object.__setattr__(cfg.model, "name", "nope")
    with pytest.raises(ValueError, match="unknown model.name"):
        build_model(cfg, 3)
