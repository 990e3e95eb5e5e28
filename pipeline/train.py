"""Train one CPM for one (category, fold): `make train CAT=dress FOLD=0`.

Trains on the other folds of folds.csv and validates on fold k. After every
epoch the validation NE (original pixels, no TTA, the project's own metric)
drives checkpointing (`model.keras`), the learning-rate schedule and early
stopping; the forward pass it uses is traced once per training (`compiled_forward`).
The whole training state — weights, optimizer, epoch, schedule counters, elapsed
time — is saved with `model.keras` at most every `train.checkpoint_s` seconds and
at the end, so a run killed at any moment (even SIGKILL) resumes from its last
saved epoch and appends to `history.csv`. A NaN loss stops the run with a message;
the best checkpoint is kept.

Artifacts in OUTPUT/runs/<run>/<cat>/fold<k>/: config.yaml, model.keras,
history.csv, metrics.json, tensorboard/, resume/.
"""
from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Dict, Optional

import pandas as pd

from . import codec, distributed, hardware
from .config import Config, config_from_args, stage_parser, save_config
from .data import train_dataset
from .fold_data import FoldData, compiled_forward, validation_ne
from .fsutil import atomic_path, file_lock, write_text_atomic
from . import joint
from .predictions import fold_dir
from .preprocess import run_data

HISTORY_FIELDS = ["epoch", "loss", "val_ne", "lr", "seconds", "img_per_s"]


# --------------------------------------------------------------------------- model + loss


def per_keypoint_loss(heatmaps, weights, beliefs, kind: str = "mse", target_scale: float = 1.0):
    """Weighted loss of every output and keypoint: (B, T, K) float32 (unsupervised points weigh 0).

    heatmaps: (B, h, w, K) Gaussian targets (peak 1); weights: (B, K); beliefs:
    (B, T, h, w, K). kind "mse": half the per-map sum of squared errors to the
    targets times `target_scale` (their peak height); "softmax_ce": cross-entropy
    between the target normalised to a distribution over cells and the (softmax)
    beliefs (the scale cancels).
    """
    from keras import ops

    beliefs = ops.cast(beliefs, "float32")
    target = ops.expand_dims(heatmaps, 1)
    if kind == "mse":
        per_map = 0.5 * ops.sum(ops.square(beliefs - target_scale * target), axis=(2, 3))   # (B, T, K)
    else:
        dist = target / ops.maximum(ops.sum(target, axis=(2, 3), keepdims=True), 1e-6)
        per_map = -ops.sum(dist * ops.log(beliefs + 1e-8), axis=(2, 3))
    return per_map * ops.expand_dims(weights, 1)


def heatmap_loss(heatmaps, weights, beliefs, kind: str = "mse", ohkm_topk: int = 0,
                 target_scale: float = 1.0):
    """Masked loss over all outputs (each supervised), a scalar.

    Without OHKM (ohkm_topk 0): the mean over B, T, K of `per_keypoint_loss`.
    With online hard keypoint mining (CPN's top-k loss, `train.ohkm_topk` = k > 0),
    the last output (the prediction) counts, per image, only its k largest
    keypoint losses: their sum / k replaces that output's mean over K; earlier
    (intermediate) outputs keep the plain mean. k is capped at K, so k >= K is the
    plain loss. Unsupervised points have loss 0 and so rank last.
    """
    from keras import ops

    per_map = per_keypoint_loss(heatmaps, weights, beliefs, kind, target_scale)   # (B, T, K)
    num_k = per_map.shape[-1]
    if not ohkm_topk or ohkm_topk >= num_k:
        return ops.mean(per_map)
    hardest, _ = ops.top_k(per_map[:, -1], ohkm_topk)                # (B, k)
    last = ops.sum(hardest, axis=-1) / ohkm_topk                    # (B,)
    earlier = ops.mean(per_map[:, :-1], axis=2)                     # (B, T-1)
    per_output = ops.concatenate([earlier, ops.expand_dims(last, 1)], axis=1)   # (B, T)
    return ops.mean(per_output)


