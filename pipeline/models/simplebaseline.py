"""SimpleBaseline (Xiao et al. 2018): deep backbone features → deconvolutions → heatmaps.

Image → backbone features at `model.deep_stride` (the deeper `simple` stem, or
a keras.applications network cut at that stride) → log2(deep_stride/stride)
deconvolutions (4×4 Conv2DTranspose, stride 2, + BN + ReLU, `model.width`
channels) up to `model.stride` → a 1×1 conv to K maps (spatial softmax with
`train.loss: softmax_ce`). One supervised output (T = 1).
"""
from __future__ import annotations

import keras
from keras import layers

from pipeline.models.backbones import feature_pyramid, pyramid_strides, scale_input
from pipeline.models.layers import heatmap_out, stack_stages


def deconv_bn(x, filters: int, name: str, bn_momentum: float = 0.9):
    """4×4 transposed conv, stride 2 → BN → ReLU: (B, h, w, C) → (B, 2h, 2w, filters)."""
    x = layers.Conv2DTranspose(filters, 4, strides=2, padding="same", use_bias=False, name=f"{name}_deconv")(x)
    x = layers.BatchNormalization(momentum=bn_momentum, name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x)


def build_simplebaseline(cfg, num_keypoints: int) -> keras.Model:
    """uint8 images (B, S, S, 3) → heatmaps (B, 1, S/stride, S/stride, K) float32."""
    m = cfg.model
    levels = pyramid_strides(cfg)
    inputs = keras.Input((m.input_size, m.input_size, 3), dtype="uint8", name="image")
    x = feature_pyramid(scale_input(inputs), cfg, [m.deep_stride])[m.deep_stride]
    for i in range(len(levels) - 1):
        x = deconv_bn(x, m.width, f"up{i + 1}", m.bn_momentum)
    out = heatmap_out(x, num_keypoints, "head", cfg.train.loss == "softmax_ce")
    return keras.Model(inputs, stack_stages([out]), name="simplebaseline")
