"""The training loop's Keras callbacks, one job each, sharing one TrainState.

- `NanGuard`: a non-finite loss stops the run (under multiworker at the epoch's end, agreed);
- `ScheduledLR`: cosine / linear schedules set the LR before every step from the run's progress;
- `Monitor`: after every epoch, validation NE (original pixels, no TTA; of the weights' moving
  average under `train.ema`), the best weights, the
  plateau LR halving, early stopping, the time budget and the checkpoints (`model.keras` and the
  resume state, written together at most every `train.checkpoint_s` seconds and at the end).

Under a multi-worker strategy every decision (NaN, val NE, time budget, the clock the schedule
reads) is taken on values all workers agree on (`distributed.agree`) at the end of an epoch, so
they all stop at the same step with the same LR.
"""
from __future__ import annotations

import contextlib
import math
import time
from pathlib import Path
from typing import Optional

import keras

from pipeline import distributed
from pipeline.config import Config
from pipeline.fit.fold_data import FoldData, validation_ne
from pipeline.fit.resume import RunState, TrainState, append_history
from pipeline.fit.schedule import run_progress, scheduled_lr
from pipeline.fsutil import atomic_path
from pipeline.heatmap.inference import compiled_forward
from pipeline.store.layout import MODEL_FILES


@contextlib.contextmanager
def ema_weights(optimizer):
    """The optimizer's moving average of the trainable weights (`train.ema`, Keras's `use_ema`)
    in the model while the block runs; the training weights are back after it. Nothing is
    swapped when the optimizer keeps no average."""
    inner = getattr(optimizer, "inner_optimizer", optimizer)  # a LossScaleOptimizer's Adam
    averages = getattr(inner, "_model_variables_moving_average", None) if getattr(inner, "use_ema", False) else None
    if not averages:
        yield
        return
    variables = inner._trainable_variables
    held = [keras.ops.convert_to_numpy(v) for v in variables]
    for var, average in zip(variables, averages):
        var.assign(average)
    try:
        yield
    finally:
        for var, value in zip(variables, held):
            var.assign(value)


class Clock:
    """Seconds the run has trained, this session's and before it (`TrainState.seconds_before`);
    under multiworker the value the workers agreed on at the last epoch's end."""

    def __init__(self, state: TrainState, started: float, multiworker: bool):
        self.state, self.started, self.multiworker = state, started, multiworker
        self.agreed = state.seconds_before

    def seconds(self) -> float:
        return self.agreed if self.multiworker else time.time() - self.started + self.state.seconds_before


class NanGuard(keras.callbacks.Callback):
    """Notes the epoch of a non-finite loss and stops (single worker: at once)."""

    def __init__(self, trainer, state: TrainState, strategy=None, multiworker: bool = False):
        super().__init__()
        self.trainer, self.state, self.strategy, self.multiworker = trainer, state, strategy, multiworker
        self.nan_epoch: Optional[int] = None

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.nan_epoch = self.state.epoch
            if not self.multiworker:  # other workers would wait for this one: stop at the epoch's end
                self.trainer.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        if self.multiworker:
            (nan,) = distributed.agree(self.strategy, (float(self.nan_epoch is not None),))
            if nan > 0:
                self.nan_epoch = self.state.epoch
                self.trainer.stop_training = True


class ScheduledLR(keras.callbacks.Callback):
    """`train.schedule` cosine / linear: the LR of every step, from `peak_lr` down to `train.min_lr`
    (`scheduled_lr` of `run_progress`: steps, or the clock against the time budget)."""

    def __init__(self, trainer, cfg: Config, state: TrainState, clock: Clock, peak_lr: float):
        super().__init__()
        self.trainer, self.cfg, self.state, self.clock, self.peak_lr = trainer, cfg, state, clock, peak_lr

    def on_train_batch_begin(self, batch, logs=None):
        t = self.cfg.train
        progress = run_progress(self.state.epoch * self.state.steps + batch, t.epochs * self.state.steps,
                                self.clock.seconds(), t.time_budget_s)
        self.trainer.optimizer.learning_rate.assign(scheduled_lr(progress, self.peak_lr, t.min_lr, t.schedule,
                                                                 t.warmup))