def make_trainer(base, kind: str = "mse", sigma: float = 0.0, target_scale: float = 1.0, ohkm_topk: int = 0):
    """Wrap a heatmap model in a keras.Model whose loss is `heatmap_loss` (kind, top-k mining).

    Targets are heatmaps (B, h, w, K), or keypoints (B, K, 2) in heatmap cells
    (`train.targets: device`), encoded here with Gaussian `sigma` on the device.
    `target_scale` is the peak height of the MSE targets.
    """
    import keras
    from keras.src.losses import loss as loss_module

    class HeatmapTrainer(keras.Model):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def call(self, x, training=False):
            return self.net(x, training=training)

        def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
            heatmaps, weights = y
            if len(heatmaps.shape) == 3:  # keypoints: encode on the device
                if sigma <= 0:
                    raise ValueError("keypoint targets (train.targets: device) need make_trainer(sigma=codec.sigma)")
                heatmaps = codec.encode_tensor(heatmaps, weights, tuple(y_pred.shape[2:4]), sigma)
            loss = heatmap_loss(heatmaps, weights, y_pred, kind, ohkm_topk, target_scale)
            return loss_module.scale_loss_for_distribution(loss)

        def get_metrics_result(self):
            # Keras reduces the step's logs over the workers of a MultiWorkerMirroredStrategy with
            # reduce(MEAN, axis=0), which rejects scalars: hand it (1,) tensors there
            result = super().get_metrics_result()
            import tensorflow as tf

            if not tf.distribute.in_cross_replica_context() and \
                    distributed.is_multiworker(tf.distribute.get_strategy()):
                result = {k: tf.reshape(v, (1,)) for k, v in result.items()}
            return result

        def _maybe_symbolic_build(self, iterator=None, data_batch=None):
            # train() builds the model and optimizer before fit. Keras' version would take a
            # batch off the training stream and reduce it over the replicas, which fails under
            # MultiWorkerMirroredStrategy (nested uint8 batches): skip it once everything is built.
            if self.built and self.optimizer is not None and self.optimizer.built:
                return None
            return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

    return HeatmapTrainer(base)


def build_trainer(cfg: Config, num_keypoints: int, strategy=None, lr: Optional[float] = None):
    """Model of cfg.model wrapped with the config's loss, compiled (Adam at `lr`, default
    train.lr) and built.

    Under `strategy`'s scope when given (the caller sets the precision policy first).
    Under mixed_float16, compile wraps Adam in a LossScaleOptimizer (Keras does it for that policy).
    Returns the trainer; `trainer.net` is the heatmap model.
    """
    import keras

    from .models import build_model

    with strategy.scope() if strategy is not None else contextlib.nullcontext():
        trainer = make_trainer(build_model(cfg, num_keypoints), cfg.train.loss, cfg.codec.sigma,
                               cfg.train.target_scale, cfg.train.ohkm_topk)
        trainer.compile(optimizer=keras.optimizers.Adam(cfg.train.lr if lr is None else lr),
                        jit_compile=False)
        trainer.build((None, cfg.model.input_size, cfg.model.input_size, 3))
        trainer.optimizer.build(trainer.trainable_variables)
    return trainer


# --------------------------------------------------------------------------- resume + monitor


class RunState:
    """Persistent training state in fold<k>/resume/ (state.json + weights file)."""

    def __init__(self, directory: Path):
        self.dir = directory / "resume"
        self.path = self.dir / "state.json"

    def load(self) -> Optional[Dict]:
        if not self.path.exists():
            return None
        state = json.loads(self.path.read_text())
        return state if (self.dir / state["weights"]).exists() else None

    def save(self, trainer, state: Dict) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        name = f"epoch{state['epoch']}.weights.h5"
        tmp = self.dir / f"tmp-{name}"
        trainer.save_weights(tmp)
        os.replace(tmp, self.dir / name)
        write_text_atomic(self.path, json.dumps({**state, "weights": name}))
        for old in self.dir.glob("epoch*.weights.h5"):
            if old.name != name:
                old.unlink()


