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
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Dict, Optional

from pipeline import distributed, hardware
from pipeline.config import Config, save_config
from pipeline.data import train_dataset
from pipeline.fit.fold_data import FoldData
from pipeline.fit.resume import (
    RunState,
    TrainState,
    model_lock,
    resume_key,
    truncate_history,
)
from pipeline.fsutil import write_text_atomic
from pipeline.heatmap import codec
from pipeline.heatmap.losses import heatmap_loss
from pipeline.store.layout import MODEL_FILES, fold_dir
from pipeline.store.records import broken_model, output_ids
from pipeline.store.rundata import run_data


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


def scaled_adam(lr, variables, multiplier: float, **adam_args):
    """Adam whose steps on `variables` (e.g. a pretrained backbone's) use lr × `multiplier`.

    The schedule callbacks set the optimizer's one learning rate; the multiplier follows it.
    """
    import keras

    class ScaledAdam(keras.optimizers.Adam):
        def build(self, var_list):
            super().build(var_list)
            chosen = {id(v) for v in variables}
            self._lr_scale = [multiplier if id(v) in chosen else 1.0 for v in var_list]

        def update_step(self, gradient, variable, learning_rate):
            scale = self._lr_scale[self._get_variable_index(variable)]
            if scale != 1.0:
                learning_rate = learning_rate * scale
            return super().update_step(gradient, variable, learning_rate)

    return ScaledAdam(lr, **adam_args)


