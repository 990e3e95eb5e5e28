"""Convolutional Pose Machines (Wei et al. 2016), sized by configuration.

Image → shared features at stride `model.stride` (a small conv stem, or a
keras.applications backbone) → stage 1 belief maps from the features → each
later stage from [features, previous beliefs] through dilated convolutions
(a large receptive field at little cost) → stacked beliefs of all stages,
each supervised; the last stage predicts.

With `train.loss: softmax_ce` every stage ends in a spatial softmax, so the
beliefs are probability maps (each sums to 1 over the cells); with `mse` they
are raw Gaussian-like maps. Decoding and flip TTA treat both alike.
"""
from __future__ import annotations

import keras
from keras import layers

from pipeline.models.backbones import scale_input, stem_features
from pipeline.models.layers import conv_bn, heatmap_out, stack_stages


def stage(x, width: int, kernel: int, num_keypoints: int, dilations, name: str, softmax: bool,
          bn_momentum: float = 0.9):
    """One CPM stage: dilated convs → 1×1 → K belief maps (B, h, w, K) float32."""
    for j, d in enumerate(dilations):
        x = conv_bn(x, width, kernel=kernel, dilation=d, name=f"{name}_c{j}", bn_momentum=bn_momentum)
    x = conv_bn(x, width, kernel=1, name=f"{name}_p", bn_momentum=bn_momentum)
    return heatmap_out(x, num_keypoints, name, softmax)


def build_cpm(cfg, num_keypoints: int) -> keras.Model:
    """CPM for uint8 images (B, S, S, 3) → beliefs (B, T, S/stride, S/stride, K) float32."""
    m = cfg.model
    inputs = keras.Input((m.input_size, m.input_size, 3), dtype="uint8", name="image")
    features = stem_features(scale_input(inputs), cfg)
    softmax = cfg.train.loss == "softmax_ce"
    mom = m.bn_momentum
    beliefs = [stage(features, m.width, m.stage_kernel, num_keypoints, (1, 2, 4), "stage1", softmax, mom)]
    for t in range(2, m.stages + 1):
        joined = layers.Concatenate(name=f"stage{t}_in")([features, beliefs[-1]])
        beliefs.append(stage(joined, m.width, m.stage_kernel, num_keypoints, (1, 2, 4, 8), f"stage{t}",
                             softmax, mom))
    return keras.Model(inputs, stack_stages(beliefs), name=f"cpm{m.stages}")