def scheduled_lr(progress: float, peak: float, floor: float, kind: str, warmup: float = 0.0) -> float:
    """Learning rate of a decaying schedule at `progress` ∈ [0, 1] of the run.

    A linear ramp from `floor` to `peak` over the first `warmup` fraction, then
    `kind` "cosine" (half a cosine) or "linear" from `peak` down to `floor` at 1.
    """
    progress = min(max(progress, 0.0), 1.0)
    if progress < warmup:
        return floor + (peak - floor) * progress / warmup
    rest = (progress - warmup) / (1.0 - warmup)
    shape = 0.5 * (1.0 + math.cos(math.pi * rest)) if kind == "cosine" else 1.0 - rest
    return floor + (peak - floor) * shape


def run_progress(steps_done: int, total_steps: int, seconds: float, budget: float) -> float:
    """Fraction of the run done: steps over the epochs' steps, or seconds over the time budget
    (`budget` 0: none), whichever is further along; a time-capped run decays by the clock."""
    by_steps = steps_done / max(total_steps, 1)
    return max(by_steps, seconds / budget) if budget else by_steps


def make_monitor(trainer, base, data: FoldData, cfg: Config, out: Path, state: Dict, run_state: RunState,
                 started: float, strategy=None, peak_lr: Optional[float] = None):
    """Keras callback: val NE, best checkpoint, LR schedule, early stop, time budget, resume state.

    Writing the model and the resume state costs about as much as validating, so on
    CPU-sized epochs they are written together at most every `train.checkpoint_s`
    seconds and at the end: the best weights wait in memory, and `model.keras` and the
    resume state always describe the same epoch (a kill loses at most that interval).

    `train.schedule` plateau halves the LR after `lr_patience` epochs without a val NE
    gain; cosine / linear set it before every step from `run_progress` (`scheduled_lr`,
    from `peak_lr` down to `train.min_lr`).
    Under a multi-worker strategy every decision (NaN, val NE, time budget, the clock the
    schedule reads) is taken on values all workers agree on (`distributed.agree`) at the
    end of an epoch, so they all stop at the same step with the same LR.
    """
    import keras

    multiworker = cfg.train.distribute == "multiworker"
    decaying = cfg.train.schedule != "plateau"
    peak_lr = cfg.train.lr if peak_lr is None else peak_lr
    total_steps = cfg.train.epochs * state["steps"]

    def agree(*values):
        return distributed.agree(strategy, values) if strategy is not None else list(values)

    class Monitor(keras.callbacks.Callback):
        nan_epoch = None
        agreed_seconds = state["seconds_before"]  # the schedule's clock under multiworker
        best_weights = None  # the best epoch's weights until the next checkpoint writes model.keras
        saved_at = 0.0       # agreed seconds of this session at the last checkpoint

        def __init__(self):
            super().__init__()
            self.forward = compiled_forward(base)  # traced at the first validation, then reused

        def save_best(self):
            """Writes the best weights held in memory to model.keras (the model keeps its own)."""
            if self.best_weights is None:
                return
            current = base.get_weights()
            base.set_weights(self.best_weights)
            with atomic_path(out / "model.keras") as tmp:  # tmp name ends in .keras too
                base.save(tmp)
            base.set_weights(current)
            self.best_weights = None

        def on_train_batch_begin(self, batch, logs=None):
            if not decaying:
                return
            seconds = (self.agreed_seconds if multiworker
                       else time.time() - started + state["seconds_before"])
            progress = run_progress(state["epoch"] * state["steps"] + batch, total_steps, seconds,
                                    cfg.train.time_budget_s)
            trainer.optimizer.learning_rate.assign(
                scheduled_lr(progress, peak_lr, cfg.train.min_lr, cfg.train.schedule, cfg.train.warmup))

        def on_train_batch_end(self, batch, logs=None):
            loss = (logs or {}).get("loss")
            if loss is not None and not math.isfinite(float(loss)):
                self.nan_epoch = state["epoch"]
                if not multiworker:  # other workers would wait for this one: stop at the epoch's end
                    trainer.stop_training = True

        def on_epoch_begin(self, epoch, logs=None):
            self.t0 = time.time()

        def on_epoch_end(self, epoch, logs=None):
            if multiworker:
                (nan,) = agree(float(self.nan_epoch is not None))
                if nan > 0:
                    self.nan_epoch = state["epoch"]
                    trainer.stop_training = True
            if self.nan_epoch is not None:
                self.save_best()  # the best weights seen before the NaN
                return
            logs = logs if logs is not None else {}
            seconds = time.time() - self.t0
            val_ne, elapsed = agree(validation_ne(base, data, cfg, self.forward), time.time() - started)
            self.agreed_seconds = elapsed + state["seconds_before"]
            logs["val_ne"] = val_ne
            lr = float(keras.ops.convert_to_numpy(trainer.optimizer.learning_rate))
            state["epoch"] = epoch + 1
            state["seconds"] += time.time() - self.t0
            state["train_seconds"] += seconds
            state["images"] += state["steps"] * state["global_batch"]
            if val_ne < state["best_ne"]:
                state.update(best_ne=val_ne, best_epoch=epoch + 1, wait=0, lr_wait=0)
                self.best_weights = base.get_weights()
            else:
                state["wait"] += 1
                state["lr_wait"] += 1
                if not decaying and state["lr_wait"] >= cfg.train.lr_patience and lr > cfg.train.min_lr:
                    lr = max(cfg.train.min_lr, lr * 0.5)
                    trainer.optimizer.learning_rate.assign(lr)
                    state["lr_wait"] = 0
            state["lr"] = lr
            row = {"epoch": epoch, "loss": float(logs.get("loss", float("nan"))), "val_ne": val_ne, "lr": lr,
                   "seconds": seconds, "img_per_s": state["steps"] * state["global_batch"] / max(seconds, 1e-9)}
            _append_history(out / "history.csv", row)
            budget = cfg.train.time_budget_s
            reason = None
            if state["wait"] >= cfg.train.patience:
                reason = "early_stop"
            elif budget and elapsed + state["seconds_before"] >= budget:
                reason = "budget"
            elif epoch + 1 >= cfg.train.epochs:
                reason = "epochs"
            stop = reason in ("early_stop", "budget")
            state["finished"] = reason is not None
            state["stop_reason"] = reason
            if reason is not None or elapsed - self.saved_at >= cfg.train.checkpoint_s:
                self.save_best()
                run_state.save(trainer, state)
                self.saved_at = elapsed
            if stop:
                trainer.stop_training = True

    return Monitor()


