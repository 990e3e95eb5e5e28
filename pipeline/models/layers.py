"""Building blocks shared by every head and backbone.

All blocks take `bn_momentum` explicitly (config `model.bn_momentum`): short CPU
runs with few steps per epoch need a fast-moving BatchNorm average (0.9), long
GPU runs the usual 0.99.
"""
from __future__ import annotations

from keras import layers


def conv_bn(x, filters: int, kernel: int = 3, stride: int = 1, dilation: int = 1, name: str = "",
            bn_momentum: float = 0.9):
    """Conv → BatchNorm → ReLU, 'same' padding: (B, H, W, C) → (B, H/stride, W/stride, filters)."""
    x = layers.Conv2D(filters, kernel, strides=stride, dilation_rate=dilation, padding="same",
                      use_bias=False, name=f"{name}_conv")(x)
    x = layers.BatchNormalization(momentum=bn_momentum, name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x)


def spatial_softmax(x, name: str):
    """Softmax over the h×w cells of each of the K maps: (B, h, w, K) → probability maps (float32)."""
    h, w, k = x.shape[1:]
    x = layers.Reshape((h * w, k), name=f"{name}_flat")(x)
    x = layers.Softmax(axis=1, dtype="float32", name=f"{name}_softmax")(x)
    return layers.Reshape((h, w, k), name=f"{name}_maps")(x)


def heatmap_out(x, num_keypoints: int, name: str, softmax: bool):
    """1×1 conv to K maps in float32, spatial softmax when the loss is softmax-CE: (B, h, w, K)."""
    x = layers.Conv2D(num_keypoints, 1, dtype="float32", name=f"{name}_out")(x)
    return spatial_softmax(x, name) if softmax else x


def stack_stages(maps, name: str = "beliefs"):
    """[(B, h, w, K)] * T → (B, T, h, w, K) float32: the output every head returns (last = prediction)."""
    h, w, k = maps[0].shape[1:]
    expanded = [layers.Reshape((1, h, w, k), dtype="float32", name=f"{name}{t + 1}_expand")(m)
                for t, m in enumerate(maps)]
    if len(expanded) == 1:
        return expanded[0]
    return layers.Concatenate(axis=1, name=name, dtype="float32")(expanded)


def synchronize_batchnorm(model):
    """Copy of `model` whose BatchNormalization layers (keras.applications backbones included)
    compute batch statistics over all replicas (`synchronized=True`, config `model.sync_bn`).

    Same weights and outputs on one device; under MirroredStrategy /
    MultiWorkerMirroredStrategy the statistics of a step come from the global batch, which
    matters when the per-replica batch is small. Saved models load back with stock Keras.
    """
    import keras

    def clone(layer):
        config = layer.get_config()
        if isinstance(layer, layers.BatchNormalization):
            config["synchronized"] = True
        return layer.__class__.from_config(config)

    synced = keras.models.clone_model(model, clone_function=clone, recursive=True)
    synced.set_weights(model.get_weights())
    return synced
