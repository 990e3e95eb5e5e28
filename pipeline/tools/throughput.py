"""Input-pipeline throughput: can the CPU feed the accelerator? (`make bench-input`, bench key)

`input_throughput(cfg)` times the training input alone — the cache rows →
augmented uint8 images + Gaussian heatmaps + weights of `data.make_batch`, no
model — at the config's input size, on synthetic cache rows (random pixels and
keypoints: the work per image does not depend on the content):

* `img_per_s_per_core`: `make_batch` in this process with OpenCV on one thread,
  per CPU second (what one core gives, steady when other work shares the machine);
* `img_per_s_all_cores`: the real tf.data pipeline (`data.train_dataset`,
  parallel map over all cores, prefetch) as the training loop consumes it;
* the share of the per-core time spent encoding heatmaps, and the bytes shipped
  per image (uint8 image + float32 heatmaps).

Compare with the img/s the accelerator trains at (docs/getting-started.md, "GPUs").
"""
from __future__ import annotations

import json
import sys
import time
from typing import Dict, Optional

import numpy as np

from pipeline import data, hardware
from pipeline.heatmap import codec
from pipeline.keypoints import category_indices


def synthetic_samples(cfg, n_images: int = 64, category: str = "dress", seed: int = 0) -> data.SampleSet:
    """A SampleSet of `n_images` random (S, S, 3) uint8 cache rows with random keypoints of `category`.

    Keypoints in input pixels, inside the central 80 % of the input, all visible.
    """
    rng = np.random.default_rng(seed)
    size = cfg.model.input_size
    k = len(category_indices(category))
    images = rng.integers(0, 256, (n_images, size, size, 3), dtype=np.uint8)
    xy = rng.uniform(0.1 * size, 0.9 * size, (n_images, k, 2))
    vis = np.ones((n_images, k), np.int64)
    return data.SampleSet(images, np.arange(n_images), xy, vis)


def _timed_batches(fn, seconds: float, min_batches: int = 2):
    """(wall seconds, CPU seconds of this process) per call of fn() over at least `seconds` (after a warm-up call).

    CPU seconds hardly change when other work shares the machine: the per-core rate uses them.
    """
    fn()
    count, start, cpu = 0, time.perf_counter(), time.process_time()
    while count < min_batches or time.perf_counter() - start < seconds:
        fn()
        count += 1
    return (time.perf_counter() - start) / count, (time.process_time() - cpu) / count


def input_throughput(cfg, seconds: float = 3.0, n_images: int = 64, category: str = "dress",
                     samples: Optional[data.SampleSet] = None) -> Dict:
    """Training-input img/s at `cfg.model.input_size`, per core and with all cores (see module doc).

    Returns a dict: img_per_s_per_core, img_per_s_all_cores, cores, input_size,
    heatmap_size, batch_size, targets (`train.targets`), encode_fraction (share of the
    per-core time spent in codec.encode; 0 with device targets), bytes_per_image
    (shipped to the model: image + heatmaps or keypoints + weights).
    """
    import cv2

    from pipeline.keypoints import category_flip_index

    samples = samples if samples is not None else synthetic_samples(cfg, n_images, category)
    flip_index = category_flip_index(category)
    bs = cfg.train.batch_size
    hm = cfg.heatmap_size
    k = samples.xy.shape[1]
    counter = [0]

    def one_batch():
        counters = np.arange(counter[0], counter[0] + bs)
        counter[0] += bs
        return data.make_batch(samples, counters, cfg, flip_index, training=True)

    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        _, per_batch = _timed_batches(one_batch, seconds)
        uv = np.random.default_rng(1).uniform(0, hm, (k, 2))
        weight = np.ones(k, np.float32)
        _, encode_s = _timed_batches(lambda: [codec.encode(uv, weight, (hm, hm), cfg.codec.sigma)
                                              for _ in range(bs)], seconds / 3)
    finally:
        cv2.setNumThreads(threads)

    import tensorflow as tf  # noqa: F401 - the pipeline below

    cores = hardware.available_cores()
    iterator = iter(data.train_dataset(samples, cfg, flip_index))
    next(iterator)
    all_per_batch, _ = _timed_batches(lambda: next(iterator), seconds, min_batches=4)
    device = cfg.train.targets == "device"
    return {
        "img_per_s_per_core": bs / per_batch,
        "img_per_s_all_cores": bs / all_per_batch,
        "cores": cores,
        "input_size": cfg.model.input_size,
        "heatmap_size": hm,
        "keypoints": k,
        "batch_size": bs,
        "targets": cfg.train.targets,
        "encode_fraction": 0.0 if device else min(1.0, encode_s / per_batch),
        "bytes_per_image": cfg.model.input_size ** 2 * 3 + (k * 2 if device else hm * hm * k) * 4 + k * 4,
    }


def config_flops(cfg, category: str = "dress") -> Dict:
    """Forward conv FLOPs per image and parameters of `cfg`'s model for `category` (no weights download).

    Counted by `models.flops.model_flops` (Σ 2·kh·kw·Cin·Cout·Hout·Wout); training ≈ 3× forward.
    """
    import dataclasses

    from pipeline.models import build_model
    from pipeline.models.flops import model_flops

    cfg = cfg.for_category(category)
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, weights=None))
    model = build_model(cfg, len(category_indices(category)))
    forward = model_flops(model)
    return {"category": category, "input_size": cfg.model.input_size, "forward_gflops": forward / 1e9,
            "train_gflops": 3 * forward / 1e9, "params": int(model.count_params())}


def main(argv=None) -> int:
    """Print input_throughput of a config as JSON (`make bench-input CONFIG=configs/full.yaml`)."""
    import argparse

    from pipeline.config import add_config_args, config_from_args

    parser = argparse.ArgumentParser(description="Input-pipeline img/s at the config's input size.")
    add_config_args(parser)
    parser.add_argument("--seconds", type=float, default=3.0, help="timing window per measurement")
    parser.add_argument("--flops", action="store_true", help="print the model's FLOPs per image instead")
    args = parser.parse_args(argv)
    try:
        cfg = config_from_args(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"bench-input: error: {err}", file=sys.stderr)
        return 1
    hardware.configure_threads(cfg.train.threads)
    print(json.dumps(config_flops(cfg) if args.flops else input_throughput(cfg, args.seconds), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