def _append_history(path: Path, row: Dict) -> None:
    new = not path.exists()
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=HISTORY_FIELDS)
        if new:
            w.writeheader()
        w.writerow({k: row[k] for k in HISTORY_FIELDS})
        f.flush()
        os.fsync(f.fileno())


def _truncate_history(path: Path, epochs_done: int) -> None:
    """Drop history rows of epochs that the resume state does not hold (killed mid-save)."""
    if not path.exists():
        return
    hist = pd.read_csv(path)
    keep = hist[hist["epoch"] < epochs_done]
    if len(keep) != len(hist):
        with atomic_path(path) as tmp:
            keep.to_csv(tmp, index=False)


# --------------------------------------------------------------------------- main


def resume_key(cfg: Config, prep_identity: Optional[Dict] = None) -> str:
    """Digest of the settings (and prep artifacts) a saved state must share to be resumed.

    Under the plateau schedule more epochs or a longer time budget may be asked
    of a finished run; a decaying schedule (cosine, linear) is drawn over the
    epochs and budget, so changing them starts over. Threads, distribution or
    precision may change between sessions; any other change to data (the
    dataset, cache or folds it was trained on), model, codec, augmentation or
    training starts over.
    """
    import hashlib

    kept = cfg.stage_settings("train")
    if cfg.train.schedule == "plateau":
        for key in ("epochs", "time_budget_s"):
            kept["train"].pop(key)
    kept["prep"] = prep_identity or {}
    return hashlib.sha1(json.dumps(kept, sort_keys=True).encode()).hexdigest()[:10]


