"""tf.data input pipeline from the image cache.

Training samples are addressed by a global sample counter i: epoch e = i // N
uses its own seeded permutation, and sample i its own RNG, so the stream is
identical whatever the number of parallel workers, and a resumed run
continues the very same stream from its first unfinished epoch.

A batch is built by one numpy call (`make_batch`: cache rows → augmented
uint8 images, Gaussian heatmaps and per-point weights), mapped in parallel
and prefetched.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Optional, Sequence, Tuple

import numpy as np

from pipeline import augment, frames
from pipeline.config import Config
from pipeline.heatmap import codec, zoom


@dataclasses.dataclass
class SampleSet:
    """Images and keypoints of one category's split, in input pixels.

    images: (M, S, S, 3) uint8 (a memmap is fine); rows: (N,) rows of `images`;
    xy: (N, K, 2) keypoints in input pixels; vis: (N, K) visibility -1/0/1.
    """

    images: np.ndarray
    rows: np.ndarray
    xy: np.ndarray
    vis: np.ndarray
    #: crops (crop.enabled, pipeline/heatmap/zoom.py): `images` is the larger cache; per sample its cache
    #: params (N, 4), the whole-image params at the input size (N, 4) — `xy` is in that frame —,
    #: the original-pixel keypoints (N, K, 2) and the image's width, height (N, 2)
    cache_params: Optional[np.ndarray] = None
    full_params: Optional[np.ndarray] = None
    orig_xy: Optional[np.ndarray] = None
    sizes: Optional[np.ndarray] = None

    def __len__(self) -> int:
        return len(self.rows)


def point_weights(vis: np.ndarray, supervise_occluded: bool) -> np.ndarray:
    """(…, K) float32 loss weight: 1 for supervised points, 0 otherwise."""
    return ((vis >= 0) if supervise_occluded else (vis == 1)).astype(np.float32)


@functools.lru_cache(maxsize=4)
def sample_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """Permutation of the n training samples used in `epoch` (cached: asked once per sample)."""
    return np.random.default_rng([seed, epoch, 7]).permutation(n)


def make_batch(samples: SampleSet, counters: np.ndarray, cfg: Config, flip_index: Sequence[int],
               training: bool = True) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Build one batch from global sample counters.

    Returns images (B, S, S, 3) uint8, heatmaps (B, h, w, K) float32 and
    weights (B, K) float32 (0 for points absent, pushed outside, or occluded
    when occluded points are not supervised). With `train.targets: device` the
    targets are the keypoints (B, K, 2) float32 in heatmap cells instead of
    heatmaps: the train step encodes them (codec.encode_tensor), so the
    pipeline neither computes nor ships float32 maps.
    """
    on_device = cfg.train.targets == "device"
    n = len(samples)
    size = cfg.model.input_size
    encoder = codec.Codec.from_config(cfg)
    hm = encoder.cells
    aug = cfg.augment
    images, maps, weights = [], [], []
    for counter in counters:
        counter = int(counter)
        epoch, pos = divmod(counter, n)
        index = sample_order(n, cfg.train.seed, epoch)[pos] if training else pos
        image = np.asarray(samples.images[samples.rows[index]])
        xy, vis = samples.xy[index], samples.vis[index]
        weight = point_weights(vis, cfg.train.supervise_occluded)
        rng = np.random.default_rng([cfg.train.seed, counter]) if training else None
        base = None
        if samples.cache_params is not None:  # crops: the sample's view is cut from the larger cache
            view = samples.full_params[index] if rng is None else zoom.training_view(
                rng, samples.orig_xy[index], vis >= 0, samples.full_params[index], samples.sizes[index],
                cfg.crop, size)
            base = zoom.frame_matrix(samples.cache_params[index], view)
            xy = frames.orig_to_input(samples.orig_xy[index], view)
        if training and aug.enabled:
            matrix, flip = augment.random_affine(rng, size, aug.rotation, aug.scale_min, aug.scale_max,
                                                 aug.translate, 0.5 if aug.flip else 0.0)
            image, xy, valid = augment.apply_geometry(
                image, xy, weight > 0, matrix, flip, flip_index,
                None if base is None else augment.compose(matrix, base), size)
            image = augment.color_jitter(rng, image, aug.color)
            weight = valid.astype(np.float32)
        elif base is not None:
            image = zoom.warp(image[None], base[None], size)[0]
        uv = encoder.to_cells(xy)
        weight = weight * codec.inside(uv, (hm, hm))
        images.append(image)
        maps.append(uv.astype(np.float32) if on_device else encoder.encode(uv, weight))
        weights.append(weight)
    return np.stack(images), np.stack(maps), np.stack(weights).astype(np.float32)


def train_dataset(samples: SampleSet, cfg: Config, flip_index: Sequence[int], start_counter: int = 0,
                  batch_size: int = 0, global_size: int = 0, pipeline: int = 0, pipelines: int = 1):
    """Endless tf.data stream of (images, (heatmaps, weights)) batches, from `start_counter`.

    batch_size: images per element (0: `train.batch_size`), i.e. per replica;
    global_size: images per training step over all replicas (0: batch_size).
    Input pipeline `pipeline` of `pipelines` (one per worker machine) builds
    only its share of each global batch (`distributed.shard_slice`), as
    consecutive per-replica elements; the pipelines together make exactly the
    one-device stream. Auto-sharding is off: nothing is built and dropped.
    """
    import tensorflow as tf

    from pipeline.distributed import shard_slice

    bs = batch_size or cfg.train.batch_size
    global_size = global_size or bs
    k = samples.xy.shape[1]
    hm = cfg.heatmap_size
    size = cfg.model.input_size
    first, stop = shard_slice(int(start_counter), global_size, pipeline, pipelines)
    if (stop - first) % bs:
        raise ValueError(f"a pipeline's share {stop - first} is not a multiple of the batch {bs}")

    def load(first):
        counters = np.arange(int(first), int(first) + bs)
        return make_batch(samples, counters, cfg, flip_index, training=True)

    def tf_load(first):
        images, maps, weights = tf.numpy_function(load, [first], [tf.uint8, tf.float32, tf.float32],
                                                  stateful=False)
        images.set_shape((bs, size, size, 3))
        maps.set_shape((bs, k, 2) if cfg.train.targets == "device" else (bs, hm, hm, k))
        weights.set_shape((bs, k))
        return images, (maps, weights)

    options = tf.data.Options()
    options.deterministic = True
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    ds = tf.data.Dataset.range(first, 2 ** 62, global_size)  # first counter of this pipeline's share
    if stop - first > bs:  # several replicas per pipeline: consecutive elements go to its replicas
        share = stop - first
        ds = ds.flat_map(lambda c: tf.data.Dataset.range(c, c + share, bs))
    ds = ds.map(tf_load, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE).with_options(options)


def to_input_frame(keypoints: np.ndarray, params: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Original-pixel keypoints (N, K, 3) → input-pixel xy (N, K, 2) and visibility (N, K)."""
    xy = frames.orig_to_input(keypoints[..., :2].astype(np.float64), params[:, None, :])
    return xy, keypoints[..., 2].astype(np.int64)
