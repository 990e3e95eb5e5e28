"""Shared fixtures: a tiny FashionAI dataset written in the real layout.

`Dataset` (the `dataset_factory` fixture) writes images and annotation CSVs
into a directory laid out exactly as the competition ships them:

    <root>/train/Images/<cat>/<name>.jpg, <root>/train/Annotations/train.csv
    <root>/train_warm/Images/..., <root>/train_warm/Annotations/annotations.csv
    <root>/test/Images/..., <root>/test/test.csv

No TensorFlow here: everything is numpy/opencv and stays fast.
"""
from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import pytest

from pipeline.keypoints import (
    CATEGORIES,
    CATEGORY_KEYPOINTS,
    KEYPOINT_INDEX,
    NUM_KEYPOINTS,
)
from pipeline.tianchi import ABSENT_CELL, HEADER, TEST_HEADER, format_cell

REPO = Path(__file__).resolve().parents[1]

# every stage the tests run (in process or through make) fails on a setting its stamps do not
# cover (pipeline.config.recording): a missed dependency is a test failure, not a stale artifact
os.environ["PIPELINE_STRICT_SETTINGS"] = "1"


def build_model_under(policy: str, cfg, num_keypoints: int):
    """pipeline.models.build_model(cfg, num_keypoints) under Keras dtype policy `policy`,
    restoring the global policy afterwards (imports Keras only when called)."""
    import keras

    from pipeline.models import build_model

    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(policy)
    try:
        return build_model(cfg, num_keypoints)
    finally:
        keras.mixed_precision.set_global_policy(previous)


def pytest_collection_modifyitems(config, items):
    """Every test under tests/integration/ is `slow` (`make test-fast` runs tests/unit only, without them)."""
    for item in items:
        if "integration" in Path(str(item.fspath)).parts:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True)
def _keras_policy_restored():
    """Each test starts from the dtype policy the session had: in-process training sets a
    global mixed-precision policy that must not leak into the next test."""
    keras = sys.modules.get("keras")
    before = keras.mixed_precision.global_policy() if keras is not None else None
    yield
    keras = sys.modules.get("keras")
    if keras is not None:
        keras.mixed_precision.set_global_policy(before if before is not None else "float32")

#: CSV file of each training source, as released.
SOURCE_CSV = {"train": "Annotations/train.csv", "train_warm": "Annotations/annotations.csv"}


def random_keypoints(category: str, width: int, height: int, rng: np.random.Generator,
                     occluded: float = 0.0, margin: float = 0.1) -> np.ndarray:
    """(24, 3) int keypoints of `category` inside a width×height image; others -1_-1_-1.

    Every category point is annotated (v=1, or v=0 with probability `occluded`),
    placed at least `margin` of the side away from the border, `_left` points on
    the image's left; the normalizer pair never coincides.
    """
    kps = np.full((NUM_KEYPOINTS, 3), -1, np.int64)
    for name in CATEGORY_KEYPOINTS[category]:
        x = rng.uniform(margin * width, (1 - margin) * width)
        if "left" in name.split("_"):
            x = rng.uniform(margin * width, 0.45 * width)
        elif "right" in name.split("_"):
            x = rng.uniform(0.55 * width, (1 - margin) * width)
        y = rng.uniform(margin * height, (1 - margin) * height)
        v = 0 if rng.random() < occluded else 1
        kps[KEYPOINT_INDEX[name]] = (int(x), int(y), v)
    return kps


def cells(kps: np.ndarray) -> List[str]:
    """(24, 3) → the 24 `x_y_v` cells."""
    return [format_cell(*p) if p[2] >= 0 else ABSENT_CELL for p in kps]


def write_csv(path, rows: Sequence[Sequence[str]], header: Sequence[str] = HEADER) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)
    return path


def garment_image(width: int, height: int, seed: int = 0, gray: bool = False,
                  dots: Sequence[Tuple[int, int]] = (), dot_radius: int = 5) -> np.ndarray:
    """A dark, smooth BGR (or gray) image with optional bright square dots centred at (x, y)."""
    rng = np.random.default_rng(seed)
    base = rng.integers(10, 50, size=3)
    # pattern periods and phases vary with the seed: different seeds are different pictures, not
    # near-duplicates (seed 0 keeps periods 17, 23 and phase 0)
    fx, fy = 17.0 + 2.3 * (seed % 7), 23.0 + 3.1 * (seed % 5)
    px, py = 0.9 * seed, 1.7 * seed
    yy, xx = np.mgrid[0:height, 0:width]
    img = np.stack([(base[c] + 10 * np.sin(xx / fx + px + c) + 10 * np.cos(yy / fy + py)) for c in range(3)], -1)
    img = np.clip(img, 0, 255).astype(np.uint8)
    for x, y in dots:
        img[max(0, y - dot_radius):y + dot_radius + 1, max(0, x - dot_radius):x + dot_radius + 1] = 255
    if gray:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    return img


