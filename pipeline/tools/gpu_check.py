"""`make gpu-check`: a short timed run of a config's model on synthetic data, for the day a GPU is at hand.

Trains the config's model (by default configs/gpu.yaml: the joint model, its pretrained
backbone, its input size and batch) through the real training input pipeline on synthetic
cache rows for `--seconds`, then times inference with the config's TTA passes, and prints:
train img/s, predict img/s (one pass, and per image with every flip / scale / box pass),
the device, peak GPU memory, and the hours the full real set would take with the config's
epochs and folds (FULL_SET: the round-2 training + warm-up photos and one test set).
On a machine without a GPU it runs on the CPU and says so. JSON to --json when given.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Dict

import numpy as np

#: the full real FashionAI set: training (round 2 train + warm-up) and one test set (images)
FULL_SET = {"train": 31_631 + 12_534, "test": 10_000}


def tta_passes(cfg) -> int:
    """Forward passes per test image: flip × scales × (1 + box passes when the crop pass is on)."""
    views = (2 if cfg.predict.flip_tta else 1) * len(cfg.predict.scales)
    return views * (1 + (cfg.predict.crop_passes if cfg.crop.enabled else 0))


def estimate_hours(cfg, train_img_s: float, predict_img_s: float, full=FULL_SET) -> Dict[str, float]:
    """Hours of the full set: each of the n fold models (`data.fold_models`, else k) trains on
    (k-1)/k of the photos for train.epochs epochs, and predicts its OOF fold and the test set with
    every TTA pass."""
    k, n = cfg.data.folds, len(cfg.fold_ids)
    train_h = n * cfg.train.epochs * full["train"] * (k - 1) / k / train_img_s / 3600
    predict_h = n * (full["train"] / k + full["test"]) * tta_passes(cfg) / predict_img_s / 3600
    return {"train_hours": train_h, "predict_hours": predict_h, "total_hours": train_h + predict_h}


def run(cfg, seconds: float = 60.0) -> Dict:
    import tensorflow as tf

    from pipeline import data, hardware
    from pipeline.fit.trainer import build_trainer
    from pipeline.joint import channels, flip_index, model_names
    from pipeline.tools.throughput import synthetic_samples

    hardware.configure_threads(cfg.train.threads)
    gpus = tf.config.list_physical_devices("GPU")
    policy = hardware.set_precision(cfg.train.precision)
    model_name = model_names(cfg)[0]
    k = len(channels(model_name))
    batch = cfg.train.batch_size
    samples = synthetic_samples(cfg, n_images=max(4 * batch, 64), category="dress")
    if k != samples.xy.shape[1]:  # the joint model's 24 maps: dress points in their CSV slots
        from pipeline.keypoints import category_indices

        full = np.full((samples.xy.shape[0], k, 2), 0.0)
        vis = np.zeros((samples.xy.shape[0], k), samples.vis.dtype)
        full[:, category_indices("dress")] = samples.xy
        vis[:, category_indices("dress")] = samples.vis
        samples = dataclasses.replace(samples, xy=full, vis=vis)
    trainer = build_trainer(cfg, k)
    dataset = data.train_dataset(samples, cfg, flip_index(model_name))
    it = iter(dataset)
    trainer.make_train_function()
    step = trainer.train_function
    step(iter([next(it)]))  # trace and warm up
    images, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        step(iter([next(it)]))
        images += batch
    train_img_s = images / (time.perf_counter() - start)
    x = np.random.default_rng(0).integers(0, 256, (cfg.predict.batch_size, cfg.model.input_size,
                                                   cfg.model.input_size, 3), dtype=np.uint8)
    forward = tf.function(lambda t: trainer.net(t, training=False))
    forward(x)
    n, start = 0, time.perf_counter()
    while n < 3 or time.perf_counter() - start < max(5.0, seconds / 6):
        np.asarray(forward(x))
        n += 1
    predict_img_s = n * len(x) / (time.perf_counter() - start)
    peak = None
    if gpus:
        peak = tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**30
    out = {
        "device": gpus[0].name if gpus else "CPU (no GPU visible)", "gpus": len(gpus), "policy": policy,
        "model": cfg.model.name, "backbone": cfg.model.backbone, "input_size": cfg.model.input_size,
        "batch_size": batch, "train_img_per_s": train_img_s, "predict_img_per_s": predict_img_s,
        "tta_passes_per_image": tta_passes(cfg), "peak_gpu_memory_gib": peak,
        "networks": len(cfg.fold_ids), "epochs": cfg.train.epochs, "full_set": FULL_SET,
    }
    out.update(estimate_hours(cfg, train_img_s, predict_img_s))
    return out


def summary(result: Dict) -> str:
    peak = "n/a" if result["peak_gpu_memory_gib"] is None else f"{result['peak_gpu_memory_gib']:.1f} GiB"
    return (f"gpu-check: {result['device']}, {result['policy']}, {result['model']}/{result['backbone']} "
            f"{result['input_size']} px, batch {result['batch_size']}\n"
            f"  train   {result['train_img_per_s']:.1f} img/s\n"
            f"  predict {result['predict_img_per_s']:.1f} img/s per pass, "
            f"{result['tta_passes_per_image']} passes per image\n"
            f"  peak GPU memory {peak}\n"
            f"  full set ({result['full_set']['train']} training, {result['full_set']['test']} test photos, "
            f"{result['networks']} networks x {result['epochs']} epochs): "
            f"{result['train_hours']:.1f} h training + {result['predict_hours']:.1f} h prediction "
            f"= {result['total_hours']:.1f} h on this device")


def main(argv=None) -> int:
    from pipeline.config import add_config_args, config_from_args

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_config_args(ap)
    ap.set_defaults(config="configs/gpu.yaml")
    ap.add_argument("--seconds", type=float, default=60.0, help="training seconds timed (after warm-up)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    cfg = config_from_args(args)
    result = run(cfg, args.seconds)
    print(summary(result))
    if args.json:
        from pipeline.fsutil import write_text_atomic

        write_text_atomic(args.json, json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
