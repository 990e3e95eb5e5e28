"""Our hand-written helpers measured against the well-kept library that could replace each.

    python -m pipeline.tools.library_check [--site DIR] [--images DIR] [--out docs/results/libraries.json]

The candidates that the lock does not install (omegaconf, filelock, imagehash with PyWavelets,
tabulate) are read from `--site`, a folder filled with
`pip install --target DIR --no-deps omegaconf antlr4-python3-runtime==4.9.3 filelock imagehash PyWavelets tabulate`;
a missing one is reported as such. scipy and keras come with the lock. `--images` is a folder of
photos for the perceptual hash (default: smooth random images). Each check returns
the figures that docs/decisions.md ("Libraries or our own code") renders through `make docs`.
"""
from __future__ import annotations

import argparse
import inspect
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List

import numpy as np

REPO = Path(__file__).resolve().parents[2]


def _timed(fn: Callable, repeat: int) -> float:
    """Best-of-3 mean seconds of one call of fn over `repeat` calls."""
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(repeat):
            fn()
        best = min(best, (time.perf_counter() - t0) / repeat)
    return best


def check_config() -> Dict:
    """A wrong-typed value in a config file: does the error name the file and the key?"""
    from pipeline.config import TrainConfig, load_config

    out: Dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        bad = Path(tmp) / "bad.yaml"
        bad.write_text("train:\n  lr: fast\n")
        try:
            load_config(bad)
        except (ValueError, TypeError) as e:
            out["ours_message"] = str(e).splitlines()[0]
        out["ours_names_file"] = str(bad) in out.get("ours_message", "")
        try:
            from omegaconf import OmegaConf
        except ImportError:
            out["omegaconf"] = None
            return out
        try:  # our own dataclass as OmegaConf's structured schema
            OmegaConf.merge(OmegaConf.structured(TrainConfig), OmegaConf.load(bad)["train"])
        except Exception as e:  # omegaconf.errors.ValidationError
            out["omegaconf_message"] = " ".join(str(e).split())
        out["omegaconf"] = True
        out["omegaconf_names_file"] = str(bad) in out.get("omegaconf_message", "")
    return out


def check_early_stopping() -> Dict:
    """Killed after 3 epochs without a gain and resumed: epochs trained past the best one."""
    import keras

    from pipeline.fit.resume import TrainState

    patience, kill_after = 5, 3
    val = [1.0, 0.5] + [0.6] * 20  # best at epoch 2, nothing better afterwards

    def keras_epochs() -> int:
        done = 0
        for session in range(2):  # the kill ends the first session after `kill_after` stale epochs
            stop = keras.callbacks.EarlyStopping(monitor="val_ne", patience=patience, mode="min")
            model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
            model.stop_training = False
            stop.set_model(model)
            stop.on_train_begin()
            for epoch in range(done, len(val)):
                stop.on_epoch_end(epoch, {"val_ne": val[epoch]})
                done = epoch + 1
                if stop.model.stop_training:
                    return done
                if session == 0 and done == 2 + kill_after:
                    break
        return done

    state = TrainState(lr=1e-3, steps=1, config="")
    ours = 0
    for epoch, v in enumerate(val):  # Monitor's rule, on the state that resume.json restores
        state = TrainState.from_dict(json.loads(json.dumps(state.__dict__)))  # a resume every epoch
        if v < state.best_ne:
            state.best_ne, state.wait = v, 0
        else:
            state.wait += 1
        ours = epoch + 1
        if state.wait >= patience:
            break
    return {"patience": patience, "kill_after": kill_after,
            "keras_epochs_past_best": keras_epochs() - 2, "ours_epochs_past_best": ours - 2}


def check_cosine() -> Dict:
    """scheduled_lr against keras' CosineDecay with warm-up: values and cost per call."""
    import keras

    from pipeline.fit.schedule import scheduled_lr

    peak, floor, warmup, steps = 2e-3, 1e-5, 0.05, 10_000
    keras_cos = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=floor, decay_steps=int(steps * (1 - warmup)), alpha=floor / peak,
        warmup_target=peak, warmup_steps=int(steps * warmup))
    at = np.arange(0, steps + 1, 50)
    theirs = np.array([float(keras_cos(int(s))) for s in at])
    ours = np.array([scheduled_lr(s / steps, peak, floor, "cosine", warmup) for s in at])
    return {"max_rel_diff": float(np.max(np.abs(theirs - ours) / ours)),
            "ours_us": 1e6 * _timed(lambda: scheduled_lr(0.37, peak, floor, "cosine", warmup), 2000),
            "keras_us": 1e6 * _timed(lambda: float(keras_cos(3700)), 200)}


