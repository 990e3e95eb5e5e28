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

BACKBONES = {
    # name: (keras.applications constructor name, layer whose output is at stride 4, 8, 16)
    "mobilenetv2": ("MobileNetV2", {4: "block_2_add", 8: "block_5_add", 16: "block_12_add"}),
    "resnet50": ("ResNet50", {4: "conv2_block3_out", 8: "conv3_block4_out", 16: "conv4_block6_out"}),
}


def conv_bn(x, filters: int, kernel: int = 3, stride: int = 1, dilation: int = 1, name: str = ""):
    """Conv → BatchNorm → ReLU."""
    x = layers.Conv2D(filters, kernel, strides=stride, dilation_rate=dilation, padding="same",
                      use_bias=False, name=f"{name}_conv")(x)
    x = layers.BatchNormalization(momentum=0.9, name=f"{name}_bn")(x)  # few steps per epoch on CPU
    return layers.ReLU(name=f"{name}_relu")(x)


def simple_stem(x, width: int, stride: int):
    """Plain conv stem: halve the resolution log2(stride) times, ending with `width` channels."""
    filters = max(16, width // 4)
    x = conv_bn(x, filters, stride=2, name="stem0")
    level = 2
    i = 1
    while level < stride:
        filters = min(width, filters * 2)
        x = conv_bn(x, filters, name=f"stem{i}")
        x = conv_bn(x, filters, stride=2, name=f"stem{i}d")
        level *= 2
        i += 1
    x = conv_bn(x, width, name=f"stem{i}")
    return conv_bn(x, width, dilation=2, name=f"stem{i}b")


def applications_stem(x, cfg):
    """A keras.applications backbone as an FPN-lite feature extractor (weights: null | imagenet).

    x: images scaled to [-1, 1] (MobileNetV2's convention; ResNet50 gets its
    own). The deepest cut (stride 16) is upsampled to `model.stride` and added
    to the backbone's features at that stride, then refined by a 3×3 conv.
    """
    app_name, cuts = BACKBONES[cfg.model.backbone]
    stride = cfg.model.stride
    if stride not in cuts:
        raise ValueError(f"backbone {cfg.model.backbone} supports model.stride in {sorted(cuts)}")
    ctor = getattr(keras.applications, app_name)
    try:
        base = ctor(include_top=False, weights=cfg.model.weights, input_shape=tuple(x.shape[1:]))
    except Exception as err:  # noqa: BLE001 - download errors come in many types
        if cfg.model.weights:
            raise RuntimeError(f"could not load {app_name} weights={cfg.model.weights!r}: {err}. "
                               "ImageNet weights need the internet (or a warm keras cache); "
                               "use model.weights: null offline.") from err
        raise
    deepest = max(cuts)
    feature = keras.Model(base.input, [base.get_layer(cuts[stride]).output,
                                       base.get_layer(cuts[deepest]).output], name=app_name)
    if cfg.model.backbone == "resnet50":  # caffe-style BGR mean subtraction
        x = layers.Rescaling(127.5, offset=127.5)(x)
        x = layers.Lambda(keras.applications.resnet50.preprocess_input)(x)
    shallow, deep = feature(x)
    width = cfg.model.width
    merged = conv_bn(shallow, width, kernel=1, name="neck_shallow")
    if deepest > stride:
        up = layers.UpSampling2D(deepest // stride, interpolation="bilinear", name="neck_up")(
            conv_bn(deep, width, kernel=1, name="neck_deep"))
        merged = layers.Add(name="neck_add")([merged, up])
    return conv_bn(merged, width, name="neck")


def spatial_softmax(x, name: str):
    """Softmax over the h×w cells of each of the K maps: (B, h, w, K) → probability maps."""
    h, w, k = x.shape[1:]
    x = layers.Reshape((h * w, k), name=f"{name}_flat")(x)
    x = layers.Softmax(axis=1, dtype="float32", name=f"{name}_softmax")(x)
    return layers.Reshape((h, w, k), name=f"{name}_maps")(x)


def stage(x, width: int, kernel: int, num_keypoints: int, dilations, name: str, softmax: bool):
    """One CPM stage: dilated convs → 1×1 → K belief maps (float32)."""
    for j, d in enumerate(dilations):
        x = conv_bn(x, width, kernel=kernel, dilation=d, name=f"{name}_c{j}")
    x = conv_bn(x, width, kernel=1, name=f"{name}_p")
    x = layers.Conv2D(num_keypoints, 1, dtype="float32", name=f"{name}_out")(x)
    return spatial_softmax(x, name) if softmax else x


def build_cpm(cfg, num_keypoints: int) -> keras.Model:
    """CPM for uint8 images (B, S, S, 3) → beliefs (B, T, S/stride, S/stride, K) float32."""
    m = cfg.model
    inputs = keras.Input((m.input_size, m.input_size, 3), dtype="uint8", name="image")
    x = layers.Rescaling(1 / 127.5, offset=-1.0, name="scale")(inputs)  # uint8 → [-1, 1]
    if m.backbone == "simple":
        features = simple_stem(x, m.width, m.stride)
    else:
        features = applications_stem(x, cfg)
    softmax = cfg.train.loss == "softmax_ce"
    beliefs = [stage(features, m.width, m.stage_kernel, num_keypoints, (1, 2, 4), "stage1", softmax)]
    for t in range(2, m.stages + 1):
        joined = layers.Concatenate(name=f"stage{t}_in")([features, beliefs[-1]])
        beliefs.append(stage(joined, m.width, m.stage_kernel, num_keypoints, (1, 2, 4, 8), f"stage{t}", softmax))
    hm = m.input_size // m.stride
    expanded = [layers.Reshape((1, hm, hm, num_keypoints), dtype="float32", name=f"stage{t + 1}_expand")(b)
                for t, b in enumerate(beliefs)]
    stacked = expanded[0] if len(expanded) == 1 else \
        layers.Concatenate(axis=1, name="beliefs", dtype="float32")(expanded)
    return keras.Model(inputs, stacked, name=f"cpm{m.stages}")
