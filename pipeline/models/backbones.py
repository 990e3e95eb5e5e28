"""Feature extractors shared by every head: uint8 images → features at a chosen stride.

`features(inputs, cfg)` returns the backbone's feature pyramid as a dict
{stride: (B, S/stride, S/stride, C)} with at least the strides the heads ask
for. `model.backbone`: `simple` (a plain conv stem, no download) or a
keras.applications network (`mobilenetv2`, `resnet50`; `model.weights: imagenet`
needs the internet once, `null` works offline).

Every layer is a stock Keras layer, so saved models load back without custom
objects (a `Lambda` around `preprocess_input` does not).
"""
from __future__ import annotations

import keras
import numpy as np
from keras import layers

from pipeline.models import efficientnet_lite
from pipeline.models.layers import conv_bn

BACKBONES = {
    # name: (keras.applications constructor name, layer whose output is at stride 4, 8, 16, 32)
    "mobilenetv2": ("MobileNetV2", {4: "block_2_add", 8: "block_5_add", 16: "block_12_add",
                                    32: "out_relu"}),
    "resnet50": ("ResNet50", {4: "conv2_block3_out", 8: "conv3_block4_out", 16: "conv4_block6_out",
                              32: "conv5_block3_out"}),
}
# EfficientNet-Lite: cut layers are read off the weights file (efficientnet_lite.stride_cuts)
BACKBONES.update({name: (name, None) for name in efficientnet_lite.VARIANTS})

#: ImageNet BGR channel means of the caffe-style ResNet preprocessing
CAFFE_BGR_MEAN = np.array([103.939, 116.779, 123.68], np.float32)


def scale_input(inputs):
    """uint8 (B, S, S, 3) RGB → float in [-1, 1] (MobileNetV2's and the simple stem's convention)."""
    return layers.Rescaling(1 / 127.5, offset=-1.0, name="scale")(inputs)


def caffe_preprocess(x):
    """[-1, 1] RGB → caffe-style BGR minus the ImageNet means, as one frozen 1×1 conv (serializable).

    Same values as keras.applications.resnet50.preprocess_input on the 0..255 image.
    """
    kernel = np.zeros((1, 1, 3, 3), np.float32)
    for out_c, in_c in enumerate((2, 1, 0)):  # BGR out from RGB in
        kernel[0, 0, in_c, out_c] = 127.5
    bias = 127.5 - CAFFE_BGR_MEAN
    conv = layers.Conv2D(3, 1, trainable=False, name="caffe_bgr", dtype="float32")
    out = conv(x)
    conv.set_weights([kernel, bias])
    return out