def write_image(path, width: int, height: int, seed: int = 0, gray: bool = False, fmt: str = ".jpg",
                dots: Sequence[Tuple[int, int]] = (), dot_radius: int = 5) -> Path:
    """Encode a garment_image as `fmt` bytes (whatever the file name says) and write it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    params = [cv2.IMWRITE_JPEG_QUALITY, 95] if fmt == ".jpg" else []
    ok, buf = cv2.imencode(fmt, garment_image(width, height, seed, gray, dots, dot_radius), params)
    assert ok
    path.write_bytes(buf.tobytes())
    return path


class Dataset:
    """Builder of a tiny dataset in the competition layout under `root`.

    `add` registers a good row (and writes its image); `add_raw` appends any
    CSV row verbatim (for malformed input). `write()` writes the CSVs; the
    1-based line number of every row (header = line 1) is kept in `lines`.
    """

    def __init__(self, root, seed: int = 0):
        self.root = Path(root)
        self.rng = np.random.default_rng(seed)
        self.rows: Dict[str, List[List[str]]] = {}
        self.lines: Dict[Tuple[str, str], int] = {}   # (source, tag) → line number
        self.kps: Dict[Tuple[str, str], np.ndarray] = {}
        self.sizes: Dict[Tuple[str, str], Tuple[int, int]] = {}
        self.test_rows: List[Tuple[str, str]] = []
        self._n = 0

    def csv_path(self, source: str) -> Path:
        return self.root / source / SOURCE_CSV[source]

    def add(self, source: str, category: str, size: Tuple[int, int] = (300, 200), *, name: Optional[str] = None,
            kps: Optional[np.ndarray] = None, image: str = "jpg", dots: Sequence[Tuple[int, int]] = (),
            dot_radius: int = 5, tag: Optional[str] = None) -> str:
        """Add one annotated image; image is 'jpg', 'gray', 'png_as_jpg', 'truncated' or 'missing'.

        Returns the image_id (relative to the source directory).
        """
        self._n += 1
        w, h = size
        name = name or f"{category}_{self._n:03d}"
        image_id = f"Images/{category}/{name}.jpg"
        if kps is None:
            kps = random_keypoints(category, w, h, self.rng)
        path = self.root / source / image_id
        if image in ("jpg", "gray", "truncated"):
            write_image(path, w, h, seed=self._n, gray=image == "gray", dots=dots, dot_radius=dot_radius)
            if image == "truncated":
                data = path.read_bytes()
                path.write_bytes(data[:len(data) // 2])
        elif image == "png_as_jpg":
            write_image(path, w, h, seed=self._n, fmt=".png", dots=dots, dot_radius=dot_radius)
        else:
            assert image == "missing", image
        self.add_raw(source, [image_id, category, *cells(kps)], tag=tag or image_id)
        self.kps[(source, tag or image_id)] = np.asarray(kps)
        self.sizes[(source, tag or image_id)] = size
        return image_id

    def add_raw(self, source: str, fields: Sequence[str], tag: Optional[str] = None) -> int:
        rows = self.rows.setdefault(source, [])
        rows.append(list(fields))
        line = len(rows) + 1
        self.lines[(source, tag or fields[0])] = line
        return line

    def add_test(self, category: str, size: Tuple[int, int] = (300, 200), image: str = "jpg") -> str:
        self._n += 1
        image_id = f"Images/{category}/test_{self._n:03d}.jpg"
        if image != "missing":
            write_image(self.root / "test" / image_id, *size, seed=self._n)
        self.test_rows.append((image_id, category))
        return image_id

    def write(self) -> "Dataset":
        for source, rows in self.rows.items():
            write_csv(self.csv_path(source), rows)
        if self.test_rows:
            write_csv(self.root / "test" / "test.csv", self.test_rows, TEST_HEADER)
        return self


@pytest.fixture
def dataset_factory(tmp_path):
    """Call with a sub-directory name to get a fresh `Dataset` builder under tmp_path."""
    def make(name: str = "input", seed: int = 0) -> Dataset:
        return Dataset(tmp_path / name, seed)
    return make


def good_dataset(root, per_cat: int = 3, warm_per_cat: int = 2, n_test_per_cat: int = 1, seed: int = 0) -> Dataset:
    """A dataset with only good rows: sizes alternate 300x200, 512x512, 200x300."""
    ds = Dataset(root, seed)
    sizes = [(300, 200), (512, 512), (200, 300)]
    for cat in CATEGORIES:
        for i in range(per_cat):
            ds.add("train", cat, sizes[i % len(sizes)])
        for i in range(warm_per_cat):
            ds.add("train_warm", cat, sizes[(i + 1) % len(sizes)])
        for i in range(n_test_per_cat):
            ds.add_test(cat, sizes[i % len(sizes)])
    return ds.write()


def run_module(module: str, *args: str, cwd=None) -> subprocess.CompletedProcess:
    """Run `python -m module args...` with the repository importable; never raises."""
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd or REPO, env=env,
                          capture_output=True, text=True, timeout=120)
