"""A run's bound preprocessing artifacts: the index, folds and image caches a stage reads.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import pandas as pd

from pipeline.frames import letterbox_table
from pipeline.keypoints import KEYPOINTS
from pipeline.store.layout import (
    cache_key,
    cache_path,
    dataset_dir,
    folds_key,
    folds_path,
    prep_ref_path,
)
from pipeline.tianchi import ABSENT_CELL, parse_cell


def npy_problem(path) -> Optional[str]:
    """Why a .npy file is not whole (size differs from its header's shape, or no header), or None."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _, dtype = read(f)
            offset = f.tell()
    except (OSError, ValueError) as err:
        return f"{path} is not a whole .npy file ({err})"
    want = offset + int(np.prod(shape)) * np.dtype(dtype).itemsize
    size = path.stat().st_size
    return None if size == want else f"{path} has {size} bytes, its header says {want} (truncated or damaged)"


def load_cache(ds_dir, split: str, size: int, margin: int) -> np.ndarray:
    """An image cache as a read-only memmap (N, S, S, 3) uint8 RGB; row i is index row `cache_row == i`.

    A truncated or damaged file is never used: a ValueError names it."""
    path = cache_path(ds_dir, split, size, margin)
    problem = npy_problem(path) if path.exists() else None
    if problem:
        raise ValueError(f"{problem}; `make preprocess` rebuilds it")
    return np.load(path, mmap_mode="r")


# --------------------------------------------------------------------------- index files


@dataclasses.dataclass
class Index:
    """A loaded index. keypoints: (N, 24, 3) original pixels (absent: -1);
    sizes: (N, 2) width, height; params: (N, 4) original → input transform of the
    cache it was loaded for (None when loaded without an input size); cache_row: (N,)."""

    frame: pd.DataFrame
    image_id: np.ndarray
    category: np.ndarray
    keypoints: Optional[np.ndarray]
    sizes: np.ndarray
    params: Optional[np.ndarray]
    cache_row: np.ndarray

    def subset(self, mask: np.ndarray) -> "Index":
        """The rows where `mask` (N,) bool is true, in order (cache_row still points into the full cache)."""
        mask = np.asarray(mask, bool)
        pick = lambda a: None if a is None else a[mask]  # noqa: E731
        return Index(self.frame[mask].reset_index(drop=True), self.image_id[mask], self.category[mask],
                     pick(self.keypoints), self.sizes[mask], pick(self.params), self.cache_row[mask])


def index_frame(ids, source_ids, sources, cats, files, sizes, rows, kps) -> pd.DataFrame:
    frame = pd.DataFrame({
        "image_id": ids, "source": sources, "source_image_id": source_ids, "image_category": cats,
        "file": files, "width": sizes[:, 0], "height": sizes[:, 1], "cache_row": rows,
    })
    if kps is not None:  # integer pixels: formatted directly (format_cell's rounding is for floats)
        rows = np.asarray(kps, np.int64).tolist()
        for k, name in enumerate(KEYPOINTS):
            frame[name] = [ABSENT_CELL if p[k][2] < 0 else f"{p[k][0]}_{p[k][1]}_{p[k][2]}" for p in rows]
    return frame


def load_index(ds_dir, split: str = "train", size: Optional[int] = None, margin: int = 0) -> Index:
    """Read index.csv (split='train') or test_index.csv (split='test') of a dataset directory.

    With `size`, `params` holds each image's letterbox transform into that cache.
    """
    path = Path(ds_dir) / ("index.csv" if split == "train" else "test_index.csv")
    frame = pd.read_csv(path, keep_default_na=False, dtype={"image_id": str, "file": str})
    kps = None
    if KEYPOINTS[0] in frame.columns:
        kps = np.array([[parse_cell(c) for c in row] for row in frame[list(KEYPOINTS)].to_numpy()],
                       dtype=np.int64).reshape(-1, len(KEYPOINTS), 3)
    sizes = frame[["width", "height"]].to_numpy(np.int64)
    params = None if size is None else letterbox_table(sizes, size, margin)
    return Index(frame, frame["image_id"].to_numpy(object), frame["image_category"].to_numpy(object), kps,
                 sizes, params, frame["cache_row"].to_numpy(np.int64))


def read_folds(path, image_id: Sequence[str]) -> np.ndarray:
    """Fold of each image in `image_id` (N,) from a folds file; KeyError names a missing image."""
    folds = pd.read_csv(path, dtype={"image_id": str}).set_index("image_id")["fold"]
    missing = pd.Index(image_id).difference(folds.index)
    if len(missing):
        raise KeyError(f"{path}: no fold for {missing[0]!r} (rerun make preprocess)")
    return folds.loc[list(image_id)].to_numpy()


# --------------------------------------------------------------------------- what a run consumes


class PrepMismatch(ValueError):
    """A stage was handed prep artifacts built for other settings."""


@dataclasses.dataclass(frozen=True)
class RunData:
    """The prep artifacts one run consumes (runs/<run>/prep.json): one dataset, its folds file,
    and the image cache of the run's (input size, margin)."""

    output: Path
    dataset: str
    input: str
    size: int
    margin: int
    k: int
    seed: int
    models: int = 0  # folds 0..models-1 get a model and an OOF prediction (0, or k: every fold)

    def __post_init__(self):
        if self.models >= self.k:  # every fold: one spelling, so bindings and records compare equal
            object.__setattr__(self, "models", 0)

    @property
    def fold_ids(self) -> Tuple[int, ...]:
        """Folds that have a model, hence OOF predictions: 0..models-1, or all k."""
        return tuple(range(self.models or self.k))

    @property
    def ds_dir(self) -> Path:
        return dataset_dir(self.output, self.dataset)

    @property
    def folds_file(self) -> Path:
        return folds_path(self.ds_dir, self.k, self.seed)

    @property
    def test_csv(self) -> Path:
        return Path(self.input) / "test" / "test.csv"

    @property
    def has_test(self) -> bool:
        return (self.ds_dir / "test_index.csv").exists()

    def identity(self, with_cache: bool = True) -> Dict[str, str]:
        """Keys of the artifacts consumed: what downstream records hold as their upstream identity."""
        ids = {"dataset": self.dataset, "folds": folds_key(self.k, self.seed)}
        if self.models:
            ids["fold_models"] = self.models
        if with_cache:
            ids["cache"] = cache_key(self.size, self.margin)
        return ids

    def train_index(self) -> Index:
        return load_index(self.ds_dir, "train", self.size, self.margin)

    def test_index(self) -> Optional[Index]:
        return load_index(self.ds_dir, "test", self.size, self.margin) if self.has_test else None

    def folds(self, image_id: Sequence[str]) -> np.ndarray:
        return read_folds(self.folds_file, image_id)

    def oof_index(self) -> Index:
        """The training images that have an OOF prediction (those of `fold_ids`): what CV scores.
        Every training image unless `data.fold_models` trains fewer models than folds."""
        index = self.train_index()
        if not self.models:
            return index
        return index.subset(np.isin(self.folds(index.image_id), self.fold_ids))

    def cache(self, split: str) -> np.ndarray:
        return load_cache(self.ds_dir, split, self.size, self.margin)

    def to_dict(self) -> Dict:
        out = {"dataset": self.dataset, "input": self.input, "size": self.size, "margin": self.margin,
               "k": self.k, "seed": self.seed}
        if self.models:
            out["models"] = self.models
        return out


def bind_run(output, run: str, data: RunData) -> bool:
    """Record in runs/<run>/prep.json that `run` consumes `data` (rewritten only on change)."""
    from pipeline.store.records import write_if_changed

    return write_if_changed(prep_ref_path(output, run), json.dumps(data.to_dict(), indent=2, sort_keys=True))


def run_data(output, run: str, cfg=None) -> RunData:
    """The prep artifacts bound to `run` by `make preprocess`; with `cfg`, refuse a mismatch.

    Raises FileNotFoundError when the run was never preprocessed and PrepMismatch
    (naming both settings) when the binding was made for another input size,
    margin, k or fold seed than `cfg` asks for.
    """
    path = prep_ref_path(output, run)
    if not path.exists():
        raise FileNotFoundError(f"{path} missing: run `make preprocess` for run {run!r} first")
    ref = json.loads(path.read_text())
    data = RunData(Path(output), ref["dataset"], ref["input"], ref["size"], ref["margin"], ref["k"], ref["seed"],
                   ref.get("models", 0))
    if cfg is not None:
        want = {"size": cfg.cache_size, "margin": cfg.model.margin, "k": cfg.data.folds,
                "seed": cfg.data.fold_seed, "fold_ids": cfg.fold_ids}
        have = {key: getattr(data, key) for key in want}
        if want != have:
            def said(v):
                models = "" if len(v["fold_ids"]) == v["k"] else f" ({len(v['fold_ids'])} of them with models)"
                return (f"input size {v['size']}, margin {v['margin']}, {v['k']} folds{models}, "
                        f"fold seed {v['seed']}")
            raise PrepMismatch(f"run {run!r}: {path} was built for {said(have)}, but the config asks for "
                               f"{said(want)}; rerun `make preprocess` with this config")
    for needed in (data.ds_dir / "index.csv", data.folds_file):
        if not needed.exists():
            raise FileNotFoundError(f"{needed} missing (bound by {path}); rerun `make preprocess`")
    return data


#: columns of a dataset's duplicates.csv (written by prep.duplicates)
DUPLICATE_COLUMNS = ["group", "image_id", "split", "image_category", "match", "distance", "copy_of"]


def read_duplicates(ds_dir) -> pd.DataFrame:
    """duplicates.csv of a dataset (empty frame when none were found)."""
    path = Path(ds_dir) / "duplicates.csv"
    if not path.exists():
        return pd.DataFrame(columns=DUPLICATE_COLUMNS)
    return pd.read_csv(path, dtype={"image_id": str, "split": str}, keep_default_na=False)