def check_bootstrap() -> Dict:
    """bootstrap_ne against scipy.stats.bootstrap (percentile and BCa) on test-sized data."""
    from scipy import stats

    from pipeline.scoring.metrics import BOOTSTRAP_SAMPLES, bootstrap_ne

    rng = np.random.default_rng(0)
    n = 1100  # a test set's images
    counts = rng.integers(4, 16, n)
    sums = counts * rng.gamma(2.0, 0.05, n)

    def ratio(s, c, axis=-1):
        return s.sum(axis=axis) / c.sum(axis=axis)

    def scipy_ci(method):
        return stats.bootstrap((sums, counts), ratio, paired=True, vectorized=True, n_resamples=BOOTSTRAP_SAMPLES,
                               method=method, random_state=0).confidence_interval

    ours = bootstrap_ne(sums, counts)
    pct, bca = scipy_ci("percentile"), scipy_ci("BCa")
    return {"n_images": n, "resamples": BOOTSTRAP_SAMPLES,
            "ours": [ours["lo"], ours["hi"]], "scipy_percentile": [float(pct.low), float(pct.high)],
            "scipy_bca": [float(bca.low), float(bca.high)],
            "ours_ms": 1e3 * _timed(lambda: bootstrap_ne(sums, counts), 3),
            "scipy_percentile_ms": 1e3 * _timed(lambda: scipy_ci("percentile"), 3),
            "scipy_bca_ms": 1e3 * _timed(lambda: scipy_ci("BCa"), 1)}


def check_lock() -> Dict:
    """While held, what the lock file tells a second run about its holder."""
    from pipeline.fsutil import file_lock

    out: Dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        with file_lock(Path(tmp) / "ours.lock"):
            out["ours_bytes"] = (Path(tmp) / "ours.lock").stat().st_size
        try:
            import filelock
        except ImportError:
            out["filelock"] = None
            return out
        with filelock.FileLock(str(Path(tmp) / "theirs.lock")):
            out["filelock_bytes"] = (Path(tmp) / "theirs.lock").stat().st_size
        out["filelock"] = filelock.__version__
        out["filelock_uses_flock"] = "fcntl.flock" in inspect.getsource(filelock.UnixFileLock)
    return out


def _garments(folder, limit: int) -> List[np.ndarray]:
    import cv2

    if folder:
        files = sorted(p for p in Path(folder).rglob("*.jpg"))[:limit]
        return [cv2.imread(str(p)) for p in files]
    rng = np.random.default_rng(0)  # no photos: smooth random colour fields
    return [cv2.GaussianBlur(rng.integers(0, 256, (256, 192, 3), dtype=np.uint8), (0, 0), 6) for _ in range(limit)]


def check_phash(images_dir=None, limit: int = 200) -> Dict:
    """phash against imagehash.phash: cost per image, and bits apart for a JPEG-70 half-size copy
    of the same image against a different image."""
    import cv2

    from pipeline.prep.images import hamming, phash

    images = _garments(images_dir, limit)

    def copy(img):
        half = cv2.resize(img, (img.shape[1] // 2, img.shape[0] // 2), interpolation=cv2.INTER_AREA)
        return cv2.imdecode(cv2.imencode(".jpg", half, [cv2.IMWRITE_JPEG_QUALITY, 70])[1], cv2.IMREAD_COLOR)

    copies = [copy(img) for img in images]

    def distances(hash_fn):
        a = np.array([hash_fn(i) for i in images], np.uint64)
        b = np.array([hash_fn(c) for c in copies], np.uint64)
        return float(hamming(a, b).mean()), float(hamming(a, np.roll(a, 1)).mean())

    out: Dict = {"images": len(images), "source": "photos" if images_dir else "synthetic"}
    out["ours_copy_bits"], out["ours_other_bits"] = distances(phash)
    out["ours_ms"] = 1e3 * _timed(lambda: [phash(i) for i in images[:50]], 1) / 50
    try:
        import imagehash
        from PIL import Image
    except ImportError:
        out["imagehash"] = None
        return out

    def theirs(img):
        h = imagehash.phash(Image.fromarray(cv2.cvtColor(img, cv2.COLOR_BGR2RGB)))
        return int(str(h), 16)

    out["imagehash"] = imagehash.__version__
    out["imagehash_copy_bits"], out["imagehash_other_bits"] = distances(theirs)
    out["imagehash_ms"] = 1e3 * _timed(lambda: [theirs(i) for i in images[:50]], 1) / 50
    return out


def check_tables() -> Dict:
    """The leaderboard's text table: pandas' to_string (a dependency already) or tabulate."""
    import pandas as pd

    out: Dict = {"ours_lines_of_code": len(inspect.getsource(
        __import__("pipeline.scoring.leaderboard", fromlist=["format_board"]).format_board).splitlines())}
    try:
        import tabulate
    except ImportError:
        out["tabulate"] = None
        return out
    out["tabulate"] = tabulate.__version__
    out["pandas_to_markdown_needs_tabulate"] = "tabulate" in inspect.getsource(pd.DataFrame.to_markdown)
    return out


CHECKS = {"config": check_config, "early_stopping": check_early_stopping, "cosine": check_cosine,
          "bootstrap": check_bootstrap, "lock": check_lock, "phash": check_phash, "tables": check_tables}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--site", type=Path, help="folder the candidates were pip-installed into (--target)")
    ap.add_argument("--images", type=Path, help="folder of .jpg photos for the perceptual hash")
    ap.add_argument("--machine", default="", help="e.g. '2-core Intel Xeon (AMX)'")
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "results" / "libraries.json")
    args = ap.parse_args(argv)
    if args.site:
        sys.path.append(str(args.site))  # after the venv: the lock's packages win
    results: Dict = {"machine": args.machine}
    for name, fn in CHECKS.items():
        results[name] = fn(args.images) if name == "phash" else fn()
        print(f"library_check: {name}: {json.dumps(results[name])}", flush=True)
    from pipeline.fsutil import write_text_atomic

    write_text_atomic(args.out, json.dumps(results, indent=2) + "\n")
    print(f"library_check: {args.out}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
