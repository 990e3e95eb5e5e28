"""Run directories and prediction files: the interfaces between stages.

Layout under OUTPUT/runs/<run>/<category>/:

* fold<k>/oof.npz, fold<k>/test.npz — per fold model: `image_id` (M,),
  `xy` (M, K, 2) float original pixels, `score` (M, K), and optionally
  `xy_flip` (M, K, 2) the mirror pass alone (for the stacker);
  K = number of keypoints of the category, in CATEGORY_KEYPOINTS order;
* oof.csv, test.csv — the ensemble's float predictions, columns
  image_id, image_category, then `<kp>_x`, `<kp>_y`, `<kp>_score` per keypoint.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Sequence, Tuple

import numpy as np
import pandas as pd

from pipeline.fsutil import atomic_path
from pipeline.keypoints import CATEGORY_KEYPOINTS, KEYPOINT_INDEX, NUM_KEYPOINTS
from pipeline.store.layout import run_dir


def save_npz(path, **arrays) -> None:
    """Arrays to an .npz (readable by np.load), written to a temporary file and renamed into place.

    Byte-deterministic: entries in the given order with a fixed zip time stamp (np.savez
    stamps the current time), so the same arrays always give the same file.
    """
    import io
    import zipfile

    with atomic_path(path) as tmp:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
            for name, value in arrays.items():
                buf = io.BytesIO()
                np.lib.format.write_array(buf, np.asanyarray(value), allow_pickle=True)
                zf.writestr(zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0)), buf.getvalue())


def load_npz(path) -> Dict[str, np.ndarray]:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"missing prediction file {path}")
    with np.load(path, allow_pickle=True) as data:
        return {k: data[k] for k in data.files}


def write_category_csv(path, image_id, category: str, xy: np.ndarray, score: np.ndarray) -> None:
    """Float predictions of one category: xy (M, K, 2) original pixels, score (M, K)."""
    names = CATEGORY_KEYPOINTS[category]
    frame = pd.DataFrame({"image_id": list(image_id), "image_category": category})
    cols = {}
    for k, name in enumerate(names):
        cols[f"{name}_x"] = xy[:, k, 0]
        cols[f"{name}_y"] = xy[:, k, 1]
        cols[f"{name}_score"] = score[:, k]
    frame = pd.concat([frame, pd.DataFrame(cols)], axis=1)
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False, float_format="%.3f")


def read_ensemble(output, name: str, image_id: Sequence[str], categories: Sequence[str],
                  filename: str) -> np.ndarray:
    """Per-category ensemble CSVs (runs/<name>/<cat>/<filename>) → (N, 24, 2) aligned with image_id.

    Points of other categories, and images without a row, are NaN.
    """
    xy = np.full((len(image_id), NUM_KEYPOINTS, 2), np.nan)
    pos = {iid: i for i, iid in enumerate(image_id)}
    for cat in sorted(set(categories)):
        ids, cat_xy, _ = read_category_csv(run_dir(output, name) / cat / filename, cat)
        rows = np.array([pos[i] for i in ids], np.int64)
        cols = np.array([KEYPOINT_INDEX[n] for n in CATEGORY_KEYPOINTS[cat]])
        xy[rows[:, None], cols[None, :]] = cat_xy
    return xy


def read_category_csv(path, category: str) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inverse of write_category_csv: (image_id (M,), xy (M, K, 2), score (M, K))."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"missing prediction file {path} (run `make ensemble` first)")
    frame = pd.read_csv(path, keep_default_na=False)
    names = CATEGORY_KEYPOINTS[category]
    xy = np.stack([frame[[f"{n}_x", f"{n}_y"]].to_numpy(np.float64) for n in names], 1)
    score = frame[[f"{n}_score" for n in names]].to_numpy(np.float64)
    return frame["image_id"].to_numpy(object), xy, score
