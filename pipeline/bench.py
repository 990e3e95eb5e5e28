"""Benchmarks (DESIGN §5): `make bench` → OUTPUT/bench/results.json and docs/benchmarks.md.

Every key is a ratio (or a rate) measured inside one run, so that a shared,
noisy machine still gives comparable numbers. Keys with a goal:

* ne_ratio_vs_seed      test NE of configs/demo.yaml ÷ that of configs/seed_cpm.yaml,
                        both trained (fold 0 of every category) for the same
                        wall-clock budget on the same synthetic data, each
                        predicted with its own TTA/decoding settings;
* train_peak_fraction   training FLOP/s (3 × counted conv forward FLOPs × img/s on
                        in-memory tensors) ÷ a large matmul's FLOP/s, both in the
                        training dtype;
* input_overhead        1 − steps/s with data.train_dataset ÷ steps/s on in-memory tensors;
* tta_time_ratio        predict_images time with flip TTA ÷ without;
* preprocess_speedup    preprocess img/s ÷ a plain single-process cv2.imread+resize loop;
* preprocess_rss_ratio  peak RSS of the preprocess process tree on a 4× data set ÷ on 1×;
* decode_floor_ne       NE of encode→decode of the ground truth (the codec's floor).

Report-only keys (no goal) are listed in INFO_KEYS.

Layout under OUTPUT/bench/: data/ (synthetic input), work/ (prep + training
runs), scale1x/ scale4x/ (RSS data sets), logs/ (one log per subprocess),
workers/ (their JSON results), results.json (written after every step;
results_steps.json instead when --steps runs a subset).

TensorFlow measurements run in subprocesses (`--worker NAME`; trainings via
`python -m pipeline.train`), so precision policies and thread settings never
leak between configurations, and a crash costs only its own keys: every
failing measurement records an `error` string instead of stopping the bench.
The generated table replaces the text between BENCH_START and BENCH_END in
docs/benchmarks.md and in README.md (README only when it holds the markers).

CLI: python -m pipeline.bench --output DIR --mode quick|full [--steps a,b]  (--steps: a subset, for development)
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import shlex
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .fsutil import write_text_atomic
from .hardware import available_cores, cpu_flags
from .keypoints import CATEGORIES, category_indices

REPO = Path(__file__).resolve().parents[1]
DEMO_CONFIG = REPO / "configs" / "demo.yaml"
SEED_CONFIG = REPO / "configs" / "seed_cpm.yaml"
BENCH_START, BENCH_END = "<!-- bench:start -->", "<!-- bench:end -->"
THROUGHPUT_CATEGORY = "dress"   # most keypoints (15): the largest output head
PRECISION_CATEGORY = "skirt"    # bf16 vs fp32 NE comparison (full mode)


@dataclasses.dataclass(frozen=True)
class Mode:
    """Sizes and repetitions of one bench mode."""

    train_per_cat: int          # synthetic training images per category (NE, throughput, decode floor)
    test_per_cat: int           # synthetic test images per category (NE, TTA timing)
    scale_train_per_cat: int    # 1× data set of the RSS measurement (4× has four times as many)
    scale_test_per_cat: int
    budget_s: float             # training wall-clock budget per model (train.time_budget_s)
    steps: int                  # timed training steps per throughput measurement
    reps: int                   # repetitions of each timing (ratios: median over back-to-back pairs)
    matmul_s: float             # seconds per matmul timing window
    precision_ne: bool          # also train fp32 vs bf16 on PRECISION_CATEGORY


MODES = {
    "quick": Mode(80, 20, 25, 6, 15.0, 8, 4, 1.0, False),
    "full": Mode(160, 40, 100, 25, 120.0, 25, 5, 1.5, True),
}
SCALE = 4

#: key → (comparison, target); DESIGN §5
GOALS: Dict[str, Tuple[str, float]] = {
    "ne_ratio_vs_seed": ("<=", 0.6),
    "train_peak_fraction": (">=", 0.5),
    "input_overhead": ("<=", 0.05),
    "tta_time_ratio": ("<=", 2.05),
    "preprocess_speedup": (">=", 2.0),
    "preprocess_rss_ratio": ("<=", 1.15),
    "decode_floor_ne": ("<=", 0.003),
}
INFO_KEYS = (
    "test_ne_demo", "test_ne_seed_cpm", "ne_bf16_vs_fp32", "train_img_per_s", "bf16_vs_fp32_img_per_s",
    "model_gflops_per_image", "matmul_gflops_fp32", "matmul_gflops_bf16", "inference_img_per_s_plain",
    "inference_img_per_s_tta", "decode_floor_ne_argmax",
)


# --------------------------------------------------------------------------- small helpers


def passes(value: Optional[float], goal: Tuple[str, float]) -> Optional[bool]:
    """Whether `value` meets `goal` = (op, target); None for a missing or non-finite value."""
    if value is None or not np.isfinite(value):
        return None
    op, target = goal
    return bool(value <= target) if op == "<=" else bool(value >= target)


def goal_text(goal: Optional[Tuple[str, float]]) -> str:
    """('<=', 0.6) → '≤ 0.6'; None → '—'."""
    if goal is None:
        return "—"
    return f"{'≤' if goal[0] == '<=' else '≥'} {goal[1]:g}"


def format_value(value) -> str:
    """Compact number for the table: 3 significant digits, thousands unrounded."""
    if value is None:
        return "—"
    if isinstance(value, (int, float, np.floating)) and np.isfinite(value):
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}"
    return str(value)


def paired_ratio(numerators: Sequence[float], denominators: Sequence[float]) -> float:
    """Median over repetitions i of numerators[i] / denominators[i].

    Each pair was measured back to back, so a load change on a shared machine
    mostly cancels within a pair, and the median drops the pairs it did not.
    """
    ratios = [a / b for a, b in zip(numerators, denominators) if a is not None and b]
    if not ratios:
        raise ValueError("no complete pair of measurements")
    return float(np.median(ratios))


def make_entry(key: str, value=None, error: Optional[str] = None, **detail) -> Dict:
    """A results.json entry: value, goal text, pass (None without a goal), error, detail."""
    goal = GOALS.get(key)
    value = None if value is None else float(value)
    return {"value": value, "goal": goal_text(goal) if goal else None,
            "pass": passes(value, goal) if goal and error is None else None,
            "error": error, "detail": detail}


def replace_between_markers(text: str, block: str) -> Optional[str]:
    """`text` with the part between BENCH_START and BENCH_END replaced by `block`; None without markers."""
    start = text.find(BENCH_START)
    end = text.find(BENCH_END, start + len(BENCH_START)) if start >= 0 else -1
    if start < 0 or end < 0:
        return None
    return text[:start + len(BENCH_START)] + "\n" + block.strip("\n") + "\n" + text[end:]


def cpu_model() -> str:
    """CPU model name from /proc/cpuinfo (platform.processor() elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_text() -> str:
    """CPU model, its bf16/AMX/AVX-512 support and the cores this process may use."""
    flags = cpu_flags()
    features = [f for f in ("avx512f", "avx512_bf16", "amx_bf16") if f in flags] or ["no AVX-512"]
    return f"{cpu_model()} ({', '.join(features)}), {available_cores()} core(s)"


def package_version(*names: str) -> str:
    """Installed version of the first of `names` found (without importing it)."""
    from importlib import metadata

    for name in names:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return "unknown"


def subprocess_env() -> Dict[str, str]:
    """Environment of the subprocesses: the repository importable, quiet TF, unbuffered output."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def tail(path: Path, lines: int = 5) -> str:
    """Last `lines` non-empty lines of a log file."""
    try:
        text = [l for l in path.read_text(errors="replace").splitlines() if l.strip()]
    except OSError:
        return ""
    return " | ".join(text[-lines:])


def run_logged(cmd: Sequence[str], log: Path, timeout: float) -> Tuple[int, float]:
    """Run `cmd` (cwd: repository root) with its output in `log`; returns (exit code, seconds).

    On timeout its process group is killed and the exit code is -9.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(log, "w") as f:
        f.write("$ " + shlex.join(cmd) + "\n")
        f.flush()
        proc = subprocess.Popen(list(cmd), cwd=REPO, env=subprocess_env(), stdout=f, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            rc = -9
    return rc, time.perf_counter() - start


def tree_rss(proc) -> Tuple[int, int]:
    """(RSS, RSS minus shared pages) in bytes summed over a psutil process and its descendants."""
    import psutil

    total = anon = 0
    try:
        procs = [proc] + proc.children(recursive=True)
    except psutil.Error:
        return 0, 0
    for p in procs:
        try:
            mem = p.memory_info()
        except psutil.Error:
            continue
        total += mem.rss
        anon += mem.rss - getattr(mem, "shared", 0)
    return total, anon


def peak_tree_rss(cmd: Sequence[str], log: Path, interval: float = 0.02, timeout: float = 1800) -> Dict:
    """Run `cmd`, polling the RSS of its process tree every `interval` s.

    Returns peak_rss and peak_anon (bytes), seconds and rc.
    """
    import psutil

    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    peak = peak_anon = 0
    with open(log, "w") as f:
        proc = subprocess.Popen(list(cmd), cwd=REPO, env=subprocess_env(), stdout=f, stderr=subprocess.STDOUT,
                                start_new_session=True)
        watched = psutil.Process(proc.pid)
        while proc.poll() is None:
            rss, anon = tree_rss(watched)
            peak, peak_anon = max(peak, rss), max(peak_anon, anon)
            if time.perf_counter() - start > timeout:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                break
            time.sleep(interval)
    return {"peak_rss": peak, "peak_anon": peak_anon, "seconds": time.perf_counter() - start,
            "rc": proc.returncode}


def image_files(input_dir: Path) -> List[Path]:
    """Every image of a data set in the competition layout (all splits), sorted."""
    return sorted(p for images in sorted(input_dir.glob("*/Images")) for p in images.rglob("*.jpg"))


def plain_read_resize(files: Sequence[Path], size: int) -> float:
    """Seconds of a plain single-process, single-thread cv2.imread + cv2.resize loop over `files`."""
    import cv2

    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        start = time.perf_counter()
        for path in files:
            cv2.resize(cv2.imread(str(path)), (size, size))
        return time.perf_counter() - start
    finally:
        cv2.setNumThreads(threads)


def near_heatmap_border(keypoints: np.ndarray, params: np.ndarray, cfg, margin: float = 1.5) -> np.ndarray:
    """(N, 24) bool: keypoint (original pixels (N, 24, 3)) within `margin` cells of the heatmap's edge."""
    from . import codec

    uv = codec.input_to_cell(codec.orig_to_input(keypoints[..., :2], params[:, None, :]), cfg.model.stride)
    hm = cfg.heatmap_size
    return (uv.min(-1) < margin - 0.5) | (uv.max(-1) > hm - 0.5 - margin)


def decode_floor(keypoints: np.ndarray, params: np.ndarray, categories: Sequence[str], cfg,
                 refine: Optional[str] = None) -> float:
    """NE of the ground truth encoded to heatmaps and decoded back (the codec's error floor).

    keypoints: (N, 24, 3) original pixels; params: (N, 4) letterbox transforms;
    categories: (N,). Uses cfg.codec (sigma, refine unless `refine` is given)
    and cfg.model.stride; points outside the heatmap get an empty map, as in training.
    """
    from . import codec
    from .metrics import normalized_error

    refine = refine or cfg.codec.refine
    stride, sigma, hm = cfg.model.stride, cfg.codec.sigma, cfg.heatmap_size
    categories = np.asarray(categories, dtype=object)
    pred = np.zeros(keypoints.shape[:2] + (2,))
    for cat in sorted(set(categories)):
        rows = np.nonzero(categories == cat)[0]
        cols = np.array(category_indices(cat))
        kps = keypoints[rows][:, cols]
        uv = codec.input_to_cell(codec.orig_to_input(kps[..., :2], params[rows][:, None, :]), stride)
        weight = (kps[..., 2] >= 0) & codec.inside(uv, (hm, hm))
        maps = np.stack([codec.encode(uv[i], weight[i], (hm, hm), sigma) for i in range(len(rows))])
        decoded, _ = codec.decode(maps, refine, sigma)
        pred[rows[:, None], cols[None, :]] = codec.cells_to_original(decoded, params[rows], stride)
    return normalized_error(keypoints, pred, categories)["ne"]


# --------------------------------------------------------------------------- TensorFlow helpers (workers)


def conv_flops(model) -> int:
    """Forward FLOPs per image of the Conv2D (and depthwise) layers: Σ 2·kh·kw·cin·cout·Hout·Wout.

    Nested models (keras.applications backbones) are counted too.
    """
    import keras

    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            total += conv_flops(layer)
        elif isinstance(layer, keras.layers.DepthwiseConv2D):
            kh, kw = layer.kernel_size
            h, w = layer.output.shape[1:3]
            total += 2 * kh * kw * layer.input.shape[-1] * layer.depth_multiplier * h * w
        elif isinstance(layer, keras.layers.Conv2D):
            kh, kw = layer.kernel_size
            h, w = layer.output.shape[1:3]
            cin = layer.input.shape[-1] // layer.groups
            total += 2 * kh * kw * cin * layer.filters * h * w
    return int(total)


def matmul_gflops(dtype: str, n: int = 2048, seconds: float = 1.0, windows: int = 2) -> float:
    """Best GFLOP/s of repeated n×n tf.matmul in `dtype` ('float32' | 'bfloat16') over windows of ≥ `seconds`."""
    import tensorflow as tf

    a = tf.cast(tf.random.uniform((n, n), -1, 1), dtype)
    b = tf.cast(tf.random.uniform((n, n), -1, 1), dtype)
    tf.matmul(a, b).numpy()  # warm-up (and oneDNN primitive creation)
    best = 0.0
    for _ in range(windows):
        count, start = 0, time.perf_counter()
        while True:
            c = tf.matmul(a, b)
            count += 1
            if time.perf_counter() - start >= seconds:
                break
        c[0, 0].numpy()
        best = max(best, 2.0 * n ** 3 * count / (time.perf_counter() - start) / 1e9)
    return best


def build_trainer(cfg, policy: str, num_keypoints: int):
    """Model + HeatmapTrainer compiled as train.py does, under Keras dtype `policy`."""
    import keras

    from . import hardware
    from .models import build_model
    from .train import make_trainer

    keras.mixed_precision.set_global_policy(policy)
    with hardware.make_strategy(cfg.train.distribute).scope():
        trainer = make_trainer(build_model(cfg, num_keypoints), cfg.train.loss)
        trainer.compile(optimizer=keras.optimizers.Adam(cfg.train.lr), jit_compile=False)
        trainer.build((None, cfg.model.input_size, cfg.model.input_size, 3))
        trainer.optimizer.build(trainer.trainable_variables)
    return trainer


def fit_rates(trainer, dataset, steps: int, skip: int = 2) -> Tuple[float, float]:
    """Steady-state training steps per wall second and per CPU second of this process (all threads).

    trainer.fit runs steps + skip + 1 steps on `dataset`; the first `skip` are not timed.
    CPU seconds hardly grow when other work shares the machine, so their rate is the steadier one.
    """
    import keras

    stamps: List[Tuple[float, float]] = []

    class Stamp(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            stamps.append((time.perf_counter(), time.process_time()))

    trainer.fit(dataset, epochs=1, steps_per_epoch=steps + skip + 1, verbose=0, callbacks=[Stamp()])
    (wall0, cpu0), (wall1, cpu1) = stamps[skip], stamps[-1]
    return steps / (wall1 - wall0), steps / max(cpu1 - cpu0, 1e-9)


def attempt(out: Dict, key: str, fn: Callable[[], object]):
    """out[key] = fn(), or {'error': ...} when it raises; returns the value (None on error)."""
    try:
        out[key] = fn()
        return out[key]
    except Exception as err:  # noqa: BLE001 - one failing measurement must not stop the others
        traceback.print_exc()
        out[key] = {"error": f"{type(err).__name__}: {err}"}
        return None


# --------------------------------------------------------------------------- workers (subprocesses)


def worker_throughput(work: str, config: str, category: str, steps: int, reps: int, matmul_s: float) -> Dict:
    """Matmul peaks, model FLOPs, training img/s on tensors (training dtype and fp32) and with the real pipeline."""
    from . import hardware
    from .config import load_config
    from .data import make_batch, train_dataset
    from .train import FoldData

    cfg = load_config(config)
    threads = hardware.configure_threads(cfg.train.threads)
    import tensorflow as tf

    policy = hardware.resolve_precision(cfg.train.precision)
    out: Dict = {"policy": policy, "threads": threads, "tf_version": tf.__version__,
                 "batch_size": cfg.train.batch_size}
    print(f"throughput: policy {policy}, {threads} thread(s)", flush=True)
    attempt(out, "matmul_gflops_fp32", lambda: matmul_gflops("float32", seconds=matmul_s, windows=reps))
    attempt(out, "matmul_gflops_bf16", lambda: matmul_gflops("bfloat16", seconds=matmul_s, windows=reps))
    print(f"throughput: matmul GFLOP/s fp32 {out['matmul_gflops_fp32']}, bf16 {out['matmul_gflops_bf16']}",
          flush=True)
    data = FoldData(work, cfg, category, 0)
    bs = cfg.train.batch_size
    images, maps, weights = make_batch(data.train, np.arange(bs), cfg, data.flip_index)
    in_memory = tf.data.Dataset.from_tensors((images, (maps, weights))).repeat()
    pipeline = train_dataset(data.train, cfg, data.flip_index)
    trainers = {policy: build_trainer(cfg, policy, data.num_keypoints)}
    if policy != "float32":
        trainers["float32"] = build_trainer(cfg, "float32", data.num_keypoints)
    out["forward_flops"] = conv_flops(trainers[policy].net)
    runs = {"memory": (policy, in_memory), "pipeline": (policy, pipeline), "memory_fp32": ("float32", in_memory)}
    per_rep: Dict[str, List[Optional[float]]] = {name: [] for name in runs}
    per_rep_cpu: Dict[str, List[Optional[float]]] = {name: [] for name in runs}
    for name, (pol, ds) in runs.items():  # warm-up: traces the train function for this input
        attempt(out, f"warmup_{name}", lambda: fit_rates(trainers[pol], ds, 2, skip=1))
    for rep in range(reps):  # interleaved, so a load change on the machine hits every run alike
        for name, (pol, ds) in runs.items():
            if isinstance(out.get(f"warmup_{name}"), dict):
                continue
            rates = attempt(out, f"_rate_{name}", lambda: fit_rates(trainers[pol], ds, steps)) or (None, None)
            per_rep[name].append(rates[0])
            per_rep_cpu[name].append(rates[1])
            if rates[0] is not None:
                print(f"throughput: rep {rep} {name}: {rates[0] * bs:.1f} img/s "
                      f"({rates[1] * bs:.1f} img per CPU second)", flush=True)
    out["steps_per_s_reps"], out["steps_per_cpu_s_reps"] = per_rep, per_rep_cpu
    out["steps_per_s"] = {n: max(v for v in r if v) for n, r in per_rep.items() if any(r)}
    for name in runs:  # keep only the errors of the warm-up and timed runs
        for prefix in ("warmup_", "_rate_"):
            if not isinstance(out.get(prefix + name), dict):
                out.pop(prefix + name, None)
    return out


def worker_tta(work: str, config: str, category: str, reps: int) -> Dict:
    """predict_images time on the test cache with and without flip TTA (fresh model of `config`)."""
    from . import hardware, tta
    from .config import load_config
    from .keypoints import category_flip_index
    from .models import build_model
    from .predict import predict_images
    from .preprocess import load_cache, load_index

    cfg = load_config(config)
    hardware.setup_inference(cfg)
    policy = hardware.resolve_precision(cfg.train.precision)
    prep = Path(work) / "prep"
    index = load_index(prep, "test")
    cache = load_cache(prep, "test", cfg.model.input_size)
    images = np.stack([cache[r] for r in index.cache_row])
    model = build_model(cfg, len(category_indices(category)))
    flip_index = category_flip_index(category)
    cfgs = {flip: dataclasses.replace(cfg, predict=dataclasses.replace(cfg.predict, flip_tta=flip))
            for flip in (False, True)}
    bs = cfg.predict.batch_size

    def forward_only(flip: bool) -> None:  # the model calls of predict_images alone: where the time goes
        for i in range(0, len(images), bs):
            batch = images[i:i + bs]
            batch = np.concatenate([batch, np.zeros((bs - len(batch),) + batch.shape[1:], batch.dtype)])
            model.predict_on_batch(np.concatenate([batch, tta.flip_images(batch)]) if flip else batch)

    times: Dict[str, List[float]] = {}
    cpu: Dict[str, List[float]] = {}
    jobs = {"plain": lambda: predict_images(model, images, index.params, cfgs[False], flip_index),
            "tta": lambda: predict_images(model, images, index.params, cfgs[True], flip_index),
            "model_plain": lambda: forward_only(False), "model_tta": lambda: forward_only(True)}
    for flip, c in cfgs.items():  # warm-up
        predict_images(model, images[:bs], index.params[:bs], c, flip_index)
    for rep in range(reps):  # back-to-back pairs: ratios are per-rep medians
        for name, job in jobs.items():
            wall0, cpu0 = time.perf_counter(), time.process_time()
            job()
            times.setdefault(name, []).append(time.perf_counter() - wall0)
            cpu.setdefault(name, []).append(time.process_time() - cpu0)
        print(f"tta: rep {rep}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items()), flush=True)
    return {"policy": policy, "n_images": len(images), "seconds": times, "cpu_seconds": cpu}


def worker_eval(work: str, input_dir: str, config: str, overrides: List[str], run: str,
                categories: List[str]) -> Dict:
    """Test NE of the fold-0 models of `run`, predicted with the config's own TTA and decoding."""
    from . import hardware
    from .config import load_config
    from .keypoints import category_flip_index
    from .metrics import normalized_error
    from .predict import load_model, predict_images
    from .predictions import fold_dir
    from .preprocess import load_cache, load_index
    from .score import test_answers

    cfg = load_config(config, overrides)
    hardware.setup_inference(cfg)
    prep = Path(work) / "prep"
    index = load_index(prep, "test")
    answers = test_answers(input_dir, index)
    if answers is None:
        raise FileNotFoundError(f"{input_dir}/test/answers.csv not found")
    cache = load_cache(prep, "test", cfg.model.input_size)
    pred = np.zeros((len(index.image_id), 24, 2))
    done = np.zeros(len(index.image_id), bool)
    for cat in categories:
        model = load_model(fold_dir(work, run, cat, 0) / "model.keras")
        rows = np.nonzero(index.category == cat)[0]
        images = np.stack([cache[r] for r in index.cache_row[rows]])
        xy = predict_images(model, images, index.params[rows], cfg, category_flip_index(cat))["xy"]
        pred[rows[:, None], np.array(category_indices(cat))[None, :]] = xy
        done[rows] = True
    ne = normalized_error(answers[done], pred[done], index.category[done])
    return {"ne": ne["ne"], "per_category": ne["per_category"], "n_images": int(done.sum()),
            "n_points": ne["n_points"], "flip_tta": cfg.predict.flip_tta, "refine": cfg.codec.refine}


WORKERS = {"throughput": worker_throughput, "tta": worker_tta, "eval": worker_eval}


# --------------------------------------------------------------------------- the bench


class Bench:
    """Runs the steps of one bench mode, recording every key in results.json as it goes."""

    def __init__(self, output, mode: str, command: str):
        self.mode_name, self.mode = mode, MODES[mode]
        self.root = Path(output) / "bench"
        self.data, self.work = self.root / "data", self.root / "work"
        self.logs, self.worker_dir = self.root / "logs", self.root / "workers"
        self.started = time.perf_counter()
        self.results_path = self.root / "results.json"
        self.data_error: Optional[str] = None
        self.results: Dict = {
            "meta": {"cpu": cpu_model(), "machine": machine_text(), "cores": available_cores(),
                     "python": platform.python_version(),
                     "tf_version": package_version("tensorflow-cpu", "tensorflow", "tensorflow-macos"),
                     "dtype": None, "mode": mode, "budget_s_per_model": self.mode.budget_s,
                     "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                     "command": command, "host": platform.node(), "runtime_s": None,
                     "mode_settings": dataclasses.asdict(self.mode)},
            "keys": {},
        }

    # ---------------------------------------------------------------- bookkeeping

    def log(self, msg: str) -> None:
        print(f"[bench {time.perf_counter() - self.started:6.0f} s] {msg}", flush=True)

    def record(self, key: str, value=None, error: Optional[str] = None, **detail) -> None:
        self.results["keys"][key] = make_entry(key, value, error, **detail)
        entry = self.results["keys"][key]
        verdict = "" if entry["pass"] is None else (" PASS" if entry["pass"] else " FAIL")
        shown = f"error: {error}" if error else f"{format_value(entry['value'])}"
        self.log(f"  {key} = {shown}{' (goal ' + entry['goal'] + ')' if entry['goal'] else ''}{verdict}")

    def save(self) -> None:
        """results.json (results_steps.json for a --steps subset, so a complete run's file survives)."""
        self.results["meta"]["runtime_s"] = round(time.perf_counter() - self.started, 1)
        write_text_atomic(self.results_path, json.dumps(self.results, indent=2, default=str))

    def run_step(self, number: int, total: int, name: str, keys: Sequence[str], fn: Callable[[], None]) -> None:
        """Run one step; keys it did not record get its error (or 'not measured')."""
        self.log(f"step {number}/{total}: {name}")
        start = time.perf_counter()
        error = None
        try:
            fn()
        except Exception as err:  # noqa: BLE001
            traceback.print_exc()
            error = f"{type(err).__name__}: {err}"
        for key in keys:
            if key not in self.results["keys"]:
                self.record(key, error=error or "not measured")
        self.log(f"step {name} done in {time.perf_counter() - start:.0f} s" + (f" (error: {error})" if error else ""))
        self.save()

    def run_worker(self, name: str, timeout: float, tag: str = "", **kwargs) -> Dict:
        """Run WORKERS[name](**kwargs) in a subprocess; its JSON result (RuntimeError when it fails)."""
        label = f"{name}{'_' + tag if tag else ''}"
        out = self.worker_dir / f"{label}.json"
        out.unlink(missing_ok=True)
        cmd = [sys.executable, "-m", "pipeline.bench", "--worker", name, "--worker-args", json.dumps(kwargs),
               "--worker-out", str(out)]
        rc, seconds = run_logged(cmd, self.logs / f"{label}.log", timeout)
        if rc != 0 or not out.exists():
            raise RuntimeError(f"worker {label} exited with {rc} after {seconds:.0f} s: "
                               f"{tail(self.logs / f'{label}.log', 3)}")
        self.log(f"  worker {label}: {seconds:.0f} s")
        return json.loads(out.read_text())

    def need_data(self) -> None:
        if self.data_error:
            raise RuntimeError(f"bench data unavailable ({self.data_error})")

    # ---------------------------------------------------------------- steps

    def step_data(self) -> None:
        """Synthetic data set and its preprocessing (shared by most keys)."""
        from . import synth
        from .config import load_config
        from .preprocess import preprocess

        try:
            cfg = load_config(DEMO_CONFIG)
            summary = synth.generate(self.data, self.mode.train_per_cat, self.mode.test_per_cat, seed=0,
                                     progress=False)
            self.log(f"  data: {summary['images']}{' (reused)' if summary['skipped'] else ''}")
            manifest = preprocess(self.data, self.work, cfg.model.input_size, cfg.data.folds, cfg.data.fold_seed,
                                  cfg.data.jobs, cfg.data.categories, margin=cfg.model.margin)
            self.results["meta"]["data"] = {"train_images": manifest["n_train"], "test_images": manifest["n_test"]}
        except Exception as err:
            self.data_error = f"{type(err).__name__}: {err}"
            raise

    def step_decode_floor(self) -> None:
        from .config import load_config
        from .preprocess import load_index

        self.need_data()
        cfg = load_config(DEMO_CONFIG)
        index = load_index(self.work / "prep", "train")
        ne = decode_floor(index.keypoints, index.params, index.category, cfg)
        border = near_heatmap_border(index.keypoints, index.params, cfg) & (index.keypoints[..., 2] == 1)
        interior = index.keypoints.copy()
        interior[border, 2] = 0  # not counted by the NE
        self.record("decode_floor_ne", ne, refine=cfg.codec.refine, sigma=cfg.codec.sigma,
                    n_images=len(index.image_id),
                    border_point_fraction=float(border.sum() / max((index.keypoints[..., 2] == 1).sum(), 1)),
                    ne_without_border_points=decode_floor(interior, index.params, index.category, cfg))
        self.record("decode_floor_ne_argmax", decode_floor(index.keypoints, index.params, index.category, cfg,
                                                           refine="none"), refine="none")

    def scale_sets(self) -> Dict[str, Path]:
        """The 1× and SCALE× synthetic data sets of the preprocessing measurements."""
        from . import synth

        sets = {}
        for factor in (1, SCALE):
            path = self.root / f"scale{factor}x"
            summary = synth.generate(path, self.mode.scale_train_per_cat * factor,
                                     self.mode.scale_test_per_cat * factor, seed=1, progress=False)
            self.log(f"  scale {factor}x: {summary['images']}{' (reused)' if summary['skipped'] else ''}")
            sets[f"{factor}x"] = path
        return sets

    def step_preprocess_speed(self) -> None:
        """preprocess() img/s vs a plain imread+resize loop, on the SCALE× set, median over back-to-back pairs."""
        from .config import load_config
        from .preprocess import preprocess

        cfg = load_config(DEMO_CONFIG)
        source = self.scale_sets()[f"{SCALE}x"]
        files = image_files(source)
        out = self.root / "speed"

        def run_preprocess() -> float:
            start = time.perf_counter()
            preprocess(source, out, cfg.model.input_size, cfg.data.folds, cfg.data.fold_seed, jobs=-1,
                       categories=cfg.data.categories, force=True, margin=cfg.model.margin)
            return time.perf_counter() - start

        run_preprocess()  # warm-up: page cache, imports, joblib workers
        plain, ours = [], []
        for _ in range(self.mode.reps):  # back-to-back pairs
            plain.append(plain_read_resize(files, cfg.model.input_size))
            ours.append(run_preprocess())
        n = len(files)
        self.record("preprocess_speedup", paired_ratio(plain, ours), n_images=n,
                    preprocess_img_per_s=n / min(ours), plain_img_per_s=n / min(plain),
                    preprocess_seconds=ours, plain_seconds=plain, cores=self.results["meta"]["cores"])

    def step_preprocess_rss(self) -> None:
        """Peak RSS of `python -m pipeline.preprocess` (process tree) on the SCALE× vs the 1× set.

        The two runs alternate `reps` times; the key is the median of the paired ratios.
        """
        sets = self.scale_sets()
        peaks: Dict[str, List[Dict]] = {name: [] for name in sets}
        for rep in range(self.mode.reps):
            for name, source in sets.items():
                cmd = [sys.executable, "-m", "pipeline.preprocess", "--input", str(source), "--output",
                       str(self.root / "rss" / name), "--force", "--config", str(DEMO_CONFIG)]
                log = self.logs / f"preprocess_rss_{name}.log"
                peak = peak_tree_rss(cmd, log)
                if peak["rc"] != 0:
                    raise RuntimeError(f"preprocess on {source} exited with {peak['rc']}: {tail(log, 3)}")
                peaks[name].append(peak)
            self.log(f"  rep {rep}: peak RSS " + ", ".join(
                f"{name} {p[-1]['peak_rss'] / 2**20:.0f} MiB (non-shared {p[-1]['peak_anon'] / 2**20:.0f} MiB, "
                f"{p[-1]['seconds']:.1f} s)" for name, p in peaks.items()))
        big, small = peaks[f"{SCALE}x"], peaks["1x"]
        self.record("preprocess_rss_ratio", paired_ratio([p["peak_rss"] for p in big], [p["peak_rss"] for p in small]),
                    peak_rss_mib={k: [round(p["peak_rss"] / 2**20, 1) for p in v] for k, v in peaks.items()},
                    peak_nonshared_mib={k: [round(p["peak_anon"] / 2**20, 1) for p in v] for k, v in peaks.items()},
                    nonshared_ratio=paired_ratio([p["peak_anon"] for p in big], [p["peak_anon"] for p in small]))

    def step_throughput(self) -> None:
        self.need_data()
        r = self.run_worker("throughput", timeout=600 + 60 * self.mode.steps * self.mode.reps,
                            work=str(self.work), config=str(DEMO_CONFIG), category=THROUGHPUT_CATEGORY,
                            steps=self.mode.steps, reps=self.mode.reps, matmul_s=self.mode.matmul_s)
        self.results["meta"]["dtype"] = r["policy"]
        bs, rates, flops = r["batch_size"], r.get("steps_per_s", {}), r.get("forward_flops")

        def err(*keys):
            for key in keys:
                value = r.get(key)
                if isinstance(value, dict) and "error" in value:
                    return value["error"]
            return None

        for key in ("matmul_gflops_fp32", "matmul_gflops_bf16"):
            self.record(key, None if err(key) else r[key], error=err(key))
        self.record("model_gflops_per_image", flops / 1e9 if flops else None,
                    error=None if flops else "no FLOP count")
        if "memory" in rates:
            self.record("train_img_per_s", rates["memory"] * bs, dtype=r["policy"], batch_size=bs,
                        category=THROUGHPUT_CATEGORY, threads=r["threads"])
        peak_key = "matmul_gflops_bf16" if "bfloat16" in r["policy"] else "matmul_gflops_fp32"
        if "memory" in rates and flops and not err(peak_key):
            train_flops = 3 * flops * rates["memory"] * bs
            self.record("train_peak_fraction", train_flops / (r[peak_key] * 1e9), train_gflops=train_flops / 1e9,
                        peak_gflops=r[peak_key], peak_dtype=peak_key.rsplit("_", 1)[1])
        else:
            self.record("train_peak_fraction", error=err(peak_key, "warmup_memory", "_rate_memory") or "not measured")
        reps, cpu_reps = r.get("steps_per_s_reps", {}), r.get("steps_per_cpu_s_reps", {})
        if "memory" in rates and "pipeline" in rates:
            self.record("input_overhead", 1 - paired_ratio(reps["pipeline"], reps["memory"]),
                        steps_per_s_memory=reps["memory"], steps_per_s_pipeline=reps["pipeline"],
                        best_of_overhead=1 - rates["pipeline"] / rates["memory"],
                        cpu_time_overhead=1 - paired_ratio(cpu_reps["pipeline"], cpu_reps["memory"]))
        else:
            self.record("input_overhead", error=err("warmup_pipeline", "_rate_pipeline", "warmup_memory", "_rate_memory")
                        or "not measured")
        if "memory" in rates and "memory_fp32" in rates:
            self.record("bf16_vs_fp32_img_per_s", paired_ratio(reps["memory"], reps["memory_fp32"]),
                        dtype=r["policy"], img_per_s_fp32=rates["memory_fp32"] * bs)
        else:
            self.record("bf16_vs_fp32_img_per_s", error=err("warmup_memory_fp32", "_rate_memory_fp32", "warmup_memory",
                                                            "_rate_memory") or "not measured")

    def step_tta(self) -> None:
        self.need_data()
        r = self.run_worker("tta", timeout=900, work=str(self.work), config=str(DEMO_CONFIG),
                            category=THROUGHPUT_CATEGORY, reps=2 * self.mode.reps)
        t, cpu, n = r["seconds"], r["cpu_seconds"], r["n_images"]
        self.record("tta_time_ratio", paired_ratio(t["tta"], t["plain"]), n_images=n, seconds=t,
                    model_only_ratio=paired_ratio(t["model_tta"], t["model_plain"]),
                    cpu_time_ratio=paired_ratio(cpu["tta"], cpu["plain"]), dtype=r["policy"])
        self.record("inference_img_per_s_plain", n / min(t["plain"]), n_images=n)
        self.record("inference_img_per_s_tta", n / min(t["tta"]), n_images=n)

    def train_one(self, config: Path, run: str, category: str, extra: Sequence[str] = ()) -> Dict:
        """Fold 0 of `category` trained for the mode's budget in `python -m pipeline.train`; its metrics."""
        budget = self.mode.budget_s
        sets = [f"train.time_budget_s={budget}", "train.epochs=1000", "train.patience=1000", *extra]
        cmd = [sys.executable, "-m", "pipeline.train", "--output", str(self.work), "--config", str(config),
               "--run", run, "--category", category, "--fold", "0", "--force"]
        for s in sets:
            cmd += ["--set", s]
        log = self.logs / f"train_{run}_{category}.log"
        rc, wall = run_logged(cmd, log, timeout=4 * budget + 600)
        metrics_path = self.work / "runs" / run / category / "fold0" / "metrics.json"
        if rc != 0 or not metrics_path.exists():
            self.log(f"  train {run} {category}: FAILED (exit {rc}): {tail(log, 2)}")
            return {"error": f"exit {rc}", "wall_s": wall}
        m = json.loads(metrics_path.read_text())
        self.log(f"  train {run} {category}: {m['epochs']} epochs in {m['seconds']:.0f} s "
                 f"({m['train_img_per_s']:.1f} img/s, {m['precision']}), wall {wall:.0f} s, "
                 f"val NE {m['val_ne']:.4f}")
        return {"wall_s": wall, "epochs": m["epochs"], "train_s": m["seconds"], "val_ne": m["val_ne"],
                "img_per_s": m["train_img_per_s"], "precision": m["precision"]}

    def evaluate(self, config: Path, run: str, categories: Sequence[str], overrides: Sequence[str] = ()) -> Dict:
        return self.run_worker("eval", timeout=900, tag=run, work=str(self.work), input_dir=str(self.data),
                               config=str(config), overrides=list(overrides), run=run, categories=list(categories))

    def step_ne(self) -> None:
        """Demo vs seed CPM at equal training budget; in full mode also fp32 vs bf16 (one category)."""
        from .config import load_config

        self.need_data()
        configs = {"demo": DEMO_CONFIG, "seed_cpm": SEED_CONFIG}
        sizes = {name: (load_config(path).model.input_size, load_config(path).model.margin)
                 for name, path in configs.items()}
        if len(set(sizes.values())) != 1:
            raise ValueError(f"configs use different (model.input_size, model.margin) {sizes}; "
                             "one preprocessing cannot serve both")
        trainings: Dict[str, Dict[str, Dict]] = {name: {} for name in configs}
        for cat in CATEGORIES:  # interleaved, so a load change on the machine hits both configs alike
            for name, path in configs.items():
                trainings[name][cat] = self.train_one(path, f"bench_{name}", cat)
        ne = {}
        for name, path in configs.items():
            try:
                ne[name] = self.evaluate(path, f"bench_{name}", CATEGORIES)
                self.record(f"test_ne_{name}", ne[name]["ne"], per_category=ne[name]["per_category"],
                            n_images=ne[name]["n_images"], trainings=trainings[name])
            except Exception as err:  # noqa: BLE001
                self.record(f"test_ne_{name}", error=f"{type(err).__name__}: {err}", trainings=trainings[name])
        if len(ne) < 2:
            missing = [n for n in configs if n not in ne]
            self.record("ne_ratio_vs_seed", error=f"no test NE for {', '.join(missing)} (see logs/)")
        else:
            self.record("ne_ratio_vs_seed", ne["demo"]["ne"] / ne["seed_cpm"]["ne"], budget_s=self.mode.budget_s,
                        ne_demo=ne["demo"]["ne"], ne_seed_cpm=ne["seed_cpm"]["ne"],
                        epochs={n: {c: t.get("epochs") for c, t in tr.items()} for n, tr in trainings.items()})
        if self.mode.precision_ne:
            self.precision_ne(trainings["demo"].get(PRECISION_CATEGORY, {}))

    def precision_ne(self, demo_run: Dict) -> None:
        """NE of bf16 vs fp32 training of the demo config on PRECISION_CATEGORY, same budget."""
        cat = PRECISION_CATEGORY
        runs = {"float32": "bench_demo_fp32", "mixed_bfloat16": "bench_demo"}
        if demo_run.get("precision") != "mixed_bfloat16":  # demo's own run was not bf16: train one
            runs["mixed_bfloat16"] = "bench_demo_bf16"
        info = {}
        for precision, run in runs.items():
            if run != "bench_demo":
                info[precision] = self.train_one(DEMO_CONFIG, run, cat, [f"train.precision={precision}"])
            else:
                info[precision] = demo_run
        ne = {p: self.evaluate(DEMO_CONFIG, run, [cat], [f"train.precision={p}"])["ne"] for p, run in runs.items()}
        self.record("ne_bf16_vs_fp32", ne["mixed_bfloat16"] / ne["float32"], category=cat,
                    ne_bf16=ne["mixed_bfloat16"], ne_fp32=ne["float32"], trainings=info)

    STEPS = (
        ("data", ()),
        ("decode_floor", ("decode_floor_ne", "decode_floor_ne_argmax")),
        ("preprocess_speed", ("preprocess_speedup",)),
        ("preprocess_rss", ("preprocess_rss_ratio",)),
        ("throughput", ("matmul_gflops_fp32", "matmul_gflops_bf16", "model_gflops_per_image", "train_img_per_s",
                        "train_peak_fraction", "input_overhead", "bf16_vs_fp32_img_per_s")),
        ("tta", ("tta_time_ratio", "inference_img_per_s_plain", "inference_img_per_s_tta")),
        ("ne", ("test_ne_demo", "test_ne_seed_cpm", "ne_ratio_vs_seed")),
    )

    def run(self, steps: Optional[Sequence[str]] = None) -> Dict:
        """Run every step (or `steps`, plus the data step); returns the results."""
        if steps is not None:
            self.results_path = self.root / "results_steps.json"
        chosen = [(n, k) for n, k in self.STEPS if steps is None or n in steps or n == "data"]
        for i, (name, keys) in enumerate(chosen, 1):
            if name == "ne" and self.mode.precision_ne:
                keys = keys + ("ne_bf16_vs_fp32",)
            self.run_step(i, len(chosen), name, keys, getattr(self, f"step_{name}"))
        self.log(f"done in {(time.perf_counter() - self.started) / 60:.1f} min → {self.results_path}")
        return self.results


# --------------------------------------------------------------------------- tables


def render_table(results: Dict) -> str:
    """Markdown: the run's settings, then one row per key (value, goal, pass/fail)."""
    meta = results["meta"]
    runtime = meta.get("runtime_s")
    lines = [
        f"Measured {meta['date']} in `{meta['mode']}` mode "
        f"({runtime / 60:.1f} min)." if runtime else f"Measured {meta['date']} in `{meta['mode']}` mode.",
        "",
        "| Setting | Value |",
        "|---|---|",
        f"| Machine | {meta.get('machine') or str(meta['cpu']) + ', ' + str(meta['cores']) + ' core(s)'} |",
        f"| TensorFlow | {meta['tf_version']} (Python {meta['python']}) |",
        f"| Training dtype | {meta.get('dtype') or 'unknown'} |",
        f"| Mode | {meta['mode']} (training budget {meta['budget_s_per_model']:g} s per model) |",
        f"| Date | {meta['date']} |",
        f"| Command | `{meta['command']}` |",
        "",
        "| Key | Value | Goal | Result |",
        "|---|---|---|---|",
    ]
    keys = results["keys"]
    ordered = [k for k in GOALS if k in keys] + [k for k in INFO_KEYS if k in keys] + \
              [k for k in keys if k not in GOALS and k not in INFO_KEYS]
    for key in ordered:
        e = keys[key]
        if e.get("error"):
            value, verdict = "error: " + str(e["error"]).replace("|", "/")[:160], "ERROR"
        else:
            value = format_value(e["value"])
            verdict = "info" if e.get("goal") is None else {True: "pass", False: "FAIL", None: "n/a"}[e.get("pass")]
        lines.append(f"| `{key}` | {value} | {e.get('goal') or '—'} | {verdict} |")
    return "\n".join(lines) + "\n"


DOCS_TEMPLATE = """# Benchmarks

Generated by `make bench` (`pipeline/bench.py`); the part between the markers is
rewritten by every run. What each key measures is described in the module
docstring of `pipeline/bench.py`; raw numbers and details are in
`OUTPUT/bench/results.json`.

{start}
{table}{end}
"""


def write_tables(results: Dict, docs: Path, readme: Path) -> None:
    """Replace the bench block of `docs` (whole file from the template without markers) and of `readme`."""
    block = render_table(results)
    text = docs.read_text() if docs.exists() else ""
    new = replace_between_markers(text, block)
    if new is None:
        new = DOCS_TEMPLATE.format(start=BENCH_START, table=block, end=BENCH_END)
    write_text_atomic(docs, new)
    print(f"bench: table written to {docs}")
    if readme.exists():
        new = replace_between_markers(readme.read_text(), block)
        if new is None:
            print(f"bench: {readme} holds no {BENCH_START} … {BENCH_END} markers; left alone")
        else:
            write_text_atomic(readme, new)
            print(f"bench: table written to {readme}")


# --------------------------------------------------------------------------- CLI


def run_worker_cli(name: str, args_json: str, out: str) -> int:
    """Subprocess side of Bench.run_worker."""
    result = WORKERS[name](**json.loads(args_json))
    write_text_atomic(out, json.dumps(result, indent=2, default=float))
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Benchmarks of DESIGN §5 → OUTPUT/bench/results.json, "
                                                 "docs/benchmarks.md")
    parser.add_argument("--output", default="output")
    parser.add_argument("--mode", choices=sorted(MODES), default="full")
    parser.add_argument("--steps", default=None,
                        help=f"comma-separated subset of {','.join(n for n, _ in Bench.STEPS)} "
                             "(development; the tables are then left alone)")
    parser.add_argument("--docs", default=str(REPO / "docs" / "benchmarks.md"))
    parser.add_argument("--readme", default=str(REPO / "README.md"))
    parser.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    parser.add_argument("--worker-args", default="{}", help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return run_worker_cli(args.worker, args.worker_args, args.worker_out)
    shown = ["--output", args.output, "--mode", args.mode] + (["--steps", args.steps] if args.steps else [])
    bench = Bench(args.output, args.mode, "python -m pipeline.bench " + shlex.join(shown))
    steps = [s.strip() for s in args.steps.split(",")] if args.steps else None
    unknown = set(steps or ()) - {n for n, _ in Bench.STEPS}
    if unknown:
        parser.error(f"unknown step(s) {sorted(unknown)}")
    results = bench.run(steps)
    if steps is None:
        write_tables(results, Path(args.docs), Path(args.readme))
    else:
        print("bench: --steps given, docs and README tables left alone")
    failed = [k for k, e in results["keys"].items() if e["pass"] is False]
    errors = [k for k, e in results["keys"].items() if e["error"]]
    print(f"bench: {len(results['keys'])} keys, {len(failed)} below goal {failed}, {len(errors)} error(s) {errors}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
