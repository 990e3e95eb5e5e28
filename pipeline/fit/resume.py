"""Resuming a killed training: the training state and its file, the resume key, the model lock,
the CSV history (fold<k>/resume/state.json + epoch<e>.weights.h5, fold<k>/history.csv)."""
from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import os
from pathlib import Path
from typing import Dict, Optional

import pandas as pd

from pipeline.config import Config
from pipeline.fsutil import atomic_path, file_lock, lock_holder, write_text_atomic

HISTORY_FIELDS = ["epoch", "loss", "val_ne", "lr", "seconds", "img_per_s"]


@dataclasses.dataclass
class TrainState:
    """Where one model's training stands; saved with its weights at every checkpoint.

    epoch: epochs finished; best_ne / best_epoch: the best validation NE and its epoch (1-based);
    wait / lr_wait: epochs since it improved (early stopping / plateau LR halving); lr: the
    optimizer's LR; seconds / train_seconds: wall time of finished epochs with / without
    validation; images: images trained on; steps / global_batch: steps per epoch and images per
    step; finished / stop_reason: done, and why (epochs | early_stop | budget); config: the
    resume key; seconds_before: `seconds` when this session started (not saved meaning: a clock).
    """

    epoch: int = 0
    best_ne: float = float("inf")
    best_epoch: int = 0
    wait: int = 0
    lr_wait: int = 0
    lr: float = 0.0
    seconds: float = 0.0
    train_seconds: float = 0.0
    images: int = 0
    steps: int = 0
    finished: bool = False
    config: str = ""
    global_batch: int = 0
    seconds_before: float = 0.0
    stop_reason: Optional[str] = None

    @classmethod
    def from_dict(cls, values: Dict) -> "TrainState":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})


class RunState:
    """Persistent training state in fold<k>/resume/ (state.json + weights file)."""

    def __init__(self, directory: Path):
        self.dir = directory / "resume"
        self.path = self.dir / "state.json"

    def load(self) -> Optional[Dict]:
        """The saved state.json (with its `weights` file name), or None when there is none whole."""
        if not self.path.exists():
            return None
        state = json.loads(self.path.read_text())
        return state if (self.dir / state["weights"]).exists() else None

    def save(self, trainer, state: TrainState) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        name = f"epoch{state.epoch}.weights.h5"
        tmp = self.dir / f"tmp-{name}"
        trainer.save_weights(tmp)
        os.replace(tmp, self.dir / name)
        write_text_atomic(self.path, json.dumps({**dataclasses.asdict(state), "weights": name}))
        for old in self.dir.glob("epoch*.weights.h5"):
            if old.name != name:
                old.unlink()


def append_history(path: Path, row: Dict) -> None:
    new = not path.exists()
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=HISTORY_FIELDS)
        if new:
            w.writeheader()
        w.writerow({k: row[k] for k in HISTORY_FIELDS})
        f.flush()
        os.fsync(f.fileno())


def truncate_history(path: Path, epochs_done: int) -> None:
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
                               f"({lock_holder(path)}; lock {path}); wait for it or stop it") from None
        yield
