"""The bench's measures: one step per group of keys, each calling the pipeline's own functions.

Training is `python -m pipeline.stages.train`; preprocessing `pipeline.stages.preprocess.preprocess` (and its
CLI for the RSS measurement); targets `pipeline.data.make_batch`; trainers
`pipeline.stages.train.build_trainer`; prediction `pipeline.stages.predict.predict_fold` /
`predict_images`; decoding `pipeline.heatmap.codec`; the mean shape `pipeline.stages.baseline`. Nothing here
re-implements them: the bench measures what `make` runs.

Steps run in the bench process (`step_*(bench)`); TensorFlow work runs in workers
(`worker_*`, subprocesses started by Bench.run_worker).
"""
from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from pipeline import frames
from pipeline.keypoints import (
    CATEGORIES,
    NUM_KEYPOINTS,
    category_flip_index,
    category_indices,
)
from pipeline.models.flops import model_flops
from pipeline.tools.bench.harness import (
    DEMO_CONFIG,
    PRECISION_CATEGORY,
    REAL_CONFIG,
    REPO,
    SCALE,
    SEED_CONFIG,
    THROUGHPUT_CATEGORY,
    attempt,
    paired_ratio,
    peak_tree_rss,
    tail,
)
from pipeline.tools.rehearse import image_files, plain_loop_fresh

# --------------------------------------------------------------------------- pure helpers


def near_heatmap_border(keypoints: np.ndarray, params: np.ndarray, cfg, margin: float = 1.5) -> np.ndarray:
    """(N, 24) bool: keypoint (original pixels (N, 24, 3)) within `margin` cells of the heatmap's edge."""
    from pipeline.heatmap import codec

    uv = codec.input_to_cell(frames.orig_to_input(keypoints[..., :2], params[:, None, :]), cfg.model.stride)
    hm = cfg.heatmap_size
    return (uv.min(-1) < margin - 0.5) | (uv.max(-1) > hm - 0.5 - margin)


def decode_floor(keypoints: np.ndarray, params: np.ndarray, categories: Sequence[str], cfg,
                 refine: Optional[str] = None) -> float:
    """NE of the ground truth encoded to training targets and decoded back (the codec's error floor).

    keypoints: (N, 24, 3) original pixels; params: (N, 4) letterbox transforms;
    categories: (N,). Targets are made by the training input's own `data.make_batch`
    (no augmentation; every annotated point supervised, points outside the heatmap
    get an empty map, as in training) and decoded by `codec.decode_to_original` with
    cfg.codec (refine unless `refine` is given).
    """
    from pipeline.data import SampleSet, make_batch, to_input_frame
    from pipeline.heatmap import codec
    from pipeline.scoring.metrics import normalized_error

    refine = refine or cfg.codec.refine
    enc_cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, supervise_occluded=True))
    size = cfg.model.input_size
    blank = np.zeros((1, size, size, 3), np.uint8)  # the images do not matter to the targets
    categories = np.asarray(categories, dtype=object)
    pred = np.zeros(keypoints.shape[:2] + (2,))
    for cat in sorted(set(categories)):
        rows = np.nonzero(categories == cat)[0]
        cols = np.array(category_indices(cat))
        xy, vis = to_input_frame(keypoints[rows][:, cols], params[rows])
        samples = SampleSet(blank, np.zeros(len(rows), np.int64), xy, vis)
        _, maps, _ = make_batch(samples, np.arange(len(rows)), enc_cfg, category_flip_index(cat), training=False)
        decoded, _ = codec.decode_to_original(maps, params[rows], cfg.model.stride, refine, cfg.codec.sigma)
        pred[rows[:, None], cols[None, :]] = decoded
    return normalized_error(keypoints, pred, categories)["ne"]


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


