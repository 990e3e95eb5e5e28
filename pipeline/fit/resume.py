"""Resuming a killed training: the resume key, the model lock, the CSV history.
"""
from __future__ import annotations

import contextlib
import csv
import json
import os
from pathlib import Path
from typing import Dict, Optional

import pandas as pd

from pipeline.config import Config
from pipeline.fsutil import atomic_path, file_lock

HISTORY_FIELDS = ["epoch", "loss", "val_ne", "lr", "seconds", "img_per_s"]


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
