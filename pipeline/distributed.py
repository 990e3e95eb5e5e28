"""Distribution by configuration: batch and LR scaling, input sharding, worker roles, GPU slots.

* `train.batch_size` is the batch of ONE replica (a GPU, or the CPU); a step
  consumes `batch_size × replicas` images (`global_batch`). On one device
  nothing changes.
* `train.lr_scaling: linear` multiplies `train.lr` by the number of replicas
  (the linear scaling rule of Goyal et al. 2017: the LR grows with the global
  batch); `none` keeps `train.lr` whatever the replica count.
* Input sharding: every input pipeline (one per worker machine) builds only
  its share of each global batch — pipeline p of P makes the samples
  [p·L, (p+1)·L) of every global batch of G = P·L samples (`shard_slice`).
  The union over pipelines is exactly the single-device stream, so the sample
  sequence does not depend on the number of workers.
* Multi-worker roles (`TF_CONFIG`): the chief (task `chief`, or `worker` 0
  when the cluster has no chief) writes the model directory; every other
  worker runs the very same code in a scratch copy of it (`worker_dir`),
  removed when it ends. All workers must take part in every save (reading
  synchronised variables is a collective op), so they all save, the others
  into scratch.
* GPU slots: `make -jN train-all` with several GPUs gives each training
  process one GPU, round robin (`claim_gpu`).
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

# --------------------------------------------------------------------------- batch and LR


def global_batch(batch_size: int, replicas: int) -> int:
    """Images per training step over all replicas: the per-replica `train.batch_size` × replicas."""
    return int(batch_size) * max(1, int(replicas))


def scaled_lr(lr: float, replicas: int, rule: str = "linear") -> float:
    """Learning rate for `replicas` replicas: `linear` → lr × replicas; `none` → lr."""
    if rule == "none":
        return float(lr)
    if rule == "linear":
        return float(lr) * max(1, int(replicas))
    raise ValueError(f"unknown train.lr_scaling {rule!r} (linear | none)")


def shard_slice(first: int, global_size: int, pipeline: int, pipelines: int) -> Tuple[int, int]:
    """Counters [start, stop) that input pipeline `pipeline` of `pipelines` builds of the global
    batch starting at sample counter `first` (global_size must divide evenly)."""
    if global_size % pipelines:
        raise ValueError(f"global batch {global_size} does not split evenly over {pipelines} input pipelines")
    local = global_size // pipelines
    start = int(first) + pipeline * local
    return start, start + local


# --------------------------------------------------------------------------- multi-worker roles


def tf_config() -> Dict:
    """The parsed TF_CONFIG environment variable ({} when unset); a malformed one is an error."""
    text = os.environ.get("TF_CONFIG", "")
    if not text.strip():
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise RuntimeError(f"TF_CONFIG is not valid JSON: {err}") from None
    if not isinstance(value, dict) or "cluster" not in value or "task" not in value:
        raise RuntimeError("TF_CONFIG needs 'cluster' and 'task' (see docs/getting-started.md, 'GPUs')")
    return value


def is_chief(config: Optional[Dict] = None) -> bool:
    """True for the task that writes outputs: `chief`, or `worker` 0 when there is no chief.

    Without TF_CONFIG (one process) the process is the chief.
    """
    config = tf_config() if config is None else config
    if not config:
        return True
    task = config["task"]
    kind, index = task.get("type", "worker"), int(task.get("index", 0))
    if kind == "chief":
        return True
    return kind == "worker" and index == 0 and "chief" not in config["cluster"]


def task_name(config: Optional[Dict] = None) -> str:
    config = tf_config() if config is None else config
    if not config:
        return "local"
    return f"{config['task'].get('type', 'worker')}{int(config['task'].get('index', 0))}"


#: files of a model directory a non-chief worker copies, to resume exactly as the chief does
SHARED_STATE = ("resume", "history.csv", "metrics.json")


@contextlib.contextmanager
def worker_dir(out: Path, distribute: str):
    """The directory this process writes its training outputs into.

    The model directory itself for the chief (and for every non-multiworker
    run); for the other multi-worker tasks a scratch directory holding a copy
    of the chief's resume state (so every worker resumes from the same epoch),
    removed on exit. With several machines, OUTPUT must be on a file system
    they share for resume to work; fresh runs work either way.
    """
    out = Path(out)
    if distribute != "multiworker" or is_chief():
        yield out
        return
    scratch = Path(tempfile.mkdtemp(prefix=f"fashionai-{task_name()}-"))
    try:
        for name in SHARED_STATE:
            src = out / name
            try:
                if src.is_dir():
                    shutil.copytree(src, scratch / name)
                elif src.exists():
                    shutil.copy2(src, scratch / name)
            except (OSError, shutil.Error):
                pass  # the chief is replacing it: a partial copy is rejected by RunState.load
        yield scratch
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def agree(strategy, values: Sequence[float]):
    """Values every worker agrees on: their mean over all replicas of a multi-worker strategy.

    Decisions taken between steps (early stopping, time budget, NaN) must be the
    same on every worker, or one waits forever in the next collective. On one
    machine the values are returned unchanged. Returns a list of floats.
    """
    import tensorflow as tf

    if not is_multiworker(strategy):
        return [float(v) for v in values]
    tensor = tf.constant([float(v) for v in values], tf.float64)
    per_replica = strategy.run(lambda: tf.identity(tensor))
    reduced = strategy.reduce(tf.distribute.ReduceOp.MEAN, per_replica, axis=None)
    return [float(v) for v in reduced.numpy()]


def is_multiworker(strategy) -> bool:
    """True for a MultiWorkerMirroredStrategy that spans several workers."""
    import tensorflow as tf

    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and \
        strategy.extended._in_multi_worker_mode()  # noqa: SLF001 - no public accessor


# --------------------------------------------------------------------------- one GPU per make job


def gpu_count() -> int:
    """GPUs the NVIDIA driver lists (`nvidia-smi -L`), without initialising TensorFlow; 0 without."""
    try:
        res = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return 0
    if res.returncode != 0:
        return 0
    return sum(1 for line in res.stdout.splitlines() if line.startswith("GPU "))


_SLOT_FDS: list = []  # held slot locks (released when the process exits)


def claim_gpu(distribute: str, jobs: int, n_gpus: Optional[int] = None, lock_dir=None) -> Optional[int]:
    """Give this training process one GPU when `make -jN` runs N independent trainings.

    Applies only when several jobs run (`jobs` > 1, make's -jN), the machine has
    at least two GPUs, `CUDA_VISIBLE_DEVICES` is not set already and
    `train.distribute` is `auto` or `none` (a `mirrored`/`multiworker` run wants
    every GPU). Slots are lock files (`fcntl`) in `lock_dir` (default: the temp
    dir, one set per user): the process takes the first free slot s of
    jobs rounded up to a multiple of the GPU count, and GPU s mod n_gpus, so N
    jobs spread round robin over the GPUs (more jobs than GPUs share them; memory
    growth is on). Sets CUDA_VISIBLE_DEVICES (before TensorFlow starts) and
    returns the GPU index, or None when nothing was assigned.
    """
    if jobs <= 1 or distribute not in ("auto", "none") or os.environ.get("CUDA_VISIBLE_DEVICES") is not None:
        return None
    n_gpus = gpu_count() if n_gpus is None else n_gpus
    if n_gpus < 2:
        return None
    import fcntl

    lock_dir = Path(lock_dir or Path(tempfile.gettempdir()) / f"fashionai-gpu-slots-{os.getuid()}")
    lock_dir.mkdir(parents=True, exist_ok=True)
    slots = -(-jobs // n_gpus) * n_gpus
    for slot in range(slots):
        fd = os.open(lock_dir / f"slot{slot}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        _SLOT_FDS.append(fd)
        gpu = slot % n_gpus
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu)
        return gpu
    gpu = os.getpid() % n_gpus  # more processes than slots (another make running): share
    os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu)
    return gpu


def release_gpu() -> None:
    """Release the slots taken by claim_gpu (tests; a process exit releases them too)."""
    while _SLOT_FDS:
        os.close(_SLOT_FDS.pop())


def distribute_input(strategy, build):
    """The training input for `strategy`: build(pipeline, pipelines) → tf.data.Dataset of per-replica batches.

    One replica: the dataset itself. Several (MirroredStrategy, MultiWorkerMirroredStrategy):
    one pipeline per worker through `distribute_datasets_from_function`, which hands
    consecutive elements of a worker's dataset to its local replicas.
    """
    if strategy.num_replicas_in_sync == 1:
        return build(0, 1)
    return strategy.distribute_datasets_from_function(
        lambda ctx: build(ctx.input_pipeline_id, ctx.num_input_pipelines))