def fit_rates(trainer, dataset, steps: int, skip: int = 2) -> Tuple[float, float]:
    """Steady-state training steps per wall second and per CPU second of this process (all threads).

    trainer.fit runs steps + skip + 1 steps on `dataset`; the first `skip` are not timed.
    """
    import keras

    stamps: List[Tuple[float, float]] = []

    class Stamp(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            stamps.append((time.perf_counter(), time.process_time()))

    trainer.fit(dataset, epochs=1, steps_per_epoch=steps + skip + 1, verbose=0, callbacks=[Stamp()])
    (wall0, cpu0), (wall1, cpu1) = stamps[skip], stamps[-1]
    return steps / (wall1 - wall0), steps / max(cpu1 - cpu0, 1e-9)


# --------------------------------------------------------------------------- workers (subprocesses)


def worker_preprocess_time(input_dir: str, output: str, config: str) -> Dict:
    """Seconds of one `pipeline.stages.preprocess.preprocess` call (force: everything rebuilt), imports excluded."""
    from pipeline.config import load_config
    from pipeline.prep.preprocess import preprocess

    cfg = load_config(config)
    start = time.perf_counter()
    preprocess(input_dir, output, cfg.model.input_size, cfg.data.folds, cfg.data.fold_seed, cfg.data.jobs,
               cfg.data.categories, force=True, margin=cfg.model.margin)
    return {"seconds": time.perf_counter() - start}


def _trainer(cfg, policy: str, num_keypoints: int):
    """pipeline.stages.train.build_trainer under Keras dtype `policy`."""
    import keras

    from pipeline import hardware
    from pipeline.fit.trainer import build_trainer

    keras.mixed_precision.set_global_policy(policy)
    return build_trainer(cfg, num_keypoints, hardware.make_strategy(cfg.train.distribute))


def worker_throughput(work: str, run: str, config: str, category: str, steps: int, reps: int,
                      matmul_s: float) -> Dict:
    """Matmul peaks, model FLOPs, training img/s on tensors (training dtype and fp32) and with the real pipeline."""
    from pipeline import hardware
    from pipeline.config import load_config
    from pipeline.data import make_batch, train_dataset
    from pipeline.fit.fold_data import FoldData
    from pipeline.store.rundata import run_data

    cfg = load_config(config)
    threads = hardware.configure_threads(cfg.train.threads)
    import tensorflow as tf

    policy = hardware.resolve_precision(cfg.train.precision)
    out: Dict = {"policy": policy, "threads": threads, "tf_version": tf.__version__,
                 "batch_size": cfg.train.batch_size}
    print(f"throughput: policy {policy}, {threads} thread(s)", flush=True)
    attempt(out, "matmul_gflops_fp32", lambda: matmul_gflops("float32", seconds=matmul_s, windows=reps))
    attempt(out, "matmul_gflops_bf16", lambda: matmul_gflops("bfloat16", seconds=matmul_s, windows=reps))
    data = FoldData(run_data(work, run, cfg), cfg, category, 0)
    bs = cfg.train.batch_size
    images, maps, weights = make_batch(data.train, np.arange(bs), cfg, data.flip_index)
    in_memory = tf.data.Dataset.from_tensors((images, (maps, weights))).repeat()
    pipeline = train_dataset(data.train, cfg, data.flip_index)
    trainers = {policy: _trainer(cfg, policy, data.num_keypoints)}
    if policy != "float32":
        trainers["float32"] = _trainer(cfg, "float32", data.num_keypoints)
    out["forward_flops"] = model_flops(trainers[policy].net)
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
                print(f"throughput: rep {rep} {name}: {rates[0] * bs:.1f} img/s", flush=True)
    out["steps_per_s_reps"], out["steps_per_cpu_s_reps"] = per_rep, per_rep_cpu
    out["steps_per_s"] = {n: max(v for v in r if v) for n, r in per_rep.items() if any(r)}
    for name in runs:  # keep only the errors of the warm-up and timed runs
        for prefix in ("warmup_", "_rate_"):
            if not isinstance(out.get(prefix + name), dict):
                out.pop(prefix + name, None)
    return out


def worker_tta(work: str, run: str, config: str, category: str, reps: int) -> Dict:
    """predict_images time on the test cache with and without flip TTA (fresh model of `config`)."""
    from pipeline import hardware
    from pipeline.config import load_config
    from pipeline.heatmap import tta
    from pipeline.heatmap.inference import predict_images
    from pipeline.models import build_model
    from pipeline.store.rundata import run_data

    cfg = load_config(config)
    hardware.setup_inference(cfg)
    prep = run_data(work, run, cfg)
    cfg = cfg.for_category(category)  # the model and predict settings this category trains with
    policy = hardware.resolve_precision(cfg.train.precision)
    index = prep.test_index()
    cache = prep.cache("test")
    images = np.stack([cache[r] for r in index.cache_row])
    model = build_model(cfg, len(category_indices(category)))
    flip_index = category_flip_index(category)
    cfgs = {flip: dataclasses.replace(cfg, predict=dataclasses.replace(cfg.predict, flip_tta=flip))
            for flip in (False, True)}
    bs = cfg.predict.batch_size

    def forward_only(flip: bool) -> None:  # the model calls of predict_images alone: where the time goes
        half = max(1, bs // 2) if flip else bs
        for i in range(0, len(images), half):
            batch = images[i:i + half]
            batch = np.concatenate([batch, np.zeros((half - len(batch),) + batch.shape[1:], batch.dtype)])
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


def worker_eval(work: str, config: str, overrides: List[str], run: str, categories: List[str],
                speed: bool = False) -> Dict:
    """Test NE of the fold-0 models of `run`, predicted by `pipeline.stages.predict.predict_fold`.

    Each model's test predictions are what `make predict` writes (test.npz: the config's
    own TTA, merge and decoding); NE against the answers by `pipeline.metrics`. With
    `speed`, also the first category's inference img/s (predict_images, the config's TTA),
    GFLOPs per image and parameter count.
    """
    from pipeline import hardware, joint
    from pipeline.config import load_config
    from pipeline.heatmap.inference import load_model, predict_category
    from pipeline.heatmap.oof import predict_fold
    from pipeline.scoring.leaderboard import test_answers
    from pipeline.scoring.metrics import normalized_error
    from pipeline.store.layout import fold_dir
    from pipeline.store.predictions import load_npz
    from pipeline.store.rundata import run_data

    cfg = load_config(config, overrides)
    hardware.setup_inference(cfg)
    prep = run_data(work, run, cfg)
    train_index = prep.train_index()
    folds = prep.folds(train_index.image_id)
    test = prep.test_index()
    answers = test_answers(prep.input, test) if test is not None else None
    if answers is None:
        raise FileNotFoundError(f"{prep.input}/test/answers.csv not found")
    pos = {iid: i for i, iid in enumerate(test.image_id)}
    pred = np.zeros((len(test.image_id), NUM_KEYPOINTS, 2))
    done = np.zeros(len(test.image_id), bool)
    oof = {}
    for cat in categories:
        report = predict_fold(work, cfg, run, cat, 0, prep, train_index, folds, test, force=True)
        oof[cat] = report.get("ne_heatmap" if cfg.predict.flip_tta and cfg.predict.merge == "heatmap"
                              else "ne_coords" if cfg.predict.flip_tta else "ne_plain")
        z = load_npz(fold_dir(work, run, cat, 0) / "test.npz")
        rows = np.array([pos[i] for i in z["image_id"]], dtype=np.int64)
        pred[rows[:, None], np.array(category_indices(cat))[None, :]] = z["xy"]
        done[rows] = True
    ne = normalized_error(answers[done], pred[done], test.category[done])
    out = {"ne": ne["ne"], "per_category": ne["per_category"], "n_images": int(done.sum()),
           "n_points": ne["n_points"], "flip_tta": cfg.predict.flip_tta, "refine": cfg.codec.refine,
           "fold0_val_ne": oof}
    if speed:
        cat = categories[0]
        cat_cfg = cfg.for_category(cat)  # the TTA and batch this category predicts with
        name = joint.model_for(cat_cfg, cat)
        model = load_model(fold_dir(work, run, name, 0) / "model.keras")
        rows = np.nonzero(test.category == cat)[0]
        cache = prep.cache("test")
        images = np.stack([cache[r] for r in test.cache_row[rows]])
        batch = cat_cfg.predict.batch_size

        def infer(n):  # predict's own path: flip TTA, and with crops both passes
            predict_category(model, name, cat, images[:n], test.params[rows[:n]], test.sizes[rows[:n]], cat_cfg)

        infer(batch)  # warm-up
        seconds = []
        for _ in range(3):
            start = time.perf_counter()
            infer(len(images))
            seconds.append(time.perf_counter() - start)
        out.update(inference_img_per_s=len(images) / min(seconds), gflops_per_image=model_flops(model) / 1e9,
                   params=int(model.count_params()), speed_category=cat)
    return out


def worker_input(config: str, targets: str, seconds: float) -> Dict:
    """Training-input img/s of `config` (pipeline.tools.throughput.input_throughput), host or device targets."""
    from pipeline.config import load_config
    from pipeline.tools.throughput import input_throughput

    return input_throughput(load_config(config, [f"train.targets={targets}"]), seconds=seconds)


def worker_runtime(work: str, run: str, config: str, category: str, reps: int) -> Dict:
    """Keras against TFLite and ONNX (pipeline/release/runtimes.py) through predict's own path (flip TTA,
    decoding) on the test cache: img/s of each and the largest differences (a fresh demo model)."""
    from pipeline import hardware
    from pipeline.config import load_config
    from pipeline.heatmap.inference import predict_images
    from pipeline.models import build_model
    from pipeline.release.runtimes import OnnxModel, TFLiteModel, convert, convert_onnx
    from pipeline.store.rundata import run_data

    cfg = load_config(config)
    hardware.setup_inference(cfg)
    cfg = cfg.for_category(category)
    prep = run_data(work, run, cfg)
    index = prep.test_index()
    cache = prep.cache("test")
    images = np.stack([cache[r] for r in index.cache_row])
    flip_index = category_flip_index(category)
    keras_model = build_model(cfg, len(category_indices(category)))
    threads = cfg.train.threads or hardware.available_cores()
    runtimes = {"keras": keras_model, "tflite": TFLiteModel(convert(keras_model), threads=threads),
                "onnx": OnnxModel(convert_onnx(keras_model), threads=threads)}
    outs = {name: predict_images(m, images, index.params, cfg, flip_index, return_heatmaps=True)
            for name, m in runtimes.items()}  # also the warm-up
    times: Dict[str, List[float]] = {}
    for rep in range(reps):
        for name, m in runtimes.items():
            t0 = time.perf_counter()
            predict_images(m, images, index.params, cfg, flip_index)
            times.setdefault(name, []).append(time.perf_counter() - t0)
        print(f"runtime: rep {rep}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items()), flush=True)
    diff = {k: float(np.abs(outs["keras"]["heatmaps"] - outs[k]["heatmaps"]).max()) for k in ("tflite", "onnx")}
    px = {k: float(np.abs(outs["keras"]["xy"] - outs[k]["xy"]).max()) for k in ("tflite", "onnx")}
    return {"n_images": len(images), "seconds": times, "max_heatmap_diff": diff, "max_keypoint_diff_px": px}


WORKERS = {"throughput": worker_throughput, "tta": worker_tta, "eval": worker_eval,
           "preprocess_time": worker_preprocess_time, "input": worker_input, "runtime": worker_runtime}


# --------------------------------------------------------------------------- steps (bench process)

DEMO_RUN, SEED_RUN = "bench_demo", "bench_seed_cpm"


def step_data(bench) -> None:
    """Synthetic data set and its preprocessing (shared by most keys), bound to the demo run."""
    from pipeline.tools import synth

    try:
        summary = synth.generate(bench.data, bench.mode.train_per_cat, bench.mode.test_per_cat, seed=0,
                                 progress=False)
        bench.log(f"  data: {summary['images']}{' (reused)' if summary['skipped'] else ''}")
        manifest = bench.bind(DEMO_RUN, DEMO_CONFIG)
        bench.results["meta"]["data"] = {"train_images": manifest["n_train"], "test_images": manifest["n_test"]}
    except Exception as err:
        bench.data_error = f"{type(err).__name__}: {err}"
        raise


def step_decode_floor(bench) -> None:
    from pipeline.config import load_config
    from pipeline.store.rundata import run_data

    bench.need_data()
    cfg = load_config(DEMO_CONFIG)
    index = run_data(bench.work, DEMO_RUN, cfg).train_index()
    ne = decode_floor(index.keypoints, index.params, index.category, cfg)
    border = near_heatmap_border(index.keypoints, index.params, cfg) & (index.keypoints[..., 2] == 1)
    interior = index.keypoints.copy()
    interior[border, 2] = 0  # not counted by the NE
    bench.record("decode_floor_ne", ne, refine=cfg.codec.refine, sigma=cfg.codec.sigma,
                 n_images=len(index.image_id),
                 border_point_fraction=float(border.sum() / max((index.keypoints[..., 2] == 1).sum(), 1)),
                 ne_without_border_points=decode_floor(interior, index.params, index.category, cfg))
    bench.record("decode_floor_ne_argmax", decode_floor(index.keypoints, index.params, index.category, cfg,
                                                        refine="none"), refine="none")


def scale_sets(bench) -> Dict[str, Path]:
    """The 1× and SCALE× synthetic data sets of the preprocessing measurements."""
    from pipeline.tools import synth

    sets = {}
    for factor in (1, SCALE):
        path = bench.root / f"scale{factor}x"
        summary = synth.generate(path, bench.mode.scale_train_per_cat * factor,
                                 bench.mode.scale_test_per_cat * factor, seed=1, progress=False)
        bench.log(f"  scale {factor}x: {summary['images']}{' (reused)' if summary['skipped'] else ''}")
        sets[f"{factor}x"] = path
    return sets


def step_preprocess_speed(bench) -> None:
    """preprocess() img/s vs a plain imread+resize loop on the SCALE× set, each in a fresh interpreter.

    Ours: `pipeline.stages.preprocess.preprocess` (force: the whole stage) timed inside a worker, its
    imports excluded; the plain loop: `pipeline.tools.rehearse.plain_loop_fresh` (a fresh interpreter that
    imports cv2 only), its loop alone timed.
    One warm-up of ours (page cache), then back-to-back pairs; the key is the median paired ratio.
    """
    from pipeline.config import load_config

    cfg = load_config(DEMO_CONFIG)
    source = scale_sets(bench)[f"{SCALE}x"]
    files = image_files(source)
    args = {"input_dir": str(source), "output": str(bench.root / "speed"), "config": str(DEMO_CONFIG)}
    bench.run_worker("preprocess_time", timeout=1800, tag="warmup", **args)
    plain, ours, foreign = [], [], set()
    for rep in range(bench.mode.reps):
        loop = plain_loop_fresh(source, cfg.model.input_size)[0]
        plain.append(loop["seconds"])
        foreign.update(loop["foreign_modules"])
        ours.append(bench.run_worker("preprocess_time", timeout=1800, tag=f"rep{rep}", **args)["seconds"])
    n = len(files)
    bench.record("preprocess_speedup", paired_ratio(plain, ours), n_images=n,
                 preprocess_img_per_s=n / min(ours), plain_img_per_s=n / min(plain),
                 preprocess_seconds=ours, plain_seconds=plain, cores=bench.results["meta"]["cores"],
                 plain_loop="fresh interpreter, cv2 only" + (f" (found {sorted(foreign)})" if foreign else ""))


def step_preprocess_rss(bench) -> None:
    """Peak RSS of `python -m pipeline.stages.preprocess` (process tree) on the SCALE× vs the 1× set.

    The two runs alternate `reps` times; the key is the median of the paired ratios.
    """
    sets = scale_sets(bench)
    peaks: Dict[str, List[Dict]] = {name: [] for name in sets}
    for rep in range(bench.mode.reps):
        for name, source in sets.items():
            cmd = [sys.executable, "-m", "pipeline.stages.preprocess", "--input", str(source), "--output",
                   str(bench.root / "rss" / name), "--force", "--config", str(DEMO_CONFIG)]
            log = bench.logs / f"preprocess_rss_{name}.log"
            peak = peak_tree_rss(cmd, log)
            if peak["rc"] != 0:
                raise RuntimeError(f"preprocess on {source} exited with {peak['rc']}: {tail(log, 3)}")
            peaks[name].append(peak)
        bench.log(f"  rep {rep}: peak RSS " + ", ".join(
            f"{name} {p[-1]['peak_rss'] / 2**20:.0f} MiB ({p[-1]['seconds']:.1f} s)" for name, p in peaks.items()))
    big, small = peaks[f"{SCALE}x"], peaks["1x"]
    bench.record("preprocess_rss_ratio", paired_ratio([p["peak_rss"] for p in big], [p["peak_rss"] for p in small]),
                 peak_rss_mib={k: [round(p["peak_rss"] / 2**20, 1) for p in v] for k, v in peaks.items()},
                 peak_nonshared_mib={k: [round(p["peak_anon"] / 2**20, 1) for p in v] for k, v in peaks.items()},
                 nonshared_ratio=paired_ratio([p["peak_anon"] for p in big], [p["peak_anon"] for p in small]))


def step_throughput(bench) -> None:
    bench.need_data()
    mode = bench.mode
    r = bench.run_worker("throughput", timeout=600 + 60 * mode.steps * mode.reps, work=str(bench.work),
                         run=DEMO_RUN, config=str(DEMO_CONFIG), category=THROUGHPUT_CATEGORY, steps=mode.steps,
                         reps=mode.reps, matmul_s=mode.matmul_s)
    bench.results["meta"]["dtype"] = r["policy"]
    bs, rates, flops = r["batch_size"], r.get("steps_per_s", {}), r.get("forward_flops")

    def err(*keys):
        for key in keys:
            value = r.get(key)
            if isinstance(value, dict) and "error" in value:
                return value["error"]
        return None

    for key in ("matmul_gflops_fp32", "matmul_gflops_bf16"):
        bench.record(key, None if err(key) else r[key], error=err(key))
    bench.record("model_gflops_per_image", flops / 1e9 if flops else None, error=None if flops else "no FLOP count")
    if "memory" in rates:
        bench.record("train_img_per_s", rates["memory"] * bs, dtype=r["policy"], batch_size=bs,
                     category=THROUGHPUT_CATEGORY, threads=r["threads"])
    peak_key = "matmul_gflops_bf16" if "bfloat16" in r["policy"] else "matmul_gflops_fp32"
    if "memory" in rates and flops and not err(peak_key):
        train_flops = 3 * flops * rates["memory"] * bs
        bench.record("train_peak_fraction", train_flops / (r[peak_key] * 1e9), train_gflops=train_flops / 1e9,
                     peak_gflops=r[peak_key], peak_dtype=peak_key.rsplit("_", 1)[1])
    else:
        bench.record("train_peak_fraction", error=err(peak_key, "warmup_memory", "_rate_memory") or "not measured")
    reps, cpu_reps = r.get("steps_per_s_reps", {}), r.get("steps_per_cpu_s_reps", {})
    if "memory" in rates and "pipeline" in rates:
        bench.record("input_overhead", 1 - paired_ratio(reps["pipeline"], reps["memory"]),
                     steps_per_s_memory=reps["memory"], steps_per_s_pipeline=reps["pipeline"],
                     best_of_overhead=1 - rates["pipeline"] / rates["memory"],
                     cpu_time_overhead=1 - paired_ratio(cpu_reps["pipeline"], cpu_reps["memory"]))
    else:
        bench.record("input_overhead", error=err("warmup_pipeline", "_rate_pipeline", "warmup_memory",
                                                 "_rate_memory") or "not measured")
    if "memory" in rates and "memory_fp32" in rates:
        bench.record("bf16_vs_fp32_img_per_s", paired_ratio(reps["memory"], reps["memory_fp32"]),
                     dtype=r["policy"], img_per_s_fp32=rates["memory_fp32"] * bs)
    else:
        bench.record("bf16_vs_fp32_img_per_s", error=err("warmup_memory_fp32", "_rate_memory_fp32", "warmup_memory",
                                                         "_rate_memory") or "not measured")


def step_input(bench) -> None:
    """Input-only img/s at the full config's input size (issue: does the input keep up with a GPU)."""
    full = REPO / "configs" / "full.yaml"
    seconds = 3.0 if bench.mode_name == "full" else 1.0
    for targets in ("device", "host"):
        r = bench.run_worker("input", timeout=600, tag=targets, config=str(full), targets=targets, seconds=seconds)
        detail = dict(input_size=r["input_size"], batch_size=r["batch_size"], cores=r["cores"],
                      bytes_per_image=r["bytes_per_image"], encode_fraction=r["encode_fraction"])
        suffix = "" if targets == "device" else "_host_targets"
        bench.record(f"input_img_per_s_per_core{suffix}", r["img_per_s_per_core"], targets=targets, **detail)
        bench.record(f"input_img_per_s_all_cores{suffix}", r["img_per_s_all_cores"], targets=targets, **detail)


def step_tta(bench) -> None:
    bench.need_data()
    r = bench.run_worker("tta", timeout=900, work=str(bench.work), run=DEMO_RUN, config=str(DEMO_CONFIG),
                         category=THROUGHPUT_CATEGORY, reps=2 * bench.mode.reps)
    t, cpu, n = r["seconds"], r["cpu_seconds"], r["n_images"]
    bench.record("tta_time_ratio", paired_ratio(t["tta"], t["plain"]), n_images=n, seconds=t,
                 model_only_ratio=paired_ratio(t["model_tta"], t["model_plain"]),
                 cpu_time_ratio=paired_ratio(cpu["tta"], cpu["plain"]), dtype=r["policy"])
    bench.record("inference_img_per_s_plain", n / min(t["plain"]), n_images=n)
    bench.record("inference_img_per_s_tta", n / min(t["tta"]), n_images=n)


def step_runtime(bench) -> None:
    """Inference img/s of the demo model in Keras, TFLite and ONNX, the same predict path (flip TTA)."""
    bench.need_data()
    r = bench.run_worker("runtime", timeout=900, work=str(bench.work), run=DEMO_RUN, config=str(DEMO_CONFIG),
                         category=THROUGHPUT_CATEGORY, reps=bench.mode.reps)
    t, n = r["seconds"], r["n_images"]
    detail = dict(n_images=n, seconds=t, max_heatmap_diff=r["max_heatmap_diff"],
                  max_keypoint_diff_px=r["max_keypoint_diff_px"])
    bench.record("keras_img_per_s", n / min(t["keras"]), **detail)
    bench.record("tflite_img_per_s", n / min(t["tflite"]), **detail)
    bench.record("onnx_img_per_s", n / min(t["onnx"]), **detail)
    bench.record("tflite_vs_keras_img_per_s", paired_ratio(t["keras"], t["tflite"]), **detail)
    bench.record("onnx_vs_keras_img_per_s", paired_ratio(t["keras"], t["onnx"]), **detail)


def evaluate(bench, config: Path, run: str, categories: Sequence[str], overrides: Sequence[str] = (),
             speed: bool = False) -> Dict:
    return bench.run_worker("eval", timeout=900, tag=run, work=str(bench.work), config=str(config),
                            overrides=list(overrides), run=run, categories=list(categories), speed=speed)


def meanshape_test_ne(work: Path, run: str) -> float:
    """Test NE of each category's mean shape (pipeline.stages.baseline) fitted on fold 0's training images."""
    from pipeline.combine.mean_shape import predict_mean_shape
    from pipeline.scoring.leaderboard import test_answers
    from pipeline.scoring.metrics import normalized_error
    from pipeline.store.rundata import run_data

    prep = run_data(work, run)
    train = prep.train_index()
    fit = prep.folds(train.image_id) != 0
    test = prep.test_index()
    answers = test_answers(prep.input, test)
    if answers is None:
        raise FileNotFoundError(f"{prep.input}/test/answers.csv not found")
    pred = predict_mean_shape(train.keypoints[fit], train.category[fit], train.sizes[fit], test.category, test.sizes)
    return normalized_error(answers, pred, test.category)["ne"]


def seed_ratio(ne_demo: float, ne_seed: float, ne_meanshape: float) -> Tuple[Optional[float], Optional[str]]:
    """(ne_ratio_vs_seed, error): the ratio only when the seed baseline beats the mean shape.

    A seed-style model no better than predicting each category's mean shape learned
    nothing in the budget, so a ratio against it says nothing: the key is then an error.
    """
    if not all(np.isfinite(v) for v in (ne_demo, ne_seed, ne_meanshape)):
        return None, "a test NE is missing"
    if not ne_seed < ne_meanshape:
        return None, (f"void: the seed baseline's test NE {ne_seed:.4f} is not below the mean shape's "
                      f"{ne_meanshape:.4f} (it learned nothing in this budget)")
    return ne_demo / ne_seed, None


def step_ne(bench) -> None:
    """Demo vs seed CPM at equal training budget and precision, both against the mean shape."""
    from pipeline.config import load_config

    bench.need_data()
    configs = {"demo": (DEMO_CONFIG, DEMO_RUN), "seed_cpm": (SEED_CONFIG, SEED_RUN)}
    precisions = {name: load_config(path).train.precision for name, (path, _) in configs.items()}
    trainings: Dict[str, Dict[str, Dict]] = {name: {} for name in configs}
    for cat in CATEGORIES:  # interleaved, so a load change on the machine hits both configs alike
        for name, (path, run) in configs.items():
            trainings[name][cat] = bench.train_one(path, run, cat)
    ne = {}
    for name, (path, run) in configs.items():
        try:
            ne[name] = evaluate(bench, path, run, CATEGORIES)
            bench.record(f"test_ne_{name}", ne[name]["ne"], per_category=ne[name]["per_category"],
                         n_images=ne[name]["n_images"], fold0_val_ne=ne[name]["fold0_val_ne"],
                         precision=precisions[name], trainings=trainings[name])
        except Exception as err:  # noqa: BLE001
            bench.record(f"test_ne_{name}", error=f"{type(err).__name__}: {err}", trainings=trainings[name])
    try:
        ne_ms = meanshape_test_ne(bench.work, DEMO_RUN)
        bench.record("test_ne_meanshape", ne_ms, fitted_on="fold 0 training images")
    except Exception as err:  # noqa: BLE001
        ne_ms = float("nan")
        bench.record("test_ne_meanshape", error=f"{type(err).__name__}: {err}")
    ne_demo = ne["demo"]["ne"] if "demo" in ne else float("nan")
    ne_seed = ne["seed_cpm"]["ne"] if "seed_cpm" in ne else float("nan")
    if np.isfinite(ne_demo) and np.isfinite(ne_ms):
        bench.record("ne_ratio_vs_meanshape", ne_demo / ne_ms, ne_demo=ne_demo, ne_meanshape=ne_ms)
    else:
        bench.record("ne_ratio_vs_meanshape", error="no test NE for the demo or the mean shape (see logs/)")
    ratio, error = seed_ratio(ne_demo, ne_seed, ne_ms)
    bench.record("ne_ratio_vs_seed", ratio, error=error, budget_s=bench.mode.budget_s, ne_demo=ne_demo,
                 ne_seed_cpm=ne_seed, ne_meanshape=ne_ms, precision=precisions,
                 epochs={n: {c: t.get("epochs") for c, t in tr.items()} for n, tr in trainings.items()})
    if bench.mode.precision_ne:
        precision_ne(bench, trainings["demo"].get(PRECISION_CATEGORY, {}))


def precision_ne(bench, demo_run: Dict) -> None:
    """NE of bf16 vs fp32 training of the demo config on PRECISION_CATEGORY, same budget."""
    cat = PRECISION_CATEGORY
    runs = {"float32": "bench_demo_fp32", "mixed_bfloat16": DEMO_RUN}
    if demo_run.get("precision") != "mixed_bfloat16":  # demo's own run was not bf16: train one
        runs["mixed_bfloat16"] = "bench_demo_bf16"
    info = {}
    for precision, run in runs.items():
        if run != DEMO_RUN:
            info[precision] = bench.train_one(DEMO_CONFIG, run, cat, [f"train.precision={precision}"])
        else:
            info[precision] = demo_run
    ne = {p: evaluate(bench, DEMO_CONFIG, run, [cat], [f"train.precision={p}"])["ne"] for p, run in runs.items()}
    bench.record("ne_bf16_vs_fp32", ne["mixed_bfloat16"] / ne["float32"], category=cat,
                 ne_bf16=ne["mixed_bfloat16"], ne_fp32=ne["float32"], trainings=info)


def step_heads(bench) -> None:
    """NE per compute: every head of pipeline.models.MODELS, the demo config with model.name set to it.

    Each head is trained at the demo's budget (its time_budget_s, epochs and early stopping;
    in quick mode the mode's budget on THROUGHPUT_CATEGORY only), then its test NE (the config's
    TTA and decoding), training img/s (from the trainer's metrics.json), inference img/s and
    GFLOPs per image are measured. Rows go to results["heads"].
    """
    from pipeline.config import load_config
    from pipeline.models import MODELS

    bench.need_data()
    cfg = load_config(DEMO_CONFIG)
    full = bench.mode.heads_all_categories
    budget = cfg.train.time_budget_s if full and cfg.train.time_budget_s else bench.mode.budget_s
    categories = list(CATEGORIES) if full else [THROUGHPUT_CATEGORY]
    for name in MODELS:  # the registry itself: heads registered later appear here
        run, extra = f"bench_head_{name}", [f"model.name={name}"]
        row: Dict = {"budget": f"{budget:g} s × {len(categories)} model(s), ≤ {cfg.train.epochs} epochs",
                     "categories": categories}
        try:
            trainings = {c: bench.train_one(DEMO_CONFIG, run, c, extra, budget=budget, epochs=cfg.train.epochs,
                                            patience=None) for c in categories}
            failed = {c: t["error"] for c, t in trainings.items() if "error" in t}
            if failed:
                raise RuntimeError(f"training failed: {failed}")
            r = evaluate(bench, DEMO_CONFIG, run, categories, extra, speed=True)
            row.update(test_ne=r["ne"], per_category=r["per_category"],
                       train_img_per_s=float(np.mean([t["img_per_s"] for t in trainings.values()])),
                       inference_img_per_s=r["inference_img_per_s"], gflops_per_image=r["gflops_per_image"],
                       params=r["params"], precision=trainings[categories[0]]["precision"],
                       epochs={c: t["epochs"] for c, t in trainings.items()}, flip_tta=r["flip_tta"])
            bench.log(f"  head {name}: test NE {r['ne']:.4f}, {row['train_img_per_s']:.1f} train img/s, "
                      f"{r['inference_img_per_s']:.1f} inference img/s, {r['gflops_per_image']:.3f} GFLOPs")
        except Exception as err:  # noqa: BLE001 - one head failing must not hide the others
            row["error"] = f"{type(err).__name__}: {err}"
            bench.log(f"  head {name}: error: {row['error']}")
        bench.results["heads"][name] = row
        bench.save()
    ok = [n for n, h in bench.results["heads"].items() if not h.get("error")]
    bench.record("heads_measured", len(ok), heads=list(bench.results["heads"]))


def step_real_heads(bench) -> None:
    """NE per compute on real photos (only with `make bench REAL=<dir>`): every head of the registry,
    configs/real_cpu.yaml with model.name set to it, its fold-0 model trained for the mode's
    `real_budget_s` on the real training photos, then tested on the real test split (needs
    REAL/test/answers.csv). Rows go to results["real_heads"], beside the synthetic table."""
    from pipeline.config import load_config
    from pipeline.joint import model_names
    from pipeline.models import MODELS

    if bench.real is None:
        bench.log("  no REAL=<dir> given: the real-photo step is skipped")
        return
    if not (bench.real / "test" / "answers.csv").exists():
        raise FileNotFoundError(f"{bench.real}/test/answers.csv missing: the real-photo step needs the test answers")
    cfg = load_config(REAL_CONFIG)
    budget = bench.mode.real_budget_s
    for name in MODELS:
        run, extra = f"bench_real_{name}", [f"model.name={name}"]
        models = model_names(load_config(REAL_CONFIG, extra))
        row: Dict = {"budget": f"{budget:g} s × {len(models)} model(s)", "data": str(bench.real)}
        try:
            trainings = {m: bench.train_one(REAL_CONFIG, run, m, extra, budget=budget, epochs=cfg.train.epochs,
                                            patience=None, input_dir=bench.real) for m in models}
            failed = {m: t["error"] for m, t in trainings.items() if "error" in t}
            if failed:
                raise RuntimeError(f"training failed: {failed}")
            r = evaluate(bench, REAL_CONFIG, run, list(CATEGORIES), extra, speed=True)
            row.update(test_ne=r["ne"], per_category=r["per_category"],
                       train_img_per_s=float(np.mean([t["img_per_s"] for t in trainings.values()])),
                       inference_img_per_s=r["inference_img_per_s"], gflops_per_image=r["gflops_per_image"],
                       params=r["params"], epochs={m: t["epochs"] for m, t in trainings.items()})
            bench.log(f"  real head {name}: test NE {r['ne']:.4f}, {row['train_img_per_s']:.1f} train img/s")
        except Exception as err:  # noqa: BLE001 - one head failing must not hide the others
            row["error"] = f"{type(err).__name__}: {err}"
            bench.log(f"  real head {name}: error: {row['error']}")
        bench.results["real_heads"][name] = row
        bench.save()


#: (step name, function(bench), keys it records)
STEPS = (
    ("data", step_data, ()),
    ("decode_floor", step_decode_floor, ("decode_floor_ne", "decode_floor_ne_argmax")),
    ("preprocess_speed", step_preprocess_speed, ("preprocess_speedup",)),
    ("preprocess_rss", step_preprocess_rss, ("preprocess_rss_ratio",)),
    ("throughput", step_throughput, ("matmul_gflops_fp32", "matmul_gflops_bf16", "model_gflops_per_image",
                                     "train_img_per_s", "train_peak_fraction", "input_overhead",
                                     "bf16_vs_fp32_img_per_s")),
    ("input", step_input, ("input_img_per_s_per_core", "input_img_per_s_all_cores",
                            "input_img_per_s_per_core_host_targets", "input_img_per_s_all_cores_host_targets")),
    ("tta", step_tta, ("tta_time_ratio", "inference_img_per_s_plain", "inference_img_per_s_tta")),
    ("runtime", step_runtime, ("keras_img_per_s", "tflite_img_per_s", "onnx_img_per_s",
                               "tflite_vs_keras_img_per_s", "onnx_vs_keras_img_per_s")),
    ("ne", step_ne, ("test_ne_demo", "test_ne_seed_cpm", "test_ne_meanshape", "ne_ratio_vs_meanshape",
                     "ne_ratio_vs_seed")),
    ("heads", step_heads, ("heads_measured",)),
    ("real_heads", step_real_heads, ()),
)