def build_trainer(cfg: Config, num_keypoints: int, strategy=None, lr: Optional[float] = None):
    """Model of cfg.model wrapped with the config's loss, compiled (Adam at `lr`, default
    train.lr) and built.

    Under `strategy`'s scope when given (the caller sets the precision policy first).
    Under mixed_float16, compile wraps Adam in a LossScaleOptimizer (Keras does it for that policy).
    With train.ema, Adam keeps a moving average of the trainable weights (Keras's `use_ema`).
    Returns the trainer; `trainer.net` is the heatmap model.
    """
    import keras

    from pipeline.models import build_model

    from pipeline.models.backbones import backbone_variables

    with strategy.scope() if strategy is not None else contextlib.nullcontext():
        net = build_model(cfg, num_keypoints)
        trainer = make_trainer(net, cfg.train.loss, cfg.codec.sigma,
                               cfg.train.target_scale, cfg.train.ohkm_topk)
        lr = cfg.train.lr if lr is None else lr
        ema = {"use_ema": True, "ema_momentum": cfg.train.ema} if cfg.train.ema else {}
        if cfg.train.backbone_lr != 1.0:
            scaled = backbone_variables(net, cfg)
            if not scaled:
                raise ValueError(f"train.backbone_lr={cfg.train.backbone_lr} needs a pretrained backbone "
                                 f"(model.backbone={cfg.model.backbone!r} has none)")
            optimizer = scaled_adam(lr, scaled, cfg.train.backbone_lr, **ema)
        else:
            optimizer = keras.optimizers.Adam(lr, **ema)
        trainer.compile(optimizer=optimizer, jit_compile=False)
        trainer.build((None, cfg.model.input_size, cfg.model.input_size, 3))
        trainer.optimizer.build(trainer.trainable_variables)
    return trainer


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
    metrics_path = out / MODEL_FILES["metrics"]
    run_state = RunState(out)
    saved = run_state.load()
    if saved and saved.get("config") != key:
        print(f"train: {out}: the config changed since this model was trained; starting over")
        force = True
    if force and out.exists():
        import shutil

        for child in out.iterdir():  # keep the lock file we hold
            if child.name != ".lock":
                shutil.rmtree(child) if child.is_dir() else child.unlink()
        saved = None
    state = TrainState.from_dict(saved) if saved else None
    more_epochs = state is not None and state.epoch < cfg.train.epochs and (
        state.stop_reason == "epochs"
        or (state.stop_reason == "budget" and cfg.train.time_budget_s > state.seconds))
    if state and state.finished and not more_epochs and not force:
        problem = broken_model(out)
        if problem is not None:
            print(f"train: {problem}; retraining it")
            return _train_locked(output, cfg, run, category, fold, out, True, devices)
        if metrics_path.exists():
            print(f"train: {out} already finished (val NE {state.best_ne:.4f}); use --force to retrain")
            os.utime(metrics_path)  # current: let make's file times agree
            return json.loads(metrics_path.read_text())
    out.mkdir(parents=True, exist_ok=True)
    threads = hardware.configure_threads(cfg.train.threads)
    import keras
    import tensorflow as tf

    from pipeline.fit.callbacks import training_callbacks

    policy = hardware.set_precision(cfg.train.precision)
    keras.utils.set_random_seed(cfg.train.seed + 1000 * fold)
    save_config(cfg, out / MODEL_FILES["config"])
    data = FoldData(prep, cfg, category, fold)
    strategy = hardware.make_strategy(cfg.train.distribute, devices)
    replicas = strategy.num_replicas_in_sync
    batch = distributed.global_batch(cfg.train.batch_size, replicas)  # train.batch_size is per replica
    lr = distributed.scaled_lr(cfg.train.lr, replicas, cfg.train.lr_scaling)
    trainer = build_trainer(cfg, data.num_keypoints, strategy, lr)
    base = trainer.net
    steps = cfg.train.steps_per_epoch or max(1, math.ceil(len(data.train) / batch))
    if state:
        trainer.load_weights(run_state.dir / saved["weights"])
        trainer.optimizer.learning_rate.assign(state.lr)
        print(f"train: resuming {out} after epoch {state.epoch} (best val NE {state.best_ne:.4f})")
    else:
        state = TrainState(lr=lr, steps=steps, config=key)
        for stale in ("history", "model", "metrics"):
            (out / MODEL_FILES[stale]).unlink(missing_ok=True)
    state.steps, state.global_batch, state.seconds_before = steps, batch, state.seconds
    truncate_history(out / MODEL_FILES["history"], state.epoch)
    start = state.epoch * steps * batch
    dataset = distributed.distribute_input(strategy, lambda pipeline, pipelines: train_dataset(
        data.train, cfg, data.flip_index, start, cfg.train.batch_size, batch, pipeline, pipelines))
    started = time.time()
    callbacks = training_callbacks(trainer, base, data, cfg, out, state, run_state, started, strategy, peak_lr=lr)
    guard = callbacks[0]
    callbacks.append(keras.callbacks.TensorBoard(str(out / MODEL_FILES["tensorboard"]), write_graph=False,
                                                 profile_batch=0))
    print(f"train: {category} fold {fold}: {len(data.train)} train / {len(data.val)} val images, "
          f"{steps} steps/epoch, policy {policy}, {threads} thread(s), "
          f"{replicas} replica(s) × batch {cfg.train.batch_size}, lr {lr:g} → {out}")
    if state.epoch < cfg.train.epochs:
        trainer.fit(dataset, epochs=cfg.train.epochs, initial_epoch=state.epoch, steps_per_epoch=steps,
                    callbacks=callbacks, shuffle=False, verbose=1 if sys.stdout.isatty() else 2)
    if guard.nan_epoch is not None:
        msg = (f"train: NaN loss in epoch {guard.nan_epoch} of {category} fold {fold}; stopped. "
               f"Best checkpoint kept: {out / MODEL_FILES['model']} (val NE {state.best_ne:.4f}). "
               "Lower train.lr or use train.precision=float32.")
        raise FloatingPointError(msg)
    metrics = {
        "val_ne": state.best_ne, "best_epoch": state.best_epoch, "epochs": state.epoch,
        "seconds": state.seconds, "train_img_per_s": state.images / max(state.train_seconds, 1e-9),
        "category": category, "fold": fold, "run": run, "n_train": len(data.train), "n_val": len(data.val),
        "precision": policy, "threads": threads, "replicas": replicas, "global_batch": batch, "lr": lr,
        "params": int(base.count_params()), "stop_reason": state.stop_reason,
        "tf_version": tf.__version__, "prep": prep.identity(),
        "model_file": output_ids(metrics_path, [out / MODEL_FILES["model"]]),
    }
    write_text_atomic(metrics_path, json.dumps(metrics, indent=2))
    print(f"train: {category} fold {fold}: best val NE {metrics['val_ne']:.4f} at epoch {metrics['best_epoch']}"
          f" ({metrics['epochs']} epochs, {metrics['seconds']:.0f} s, {metrics['train_img_per_s']:.1f} img/s)")
    return metrics
