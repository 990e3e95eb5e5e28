"""Hardware by configuration: threads, precision policy, tf.distribute strategy.

Nothing here is edited to move between a laptop CPU, one GPU, several GPUs or
several machines: `train.distribute` and `train.precision` choose.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Sequence


def cpu_flags() -> set:
    """CPU feature flags from /proc/cpuinfo (empty where unavailable)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_has_bf16() -> bool:
    """True when the CPU computes bfloat16 in hardware (AVX512-BF16 or AMX)."""
    return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def configure_threads(threads: int = 0) -> int:
    """Set TF's thread pools; 0 → cores divided among parallel `make -jN` jobs.

    Must run before TensorFlow executes its first op. Returns the thread count.
    """
    import tensorflow as tf

    if threads <= 0:
        jobs = max(1, int(os.environ.get("PIPELINE_PARALLEL_JOBS", "1") or 1))
        threads = max(1, available_cores() // jobs)
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(max(1, min(2, threads)))
    except RuntimeError:
        pass  # TF already initialised (e.g. inside a test session): keep its setting
    return threads


def resolve_precision(precision: str) -> str:
    """`auto` → mixed_float16 on GPUs, mixed_bfloat16 on bf16-capable CPUs, else float32."""
    if precision != "auto":
        return precision
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        return "mixed_float16"
    return "mixed_bfloat16" if cpu_has_bf16() else "float32"


def set_precision(precision: str) -> str:
    """Apply the Keras global dtype policy; returns the resolved policy name."""
    import keras

    policy = resolve_precision(precision)
    keras.mixed_precision.set_global_policy(policy)
    return policy


def setup_inference(cfg) -> None:
    """Threads and dtype policy for a predicting process (as training used)."""
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")  # each fold model traces its own predict function: expected
    configure_threads(cfg.train.threads)
    set_precision(cfg.train.precision)


def make_strategy(distribute: str, devices: Optional[Sequence[str]] = None):
    """tf.distribute strategy for `train.distribute`.

    auto: MirroredStrategy over the visible GPUs when there are several, else the
    default strategy; none: default; mirrored: MirroredStrategy (over `devices`
    when given, e.g. two logical CPUs in tests); multiworker:
    MultiWorkerMirroredStrategy configured by the TF_CONFIG environment variable.
    """
    import tensorflow as tf

    if distribute == "none":
        return tf.distribute.get_strategy()
    if distribute == "auto":
        gpus = tf.config.list_logical_devices("GPU")
        return tf.distribute.MirroredStrategy() if len(gpus) > 1 else tf.distribute.get_strategy()
    if distribute == "mirrored":
        return tf.distribute.MirroredStrategy(devices=devices)
    if distribute == "multiworker":
        if "TF_CONFIG" not in os.environ:
            raise RuntimeError("train.distribute=multiworker needs the TF_CONFIG environment variable "
                               "(see README, 'Hardware')")
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"unknown train.distribute {distribute!r}")