def simple_stem(x, width: int, stride: int, bn_momentum: float = 0.9):
    """Plain conv stem: halve the resolution log2(stride) times, ending with `width` channels.

    x: (B, S, S, 3) in [-1, 1] → (B, S/stride, S/stride, width).
    """
    filters = max(16, width // 4)
    x = conv_bn(x, filters, stride=2, name="stem0", bn_momentum=bn_momentum)
    level = 2
    i = 1
    while level < stride:
        filters = min(width, filters * 2)
        x = conv_bn(x, filters, name=f"stem{i}", bn_momentum=bn_momentum)
        x = conv_bn(x, filters, stride=2, name=f"stem{i}d", bn_momentum=bn_momentum)
        level *= 2
        i += 1
    x = conv_bn(x, width, name=f"stem{i}", bn_momentum=bn_momentum)
    return conv_bn(x, width, dilation=2, name=f"stem{i}b", bn_momentum=bn_momentum)


def applications_pyramid(x, cfg, strides):
    """keras.applications backbone cut at `strides`: x in [-1, 1] → {stride: (B, S/s, S/s, C_s)}."""
    app_name, cuts = BACKBONES[cfg.model.backbone]
    missing = [s for s in strides if s not in (cuts or {4: 0, 8: 0, 16: 0, 32: 0})]
    if missing:
        raise ValueError(f"backbone {cfg.model.backbone} has features at strides {sorted(cuts)}, "
                         f"not {missing} (model.stride)")
    if cfg.model.backbone in efficientnet_lite.VARIANTS:
        base, cuts = efficientnet_lite.pretrained_network(cfg.model.backbone, tuple(x.shape[1:]),
                                                          imagenet=cfg.model.weights == "imagenet",
                                                          bn_momentum=cfg.model.bn_momentum)
    else:
        base = _applications_network(app_name, cfg.model.weights, tuple(x.shape[1:]))
    strides = sorted(strides)
    feature = keras.Model(base.input, [base.get_layer(cuts[s]).output for s in strides],
                          name=backbone_name(cfg))
    if cfg.model.freeze_bn:
        for layer in feature.layers:
            if isinstance(layer, layers.BatchNormalization):
                layer.trainable = False  # Keras: a frozen BatchNorm also runs in inference mode
    if cfg.model.backbone == "resnet50":
        x = caffe_preprocess(x)
    outs = feature(x)
    return dict(zip(strides, outs if isinstance(outs, (list, tuple)) else [outs]))


def _applications_network(app_name: str, weights, input_shape):
    """keras.applications `app_name` without its top; a one-line error when its weights cannot load."""
    ctor = getattr(keras.applications, app_name)
    try:
        return ctor(include_top=False, weights=weights, input_shape=input_shape)
    except Exception as err:  # noqa: BLE001 - download errors come in many types
        if weights:
            offline = ", ".join(sorted(efficientnet_lite.VARIANTS))
            raise RuntimeError(f"could not load {app_name} weights={weights!r} ({type(err).__name__}): "
                               "keras.applications weights are downloaded, which needs the internet. "
                               f"Offline, use model.backbone: {offline} with model.weights: imagenet "
                               "(weights from an installed package), or model.weights: null.") from None
        raise


def backbone_name(cfg) -> str:
    """Name of the nested backbone model inside a heatmap network (its variables get train.backbone_lr)."""
    return f"backbone_{cfg.model.backbone}"


def backbone_variables(net, cfg):
    """Trainable variables of the pretrained backbone nested in `net` ([] for `simple`)."""
    try:
        return list(net.get_layer(backbone_name(cfg)).trainable_variables)
    except ValueError:
        return []


def applications_stem(x, cfg):
    """A keras.applications backbone as an FPN-lite feature extractor at `model.stride`.

    The stride-16 cut is upsampled to `model.stride` and added to the backbone's
    features at that stride, then refined by a 3×3 conv: (B, S/stride, S/stride, width).
    """
    stride, width, mom = cfg.model.stride, cfg.model.width, cfg.model.bn_momentum
    deepest = max(stride, 16)
    pyramid = applications_pyramid(x, cfg, sorted({stride, deepest}))
    merged = conv_bn(pyramid[stride], width, kernel=1, name="neck_shallow", bn_momentum=mom)
    if deepest > stride:
        up = layers.UpSampling2D(deepest // stride, interpolation="bilinear", name="neck_up")(
            conv_bn(pyramid[deepest], width, kernel=1, name="neck_deep", bn_momentum=mom))
        merged = layers.Add(name="neck_add")([merged, up])
    return conv_bn(merged, width, name="neck", bn_momentum=mom)


def simple_pyramid(x, width: int, strides, bn_momentum: float = 0.9):
    """The `simple` stem, deeper: features at every stride in `strides` (powers of 2, >= 2).

    x: (B, S, S, 3) in [-1, 1] → {stride: (B, S/stride, S/stride, C)}, C doubling with
    each halving from max(16, width/4) up to 2·width (deep maps are small, so cheap).
    Used by the heads that start from deep features (simplebaseline, cpn).
    """
    filters = max(16, width // 4)
    x = conv_bn(x, filters, stride=2, name="pyr0", bn_momentum=bn_momentum)
    level, out = 2, {}
    for i in range(1, 16):
        if level in strides:
            out[level] = conv_bn(x, filters, name=f"pyr{i - 1}o", bn_momentum=bn_momentum)
        if level >= max(strides):
            break
        filters = min(2 * width, filters * 2)
        x = conv_bn(x, filters, name=f"pyr{i}", bn_momentum=bn_momentum)
        x = conv_bn(x, filters, stride=2, name=f"pyr{i}d", bn_momentum=bn_momentum)
        level *= 2
    return out


def feature_pyramid(x, cfg, strides):
    """Backbone features at each of `strides`: x in [-1, 1] → {stride: (B, S/s, S/s, C_s)}.

    `simple` builds the deeper plain stem (simple_pyramid); keras.applications
    networks are cut at their stride-4…32 layers.
    """
    strides = sorted(set(strides))
    if cfg.model.backbone == "simple":
        return simple_pyramid(x, cfg.model.width, strides, cfg.model.bn_momentum)
    if cfg.model.backbone not in BACKBONES:
        raise ValueError(f"unknown model.backbone {cfg.model.backbone!r}; known: "
                         f"{['simple'] + sorted(BACKBONES)}")
    return applications_pyramid(x, cfg, strides)


def pyramid_strides(cfg):
    """[model.stride, 2·stride, …, model.deep_stride]; raises a config error when they do not fit."""
    m = cfg.model
    if m.deep_stride < m.stride or m.deep_stride & (m.deep_stride - 1) or m.stride & (m.stride - 1):
        raise ValueError(f"model.deep_stride={m.deep_stride} must be a power of 2 and at least "
                         f"model.stride={m.stride} (itself a power of 2)")
    if m.input_size % m.deep_stride:
        raise ValueError(f"model.input_size={m.input_size} must be a multiple of "
                         f"model.deep_stride={m.deep_stride} for model.name={m.name}")
    out, s = [], m.stride
    while s <= m.deep_stride:
        out.append(s)
        s *= 2
    return out


def stem_features(x, cfg):
    """Features at `model.stride` from the configured backbone: (B, S/stride, S/stride, width)."""
    if cfg.model.backbone == "simple":
        return simple_stem(x, cfg.model.width, cfg.model.stride, cfg.model.bn_momentum)
    if cfg.model.backbone not in BACKBONES:
        raise ValueError(f"unknown model.backbone {cfg.model.backbone!r}; known: "
                         f"{['simple'] + sorted(BACKBONES)}")
    return applications_stem(x, cfg)
