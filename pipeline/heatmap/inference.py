"""One inference path: images (N, S, S, 3) uint8 → heatmaps → decoded coordinates, with flip TTA.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Dict, Iterator, Sequence, Tuple

import numpy as np

from pipeline import joint
from pipeline.config import Config
from pipeline.frames import letterbox_table
from pipeline.heatmap import codec, tta, zoom


def compiled_forward(model):
    """model(x, training=False) as one traced tf.function: an eager call dispatches every layer
    from Python, about 3.5× the time of the traced call on the demo's validation fold (CPU)."""
    import tensorflow as tf

    return tf.function(lambda images: model(images, training=False))


def even_batches(n: int, batch_size: int) -> int:
    """Batch size that splits n images into ceil(n / batch_size) batches of nearly equal size,
    so that padding the last one to it wastes less than one image per batch."""
    batches = max(1, math.ceil(n / max(batch_size, 1)))
    return max(1, math.ceil(n / batches))


def predict_heatmaps(model, images: np.ndarray, batch_size: int, forward=None) -> np.ndarray:
    """Last-stage heatmaps (N, h, w, K) float32 for uint8 images (N, S, S, 3).

    `forward` (default: the model called directly): e.g. `compiled_forward(model)`. Every
    call gets one batch shape (`even_batches`, the last batch padded), so a traced forward
    is traced once.
    """
    from keras import ops

    # a direct call, not predict_on_batch: the latter splits batches across replicas
    # under MirroredStrategy and returns padded results
    forward = forward or (lambda x: model(x, training=False))
    out = [ops.convert_to_numpy(forward(batch))[:n, -1]
           for batch, n in padded_batches(images, even_batches(len(images), batch_size))]
    return np.concatenate(out).astype(np.float32)


def peak_features(heatmaps: np.ndarray, uv: np.ndarray, radius: int = 2) -> Dict[str, np.ndarray]:
    """Confidence features of heatmaps (N, h, w, K) around decoded peaks uv (N, K, 2) in cells.

    sharpness: peak minus the mean of its 5×5 neighbourhood; peak2_val and
    peak2_dist: value of, and distance (cells) to, the highest point farther
    than `radius` cells from the peak. Each (N, K).
    """
    n, h, w, k = heatmaps.shape
    maps = heatmaps.transpose(0, 3, 1, 2)  # (N, K, h, w) view
    px = np.clip(np.rint(uv[..., 0]), 0, w - 1).astype(np.float32)[..., None, None]
    py = np.clip(np.rint(uv[..., 1]), 0, h - 1).astype(np.float32)[..., None, None]
    dist2 = (np.arange(w, dtype=np.float32) - px) ** 2 + (np.arange(h, dtype=np.float32)[:, None] - py) ** 2
    peak = maps.reshape(n, k, -1).max(-1)
    near = dist2 <= 8.0  # the 5×5 neighbourhood less its corners' far cells
    local_mean = (maps * near).sum((-1, -2)) / np.maximum(near.sum((-1, -2)), 1)
    far = np.where(dist2 > radius ** 2, maps, -np.inf).reshape(n, k, -1)
    idx = far.argmax(-1)
    peak2 = np.take_along_axis(far, idx[..., None], -1)[..., 0]
    peak2_dist = np.sqrt(np.take_along_axis(dist2.reshape(n, k, -1), idx[..., None], -1)[..., 0])
    return {"sharpness": peak - local_mean, "peak2_val": np.where(np.isfinite(peak2), peak2, 0.0),
            "peak2_dist": peak2_dist}


def padded_batches(images: np.ndarray, batch_size: int) -> Iterator[Tuple[np.ndarray, int]]:
    """(batch, n) for consecutive slices of `images` (N, ...): every batch has `batch_size`
    rows, the last one padded with zeros, so a traced model function is traced once; `n` is
    the number of real rows."""
    for i in range(0, len(images), batch_size):
        batch = np.asarray(images[i:i + batch_size])
        n = len(batch)
        if n < batch_size:
            batch = np.concatenate([batch, np.zeros((batch_size - n,) + batch.shape[1:], batch.dtype)])
        yield batch, n


