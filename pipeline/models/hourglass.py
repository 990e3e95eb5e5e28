"""Stacked hourglass (Newell et al. 2016), small: `model.stages` stacks, each supervised.

Image → features at `model.stride` (backbones.stem_features) → per stack an
hourglass (residual blocks, max-pooling down to `model.deep_stride`, nearest
upsampling back, skip connections added at every resolution) → a residual block
and a 1×1 conv → K maps. Between stacks the features are re-injected: next
input = input + 1×1(features) + 1×1(maps), as in the paper. T = model.stages;
the last stack predicts.
"""
from __future__ import annotations

import keras
from keras import layers

from pipeline.models.backbones import pyramid_strides, scale_input, stem_features
from pipeline.models.layers import conv_bn, heatmap_out, stack_stages


def residual(x, filters: int, name: str, bn_momentum: float = 0.9):
    """Bottleneck residual block (1×1 → 3×3 → 1×1, BN) + identity: (B, h, w, filters) → same."""
    y = conv_bn(x, filters // 2, kernel=1, name=f"{name}_a", bn_momentum=bn_momentum)
    y = conv_bn(y, filters // 2, name=f"{name}_b", bn_momentum=bn_momentum)
    y = layers.Conv2D(filters, 1, use_bias=False, name=f"{name}_c_conv")(y)
    y = layers.BatchNormalization(momentum=bn_momentum, name=f"{name}_c_bn")(y)
    if x.shape[-1] != filters:
        x = layers.Conv2D(filters, 1, use_bias=False, name=f"{name}_skip")(x)
    return layers.ReLU(name=f"{name}_out")(layers.Add(name=f"{name}_add")([x, y]))


def hourglass(x, depth: int, filters: int, name: str, bn_momentum: float = 0.9):
    """One hourglass of `depth` halvings: (B, h, w, filters) → (B, h, w, filters); h divisible by 2**depth."""
    skip = residual(x, filters, f"{name}_skip{depth}", bn_momentum)
    low = layers.MaxPooling2D(2, name=f"{name}_pool{depth}")(x)
    low = residual(low, filters, f"{name}_down{depth}", bn_momentum)
    if depth > 1:
        low = hourglass(low, depth - 1, filters, name, bn_momentum)
    else:
        low = residual(low, filters, f"{name}_bottom", bn_momentum)
    low = residual(low, filters, f"{name}_up{depth}", bn_momentum)
    up = layers.UpSampling2D(2, name=f"{name}_upsample{depth}")(low)
    return layers.Add(name=f"{name}_merge{depth}")([skip, up])


def build_hourglass(cfg, num_keypoints: int) -> keras.Model:
    """uint8 images (B, S, S, 3) → heatmaps (B, stacks, S/stride, S/stride, K) float32."""
    m = cfg.model
    depth = len(pyramid_strides(cfg)) - 1
    if depth < 1:
        raise ValueError(f"hourglass needs model.deep_stride > model.stride (got {m.deep_stride}, {m.stride})")
    inputs = keras.Input((m.input_size, m.input_size, 3), dtype="uint8", name="image")
    softmax = cfg.train.loss == "softmax_ce"
    x = stem_features(scale_input(inputs), cfg)
    outputs = []
    for s in range(1, m.stages + 1):
        y = hourglass(x, depth, m.width, f"hg{s}", m.bn_momentum)
        y = residual(y, m.width, f"hg{s}_post", m.bn_momentum)
        y = conv_bn(y, m.width, kernel=1, name=f"hg{s}_feat", bn_momentum=m.bn_momentum)
        maps = heatmap_out(y, num_keypoints, f"hg{s}", softmax)
        outputs.append(maps)
        if s < m.stages:
            back_f = layers.Conv2D(m.width, 1, name=f"hg{s}_refeat")(y)
            back_m = layers.Conv2D(m.width, 1, name=f"hg{s}_remap")(maps)
            x = layers.Add(name=f"hg{s}_next")([x, back_f, back_m])
    return keras.Model(inputs, stack_stages(outputs), name=f"hourglass{m.stages}")