@contextlib.contextmanager
def model_lock(directory: Path):
    """Exclusive lock of a model directory while it trains (fold<k>/.lock, fcntl).

    A second trainer of the same model (another make, a second terminal) stops at
    once with a message instead of writing into the same files.
    """
    path = Path(directory) / ".lock"
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(file_lock(path, wait=False))
        except BlockingIOError:
            raise RuntimeError(f"train: {directory} is being trained by another process "
                               f"(lock {path}); wait for it or stop it") from None
        yield


def train(output, cfg: Config, run: str, category: str, fold: int, force: bool = False,
          devices=None) -> Dict:
    """Train (or resume) one model; returns metrics.json's content.

    `cfg` is the run's config; the model is trained with `cfg.for_category(category)`
    (its `categories:` overrides), which is also what config.yaml and the resume key record.
    """
    cfg = cfg.for_category(category)
    out = fold_dir(output, run, category, fold)
    # multiworker: the chief writes `out`, the other workers a scratch copy (distributed.worker_dir)
    with distributed.worker_dir(out, cfg.train.distribute) as write_dir, model_lock(write_dir):
        return _train_locked(output, cfg, run, category, fold, write_dir, force, devices)


def _train_locked(output, cfg: Config, run: str, category: str, fold: int, out: Path, force: bool,
                  devices) -> Dict:
    prep = run_data(output, run, cfg)
    key = resume_key(cfg, prep.identity())
    metrics_path = out / "metrics.json"
    run_state = RunState(out)
    state = run_state.load()
    if state and state.get("config") != key:
        print(f"train: {out}: the config changed since this model was trained; starting over")
        force = True
    if force and out.exists():
        import shutil

        for child in out.iterdir():  # keep the lock file we hold
            if child.name != ".lock":
                shutil.rmtree(child) if child.is_dir() else child.unlink()
        state = None
    more_epochs = state is not None and state["epoch"] < cfg.train.epochs and (
        state.get("stop_reason") == "epochs"
        or (state.get("stop_reason") == "budget" and cfg.train.time_budget_s > state["seconds"]))
    if state and state.get("finished") and metrics_path.exists() and not more_epochs:
        print(f"train: {out} already finished (val NE {state['best_ne']:.4f}); use --force to retrain")
        os.utime(metrics_path)  # current: let make's file times agree
        return json.loads(metrics_path.read_text())
    out.mkdir(parents=True, exist_ok=True)
    threads = hardware.configure_threads(cfg.train.threads)
    import keras
    import tensorflow as tf

    policy = hardware.set_precision(cfg.train.precision)
    keras.utils.set_random_seed(cfg.train.seed + 1000 * fold)
    save_config(cfg, out / "config.yaml")
    data = FoldData(prep, cfg, category, fold)
    strategy = hardware.make_strategy(cfg.train.distribute, devices)
    replicas = strategy.num_replicas_in_sync
    batch = distributed.global_batch(cfg.train.batch_size, replicas)  # train.batch_size is per replica
    lr = distributed.scaled_lr(cfg.train.lr, replicas, cfg.train.lr_scaling)
    trainer = build_trainer(cfg, data.num_keypoints, strategy, lr)
    base = trainer.net
    steps = cfg.train.steps_per_epoch or max(1, math.ceil(len(data.train) / batch))
    fresh = {"epoch": 0, "best_ne": float("inf"), "best_epoch": 0, "wait": 0, "lr_wait": 0,
             "lr": lr, "seconds": 0.0, "train_seconds": 0.0, "images": 0, "steps": steps,
             "finished": False, "config": key}
    if state:
        trainer.load_weights(run_state.dir / state["weights"])
        trainer.optimizer.learning_rate.assign(state["lr"])
        print(f"train: resuming {out} after epoch {state['epoch']} (best val NE {state['best_ne']:.4f})")
    else:
        state = fresh
        for stale in ("history.csv", "model.keras", "metrics.json"):
            (out / stale).unlink(missing_ok=True)
    state["steps"] = steps
    state["global_batch"] = batch
    state["seconds_before"] = state["seconds"]
    _truncate_history(out / "history.csv", state["epoch"])
    start = state["epoch"] * steps * batch
    dataset = distributed.distribute_input(strategy, lambda pipeline, pipelines: train_dataset(
        data.train, cfg, data.flip_index, start, cfg.train.batch_size, batch, pipeline, pipelines))
    started = time.time()
    monitor = make_monitor(trainer, base, data, cfg, out, state, run_state, started, strategy, peak_lr=lr)
    callbacks = [monitor, keras.callbacks.TensorBoard(str(out / "tensorboard"), write_graph=False,
                                                      profile_batch=0)]
    print(f"train: {category} fold {fold}: {len(data.train)} train / {len(data.val)} val images, "
          f"{steps} steps/epoch, policy {policy}, {threads} thread(s), "
          f"{replicas} replica(s) × batch {cfg.train.batch_size}, lr {lr:g} → {out}")
    if state["epoch"] < cfg.train.epochs:
        trainer.fit(dataset, epochs=cfg.train.epochs, initial_epoch=state["epoch"], steps_per_epoch=steps,
                    callbacks=callbacks, shuffle=False, verbose=1 if sys.stdout.isatty() else 2)
    if monitor.nan_epoch is not None:
        msg = (f"train: NaN loss in epoch {monitor.nan_epoch} of {category} fold {fold}; stopped. "
               f"Best checkpoint kept: {out / 'model.keras'} (val NE {state['best_ne']:.4f}). "
               "Lower train.lr or use train.precision=float32.")
        raise FloatingPointError(msg)
    metrics = {
        "val_ne": state["best_ne"], "best_epoch": state["best_epoch"], "epochs": state["epoch"],
        "seconds": state["seconds"], "train_img_per_s": state["images"] / max(state["train_seconds"], 1e-9),
        "category": category, "fold": fold, "run": run, "n_train": len(data.train), "n_val": len(data.val),
        "precision": policy, "threads": threads, "replicas": replicas, "global_batch": batch, "lr": lr,
        "params": int(base.count_params()), "stop_reason": state.get("stop_reason"),
        "tf_version": tf.__version__, "prep": prep.identity(),
    }
    write_text_atomic(metrics_path, json.dumps(metrics, indent=2))
    print(f"train: {category} fold {fold}: best val NE {metrics['val_ne']:.4f} at epoch {metrics['best_epoch']}"
          f" ({metrics['epochs']} epochs, {metrics['seconds']:.0f} s, {metrics['train_img_per_s']:.1f} img/s)")
    return metrics


def main(argv=None) -> int:
    parser = stage_parser("Train one model (config model.name) for one category and fold.")
    parser.add_argument("--category", required=True)
    parser.add_argument("--fold", type=int, required=True)
    parser.add_argument("--force", action="store_true", help="discard previous state and retrain")
    args = parser.parse_args(argv)
    cfg = config_from_args(args)
    models = joint.model_names(cfg)
    if args.category not in models:
        hint = " (train.joint: one model for every category)" if cfg.train.joint else ""
        parser.error(f"--category must be one of {', '.join(models)}{hint}")
    if not 0 <= args.fold < cfg.data.folds:
        parser.error(f"--fold must be in 0..{cfg.data.folds - 1}")
    try:
        gpu = distributed.claim_gpu(cfg.for_category(args.category).train.distribute, hardware.parallel_jobs())
        if gpu is not None:
            print(f"train: {args.category} fold {args.fold} on GPU {gpu} (CUDA_VISIBLE_DEVICES, make -j slot)")
        train(args.output, cfg, args.run or cfg.name, args.category, args.fold, args.force)
    except FloatingPointError as err:
        print(err, file=sys.stderr)
        return 3
    except (RuntimeError, FileNotFoundError, ValueError) as err:
        print(f"train: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
