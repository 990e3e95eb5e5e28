"""Forward FLOPs of a Keras model, counted from its layer shapes (no profiler, no run)."""
from __future__ import annotations

import numpy as np


def model_flops(model) -> int:
    """Forward FLOPs per image (2 per multiply-add) of the conv, transposed-conv and dense layers.

    Conv2D: 2·kh·kw·(cin/groups)·cout·Hout·Wout; DepthwiseConv2D: 2·kh·kw·cin·mult·Hout·Wout;
    Conv2DTranspose: 2·kh·kw·cin·cout·Hin·Win; Dense: 2·din·dout per output position.
    Nested models (keras.applications backbones) are counted too; other layers are ignored.
    """
    import keras

    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            total += model_flops(layer)
        elif isinstance(layer, keras.layers.DepthwiseConv2D):
            kh, kw = layer.kernel_size
            h, w = layer.output.shape[1:3]
            total += 2 * kh * kw * layer.input.shape[-1] * layer.depth_multiplier * h * w
        elif isinstance(layer, keras.layers.Conv2DTranspose):
            kh, kw = layer.kernel_size
            h, w = layer.input.shape[1:3]
            total += 2 * kh * kw * layer.input.shape[-1] * layer.filters * h * w
        elif isinstance(layer, keras.layers.Conv2D):
            kh, kw = layer.kernel_size
            h, w = layer.output.shape[1:3]
            cin = layer.input.shape[-1] // layer.groups
            total += 2 * kh * kw * cin * layer.filters * h * w
        elif isinstance(layer, keras.layers.Dense):
            positions = int(np.prod([d for d in layer.input.shape[1:-1]] or [1]))
            total += 2 * layer.input.shape[-1] * layer.units * positions
    return int(total)
