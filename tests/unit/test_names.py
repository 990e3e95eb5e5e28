"""Registries are keyed by the names of pipeline/names.py, which the config validates against."""
import numpy as np
import pytest

from pipeline import names
from pipeline.config import _CHOICES, load_config


def test_the_model_registry_is_the_heads():
    from pipeline.models import MODELS

    assert tuple(MODELS) == names.HEADS


def test_the_backbone_registry_is_the_backbones():
    from pipeline.models.backbones import BACKBONES

    assert ("simple",) + tuple(BACKBONES) == names.BACKBONES


def test_every_refine_decodes_and_others_are_refused():
    from pipeline.heatmap import codec

    hm = np.zeros((1, 8, 8, 1), np.float32)
    hm[0, 3, 4, 0] = 1.0
    for refine in names.REFINES:
        uv, _ = codec.decode(hm, refine)
        assert np.abs(uv[0, 0] - (4, 3)).max() <= 0.5
    with pytest.raises(ValueError, match="known: none, quarter, dark"):
        codec.decode(hm, "sharp")


def test_every_loss_computes_and_others_are_refused():
    from pipeline.heatmap.losses import per_keypoint_loss

    target = np.full((1, 4, 4, 2), 1 / 16, np.float32)
    beliefs = np.full((1, 1, 4, 4, 2), 1 / 16, np.float32)
    for loss in names.LOSSES:
        assert np.asarray(per_keypoint_loss(target, np.ones((1, 2), np.float32), beliefs, loss)).shape == (1, 1, 2)
    with pytest.raises(ValueError, match="known: mse, softmax_ce"):
        per_keypoint_loss(target, np.ones((1, 2), np.float32), beliefs, "l1")


def test_the_config_takes_its_choices_from_the_names():
    assert _CHOICES[("model", "name")] is names.HEADS and _CHOICES[("train", "loss")] is names.LOSSES
    with pytest.raises(ValueError, match="model.name"):
        load_config("configs/demo.yaml", ["model.name=vitpose"])
