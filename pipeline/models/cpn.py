"""Cascaded Pyramid Network (Chen et al. 2018), small: GlobalNet + RefineNet.

Image → backbone pyramid at strides stride, 2·stride, …, deep_stride (L levels).
GlobalNet: a top-down FPN — 1×1 laterals to `model.width`, each level plus the
upsampled coarser one — and per level a 3×3 conv, bilinear upsampling to
`model.stride` and a 1×1 to K maps (L supervised outputs). RefineNet: level i
(0 = finest) through i bottleneck blocks, upsampled to `model.stride`, all
concatenated, one more bottleneck, 1×1 to K maps: the prediction.
T = L + 1 (GlobalNet levels, finest first, then RefineNet).
"""
from __future__ import annotations

import keras
from keras import layers

from pipeline.models.backbones import feature_pyramid, pyramid_strides, scale_input
from pipeline.models.hourglass import residual
from pipeline.models.layers import conv_bn, heatmap_out, stack_stages


def upsample_to(x, factor: int, name: str):
    """Bilinear upsampling by an integer factor (identity when 1): (B, h, w, C) → (B, f·h, f·w, C)."""
    if factor == 1:
        return x
    return layers.UpSampling2D(factor, interpolation="bilinear", name=name)(x)


def build_cpn(cfg, num_keypoints: int) -> keras.Model:
    """uint8 images (B, S, S, 3) → heatmaps (B, L+1, S/stride, S/stride, K) float32."""
    m = cfg.model
    mom = m.bn_momentum
    strides = pyramid_strides(cfg)
    softmax = cfg.train.loss == "softmax_ce"
    inputs = keras.Input((m.input_size, m.input_size, 3), dtype="uint8", name="image")
    pyramid = feature_pyramid(scale_input(inputs), cfg, strides)
    # GlobalNet: top-down pathway, coarsest first
    merged = {}
    above = None
    for s in reversed(strides):
        lateral = conv_bn(pyramid[s], m.width, kernel=1, name=f"global_lat{s}", bn_momentum=mom)
        if above is not None:
            lateral = layers.Add(name=f"global_add{s}")([lateral, upsample_to(above, 2, f"global_up{s}")])
        merged[s] = above = lateral
    global_maps, refine_in = [], []
    for i, s in enumerate(strides):
        feat = conv_bn(merged[s], m.width, name=f"global_feat{s}", bn_momentum=mom)
        up = upsample_to(feat, s // m.stride, f"global_pred_up{s}")
        global_maps.append(heatmap_out(conv_bn(up, m.width, kernel=1, name=f"global_pred{s}", bn_momentum=mom),
                                       num_keypoints, f"global{s}", softmax))
        # RefineNet: deeper levels get more bottlenecks before joining at model.stride
        r = merged[s]
        for j in range(i):
            r = residual(r, m.width, f"refine{s}_b{j}", mom)
        refine_in.append(upsample_to(r, s // m.stride, f"refine_up{s}"))
    x = layers.Concatenate(name="refine_cat")(refine_in) if len(refine_in) > 1 else refine_in[0]
    x = conv_bn(x, m.width, kernel=1, name="refine_reduce", bn_momentum=mom)
    x = residual(x, m.width, "refine_final", mom)
    final = heatmap_out(x, num_keypoints, "refine", softmax)
    return keras.Model(inputs, stack_stages(global_maps + [final]), name="cpn")