class Monitor(keras.callbacks.Callback):
    """Validation, the best weights, plateau LR halving, early stopping, budget and checkpoints.

    Writing the model and the resume state costs about as much as validating, so on CPU-sized
    epochs they are written together at most every `train.checkpoint_s` seconds and at the end:
    the best weights wait in memory, and `model.keras` and the resume state always describe the
    same epoch (a kill loses at most that interval).
    """

    def __init__(self, trainer, base, data: FoldData, cfg: Config, out: Path, state: TrainState,
                 run_state: RunState, clock: Clock, guard: NanGuard, strategy=None):
        super().__init__()
        self.trainer, self.base, self.data, self.cfg, self.out = trainer, base, data, cfg, out
        self.state, self.run_state, self.clock, self.guard, self.strategy = state, run_state, clock, guard, strategy
        self.forward = compiled_forward(base)  # traced at the first validation, then reused
        self.best_weights = None  # the best epoch's weights until the next checkpoint writes model.keras
        self.saved_at = 0.0       # agreed seconds of this session at the last checkpoint

    def agree(self, *values):
        return distributed.agree(self.strategy, values) if self.strategy is not None else list(values)

    def save_best(self):
        """Writes the best weights held in memory to model.keras (the model keeps its own)."""
        if self.best_weights is None:
            return
        current = self.base.get_weights()
        self.base.set_weights(self.best_weights)
        with atomic_path(self.out / MODEL_FILES["model"]) as tmp:  # tmp name ends in .keras too
            self.base.save(tmp)
        self.base.set_weights(current)
        self.best_weights = None

    def on_epoch_begin(self, epoch, logs=None):
        self.t0 = time.time()

    def on_epoch_end(self, epoch, logs=None):
        cfg, state = self.cfg.train, self.state
        if self.guard.nan_epoch is not None:
            self.save_best()  # the best weights seen before the NaN
            return
        logs = logs if logs is not None else {}
        seconds = time.time() - self.t0
        with ema_weights(self.trainer.optimizer):  # the weights validated are those kept
            val_ne, elapsed = self.agree(validation_ne(self.base, self.data, self.cfg, self.forward),
                                         time.time() - self.clock.started)
            improved = val_ne < state.best_ne
            if improved:
                self.best_weights = self.base.get_weights()
        self.clock.agreed = elapsed + state.seconds_before
        logs["val_ne"] = val_ne
        lr = float(keras.ops.convert_to_numpy(self.trainer.optimizer.learning_rate))
        state.epoch = epoch + 1
        state.seconds += time.time() - self.t0
        state.train_seconds += seconds
        state.images += state.steps * state.global_batch
        if improved:
            state.best_ne, state.best_epoch, state.wait, state.lr_wait = val_ne, epoch + 1, 0, 0
        else:
            state.wait += 1
            state.lr_wait += 1
            if cfg.schedule == "plateau" and state.lr_wait >= cfg.lr_patience and lr > cfg.min_lr:
                lr = max(cfg.min_lr, lr * 0.5)
                self.trainer.optimizer.learning_rate.assign(lr)
                state.lr_wait = 0
        state.lr = lr
        append_history(self.out / MODEL_FILES["history"],
                       {"epoch": epoch, "loss": float(logs.get("loss", float("nan"))), "val_ne": val_ne, "lr": lr,
                        "seconds": seconds, "img_per_s": state.steps * state.global_batch / max(seconds, 1e-9)})
        reason = None
        if state.wait >= cfg.patience:
            reason = "early_stop"
        elif cfg.time_budget_s and elapsed + state.seconds_before >= cfg.time_budget_s:
            reason = "budget"
        elif epoch + 1 >= cfg.epochs:
            reason = "epochs"
        state.finished, state.stop_reason = reason is not None, reason
        if reason is not None or elapsed - self.saved_at >= cfg.checkpoint_s:
            self.save_best()
            self.run_state.save(self.trainer, state)
            self.saved_at = elapsed
        if reason in ("early_stop", "budget"):
            self.trainer.stop_training = True


def training_callbacks(trainer, base, data: FoldData, cfg: Config, out: Path, state: TrainState,
                       run_state: RunState, started: float, strategy=None, peak_lr: Optional[float] = None):
    """The callbacks of one training, in order: [NanGuard, (ScheduledLR,) Monitor]. The guard is
    first (its multiworker agreement precedes validation); `peak_lr` defaults to train.lr."""
    multiworker = cfg.train.distribute == "multiworker"
    clock = Clock(state, started, multiworker)
    guard = NanGuard(trainer, state, strategy, multiworker)
    out_list = [guard]
    if cfg.train.schedule != "plateau":
        out_list.append(ScheduledLR(trainer, cfg, state, clock, cfg.train.lr if peak_lr is None else peak_lr))
    out_list.append(Monitor(trainer, base, data, cfg, out, state, run_state, clock, guard, strategy))
    return out_list