def predict_images(model, images: np.ndarray, params: np.ndarray, cfg: Config,
                   flip_index: Sequence[int], return_heatmaps: bool = False) -> Dict[str, np.ndarray]:
    """Keypoints of uint8 images (N, S, S, 3) with letterbox params (N, 4).

    Passes: every scale of `predict.scales` (the image rescaled about its centre,
    codec.rescale_images), each with its mirror when `predict.flip_tta`; every
    pass's maps and keypoints are brought back to the base input's heatmap cells
    (codec.maps_to_base, codec.cells_to_base; mirrors flipped back first).
    Returns arrays in original pixels: xy (the configured merge), xy_plain (mean
    keypoints of the unmirrored passes), with flip TTA xy_mirror (of the mirrored
    passes), and with more than one pass xy_heatmap (decoded from the mean map)
    and xy_coords (mean keypoints of all passes); score (N, K) and the peak
    features. One model call per batch and scale holds both the images and their mirrors.
    With a single scale 1.0 this is plain flip TTA. With return_heatmaps, also
    `heatmaps`: the merged maps (N, h, w, K) the keypoints were decoded from.
    """
    decoder = codec.Codec.from_config(cfg)
    flip = cfg.predict.flip_tta
    scales = tuple(cfg.predict.scales)
    size = images.shape[1] if len(images) else cfg.model.input_size
    raw = {(s, m): [] for s in scales for m in ((False, True) if flip else (False,))}
    # the model sees predict.batch_size inputs per call either way: with flip TTA that is
    # half as many images plus their mirrors, so TTA costs two passes, not a bigger batch shape
    bs = max(1, cfg.predict.batch_size // 2) if flip else cfg.predict.batch_size
    for batch, n in padded_batches(images, bs):
        for s in scales:
            scaled = codec.rescale_images(batch, s)
            inputs = np.concatenate([scaled, tta.flip_images(scaled)]) if flip else scaled
            out = model.predict_on_batch(inputs)[:, -1].astype(np.float32)
            raw[(s, False)].append(out[:n])
            if flip:
                raw[(s, True)].append(out[bs:bs + n])
    empty = np.zeros((0,) + tuple(model.output_shape[2:]), np.float32)
    maps, cells = {}, {}
    for (s, mirrored), parts in raw.items():
        hm = np.concatenate(parts) if parts else empty
        uv, _ = decoder.decode(hm)
        if mirrored:
            hm = tta.flip_back_heatmaps(hm, flip_index)
            uv = tta.flip_back_cells(uv, hm.shape[2], flip_index)
        maps[(s, mirrored)] = decoder.maps_to_base(hm, s)
        cells[(s, mirrored)] = decoder.cells_to_base(uv, s, size)
    result = {"xy_plain": np.mean([uv for (s, m), uv in cells.items() if not m], axis=0)}
    if flip:
        result["xy_mirror"] = np.mean([uv for (s, m), uv in cells.items() if m], axis=0)
    if len(maps) > 1:
        merged = np.mean(list(maps.values()), axis=0)
        result["xy_heatmap"], score = decoder.decode(merged)
        result["xy_coords"] = np.mean(list(cells.values()), axis=0)
        chosen_hm = merged
        chosen_uv = result["xy_heatmap"] if cfg.predict.merge == "heatmap" else result["xy_coords"]
    else:
        chosen_hm, chosen_uv = maps[(scales[0], False)], result["xy_plain"]
        _, score = decoder.decode(chosen_hm)
    features = peak_features(chosen_hm, chosen_uv)
    out = {name: decoder.to_original(uv, params) for name, uv in result.items()}
    out["xy"] = decoder.to_original(chosen_uv, params)
    out["score"] = score
    out.update(features)
    if return_heatmaps:
        out["heatmaps"] = chosen_hm
    return out


def predict_category(model, model_name: str, category: str, images: np.ndarray, params: np.ndarray,
                     sizes: np.ndarray, cfg: Config, return_heatmaps: bool = False) -> Dict[str, np.ndarray]:
    """`predict_images` of one category's images by the model `model_name` (its channels reduced
    to the category's, joint.select_category).

    images: (N, S, S, 3) uint8 cache images with params (N, 4) (original → cache) and sizes (N, 2).
    With crops (crop.enabled) the cache is larger than the input and both passes run
    (zoom.two_pass: the whole image, then `predict.crop_passes` boxes of the keypoints); the result
    also holds `xy_pass1`, `crop_params` and, with several box passes, `xy_box1`.
    """
    def run(inputs, in_params):
        return joint.select_category(predict_images(model, inputs, in_params, cfg, joint.flip_index(model_name),
                                                    return_heatmaps), model_name, category)

    if not cfg.crop.enabled:
        return run(images, params)
    full = letterbox_table(sizes, cfg.model.input_size, cfg.model.margin)
    return zoom.two_pass(run, images, params, full, sizes, cfg.crop, cfg.model.input_size,
                         passes=cfg.predict.crop_passes)


def load_model(path: Path):
    import keras

    if not path.exists():
        raise FileNotFoundError(f"missing model {path} (run `make train-all` first)")
    try:
        return keras.models.load_model(path, compile=False)
    except Exception as err:  # noqa: BLE001 - a truncated zip, a foreign file: many error types
        raise ValueError(f"{path}: broken model file, not used ({type(err).__name__}: {str(err)[:120]}); "
                         "`make train-all` retrains it") from None
