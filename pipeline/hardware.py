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


def parallel_jobs() -> int:
    """Jobs make runs side by side (`make -jN` → N, exported as PIPELINE_PARALLEL_JOBS); 1 outside make."""
    try:
        return max(1, int(os.environ.get("PIPELINE_PARALLEL_JOBS", "1") or 1))
    except ValueError:
        return 1


def enable_memory_growth() -> int:
    """Memory growth on for every visible GPU, so several processes (make -jN) can share one.

    TensorFlow otherwise reserves nearly all of a GPU's memory in the first process.
    Must run before TensorFlow initialises the GPUs; later calls are ignored.
    Returns the number of GPUs seen.
    """
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except (RuntimeError, ValueError):
            pass  # already initialised (e.g. a test session): keep its setting
    return len(gpus)


def configure_threads(threads: int = 0) -> int:
    """Set TF's thread pools (0 → cores divided among parallel `make -jN` jobs) and GPU memory growth.

    Must run before TensorFlow executes its first op. Returns the thread count.
    """
    import tensorflow as tf

    enable_memory_growth()
    if threads <= 0:
        threads = max(1, available_cores() // parallel_jobs())
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(max(1, min(2, threads)))
    except RuntimeError:
        pass  # TF already initialised (e.g. inside a test session): keep its setting
    return threads


def gpu_compute_capabilities() -> list:
    """(major, minor) compute capability of each visible GPU ((0, 0) when TF does not say)."""
    import tensorflow as tf

    caps = []
    for gpu in tf.config.list_physical_devices("GPU"):
        try:
            cap = tf.config.experimental.get_device_details(gpu).get("compute_capability")
        except (RuntimeError, ValueError):
            cap = None
        caps.append(tuple(cap) if cap else (0, 0))
    return caps


def resolve_precision(precision: str) -> str:
    """`auto` → a mixed policy on GPUs and bf16-capable CPUs, else float32.

    GPUs: mixed_bfloat16 when every visible GPU has compute capability ≥ 8.0
    (Ampere, Hopper, …: bf16 tensor cores as fast as fp16, no loss scaling,
    no overflow), else mixed_float16 (Volta/Turing tensor cores), which Keras
    trains with a dynamic LossScaleOptimizer (model.compile wraps the optimizer
    for that policy). CPUs: mixed_bfloat16 with AVX512-BF16/AMX, else float32.
    """
    if precision != "auto":
        return precision
    caps = gpu_compute_capabilities()
    if caps:
        return "mixed_bfloat16" if min(caps) >= (8, 0) else "mixed_float16"
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
                               "(see docs/getting-started.md, 'GPUs')")
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"unknown train.distribute {distribute!r}")


def auto_strategy_name(distribute: str, n_gpus: int) -> str:
    """What `make_strategy(distribute)` builds, in words, for `n_gpus` visible GPUs (no TF needed)."""
    if distribute == "auto":
        return f"MirroredStrategy over {n_gpus} GPUs" if n_gpus > 1 else "default strategy (one device)"
    return {"none": "default strategy (one device)",
            "mirrored": f"MirroredStrategy over {max(n_gpus, 1)} device(s)",
            "multiworker": "MultiWorkerMirroredStrategy (TF_CONFIG)"}[distribute]


def doctor(cfg) -> dict:
    """What TensorFlow sees on this machine and what `cfg` will use (`make doctor`)."""
    import tensorflow as tf

    threads = configure_threads(cfg.train.threads)
    build = tf.sysconfig.get_build_info()
    gpus = tf.config.list_physical_devices("GPU")
    names = []
    for gpu in gpus:
        try:
            names.append(tf.config.experimental.get_device_details(gpu).get("device_name", gpu.name))
        except (RuntimeError, ValueError):
            names.append(gpu.name)
    return {
        "tensorflow": tf.__version__,
        "cuda_build": bool(build.get("is_cuda_build")),
        "cuda_version": build.get("cuda_version"),
        "cudnn_version": build.get("cudnn_version"),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "cpu_devices": len(tf.config.list_physical_devices("CPU")),
        "gpus": names,
        "gpu_compute_capability": [".".join(map(str, c)) for c in gpu_compute_capabilities()],
        "cores": available_cores(),
        "threads": threads,
        "make_jobs": parallel_jobs(),
        "cpu_bf16": cpu_has_bf16(),
        "precision": f"{cfg.train.precision} -> {resolve_precision(cfg.train.precision)}",
        "loss_scaling": resolve_precision(cfg.train.precision) == "mixed_float16",
        "distribute": f"{cfg.train.distribute} -> {auto_strategy_name(cfg.train.distribute, len(gpus))}",
        "tf_config": os.environ.get("TF_CONFIG") or None,
    }
