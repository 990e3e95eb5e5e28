"""Every path under OUTPUT, in one place (the only code that spells the run store's shape).

    prep/<dataset>/cache/<s..._m...>/, folds/<k..._seed...>.csv   (keyed by what made them)
    runs/<run>/<category>/fold<k>/                              (one model's artifacts)
    runs/<run>/.stamps/                                         (make's per-stage settings)
"""
from __future__ import annotations

from pathlib import Path


def run_dir(output, run: str) -> Path:
    return Path(output) / "runs" / run


def fold_dir(output, run: str, category: str, fold: int) -> Path:
    return run_dir(output, run) / category / f"fold{fold}"


def dataset_key(fingerprint: str) -> str:
    return f"ds-{fingerprint[:12]}"


def cache_key(size: int, margin: int) -> str:
    return f"s{size}_m{margin}"


def folds_key(k: int, seed: int) -> str:
    return f"k{k}_seed{seed}"


def dataset_dir(output, key: str) -> Path:
    return Path(output) / "prep" / key


def cache_dir(ds_dir, size: int, margin: int) -> Path:
    return Path(ds_dir) / "cache" / cache_key(size, margin)


def folds_path(ds_dir, k: int, seed: int) -> Path:
    return Path(ds_dir) / "folds" / f"{folds_key(k, seed)}.csv"


def cache_path(ds_dir, split: str, size: int, margin: int) -> Path:
    return cache_dir(ds_dir, size, margin) / f"{split}.npy"


def prep_ref_path(output, run: str) -> Path:
    return Path(output) / "runs" / run / "prep.json"


# --------------------------------------------------------------------------- make stamps


def stamps_dir(output, run: str) -> Path:
    return Path(output) / "runs" / run / ".stamps"


def stacker_path(output, name: str, category: str) -> Path:
    """The test-time stacker of one category: runs/<name>/<category>/stacker.json."""
    return run_dir(output, name) / category / "stacker.json"


def errors_path(output, row_name: str) -> Path:
    """Per-image point errors behind a leaderboard row: runs/<name>/scores[_stack]_errors.npz."""
    base, stacked = (row_name[:-len("+stack")], True) if row_name.endswith("+stack") else (row_name, False)
    return run_dir(output, base) / f"scores{'_stack' if stacked else ''}_errors.npz"
