"""Model registry: config `model.name` → builder(cfg, num_keypoints) → keras.Model.

Every builder returns a model mapping uint8 images (B, S, S, 3) to stacked
stage heatmaps (B, T, S/stride, S/stride, K) in float32; the last stage is the
prediction. Add a head by writing a builder and listing it here.
"""
from __future__ import annotations

from pipeline.models.cpm import build_cpm
from pipeline.models.cpn import build_cpn
from pipeline.models.hourglass import build_hourglass
from pipeline.models.simplebaseline import build_simplebaseline

MODELS = {
    "cpm": build_cpm,                        # Convolutional Pose Machines: T = model.stages
    "simplebaseline": build_simplebaseline,  # deconvolution head on deep features: T = 1
    "hourglass": build_hourglass,            # stacked hourglass: T = model.stages (stacks)
    "cpn": build_cpn,                        # GlobalNet levels + RefineNet: T = levels + 1
}


def build_model(cfg, num_keypoints: int):
    """Build the model named by cfg.model.name."""
    try:
        builder = MODELS[cfg.model.name]
    except KeyError:
        raise ValueError(f"unknown model.name {cfg.model.name!r}; known: {sorted(MODELS)}") from None
    model = builder(cfg, num_keypoints)
    if getattr(cfg.model, "sync_bn", False):
        from pipeline.models.layers import synchronize_batchnorm

        model = synchronize_batchnorm(model)
    return model
