"""Tests of the synthetic data set (pipeline/synth.py): layout, contracts, realism."""
from __future__ import annotations

import csv
import json
import re
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline import synth
from pipeline.keypoints import (CATEGORIES, CATEGORY_KEYPOINTS, KEYPOINT_INDEX, KEYPOINTS,
                                NORMALIZER)
from pipeline.tianchi import HEADER, TEST_HEADER, parse_cell, read_annotations, read_test_list

SMALL = dict(train_per_cat=12, test_per_cat=6, warm_per_cat=3, seed=0)
ANNOTATION_CSVS = ("train/Annotations/train.csv", "train_warm/Annotations/annotations.csv",
                   "test/answers.csv")


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth_small")
    summary = synth.generate(out, jobs=1, progress=False, **SMALL)
    return out, summary


@pytest.fixture(scope="module")
def moderate(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth_moderate")
    synth.generate(out, train_per_cat=40, test_per_cat=20, seed=3, jobs=2, progress=False)
    return out


def _raw_rows(path):
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], rows[1:]


def _all_files(root: Path):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*")
                  if p.is_file() and p.name != synth.MARKER)


def test_layout_and_headers(small):
    out, summary = small
    assert summary["skipped"] is False
    assert summary["images"] == {"train": 60, "test": 30, "train_warm": 15}
    marker = json.loads((out / synth.MARKER).read_text())
    assert marker["seed"] == 0 and marker["train_per_cat"] == 12 and marker["warm_per_cat"] == 3
    expected = {"train/Annotations/train.csv": 12, "train_warm/Annotations/annotations.csv": 3,
                "test/answers.csv": 6}
    for rel, per_cat in expected.items():
        header, rows = _raw_rows(out / rel)
        assert tuple(header) == HEADER
        assert len(rows) == per_cat * len(CATEGORIES)
        split_dir = (out / rel).parent.parent if "Annotations" in rel else (out / rel).parent
        for row in rows:
            cat = row[1]
            assert re.fullmatch(rf"Images/{cat}/[0-9a-f]{{32}}\.jpg", row[0]), row[0]
            assert (split_dir / row[0]).is_file()
        assert {r[1] for r in rows} == set(CATEGORIES)
    header, rows = _raw_rows(out / "test/test.csv")
    assert tuple(header) == TEST_HEADER and len(rows) == 30
    # every image on disk is listed exactly once
    listed = set()
    for rel in ANNOTATION_CSVS:
        split = rel.split("/")[0]
        listed |= {f"{split}/{r[0]}" for r in _raw_rows(out / rel)[1]}
    assert set(_all_files(out)) - {*ANNOTATION_CSVS, "test/test.csv"} == listed


def test_test_list_and_answers_in_same_order(small):
    out, _ = small
    ids, cats = read_test_list(out / "test/test.csv")
    answers, problems = read_annotations(out / "test/answers.csv")
    assert not problems
    assert ids == list(answers.image_id) and cats == list(answers.image_category)


def test_only_category_keypoints_annotated(small):
    out, _ = small
    for rel in ANNOTATION_CSVS:
        _, rows = _raw_rows(out / rel)
        for row in rows:
            cat, cells = row[1], dict(zip(KEYPOINTS, row[2:]))
            wanted = set(CATEGORY_KEYPOINTS[cat])
            for name, cell in cells.items():
                x, y, v = parse_cell(cell)           # every cell is well formed
                if name not in wanted:
                    assert cell == "-1_-1_-1", (row[0], name)
            assert sum(parse_cell(cells[n])[2] >= 0 for n in wanted) >= len(wanted) // 2


def test_annotated_coordinates_inside_their_image(small):
    out, _ = small
    for rel in ANNOTATION_CSVS:
        table, problems = read_annotations(out / rel)
        assert not problems
        split_dir = out / rel.split("/")[0]
        for image_id, kps in zip(table.image_id, table.keypoints):
            img = cv2.imread(str(split_dir / image_id))
            assert img is not None and max(img.shape[:2]) <= 512
            h, w = img.shape[:2]
            assert (w, h) == synth.jpeg_size(split_dir / image_id)
            pts = kps[kps[:, 2] >= 0]
            assert np.all((pts[:, 0] >= 0) & (pts[:, 0] < w) & (pts[:, 1] >= 0) & (pts[:, 1] < h))
            assert np.all(kps[kps[:, 2] < 0][:, :2] == -1)


def test_deterministic_and_independent_of_jobs(small, tmp_path):
    out, _ = small
    again = tmp_path / "again"
    synth.generate(again, jobs=2, progress=False, **SMALL)
    files = _all_files(out)
    assert files == _all_files(again)
    for rel in files:
        assert (out / rel).read_bytes() == (again / rel).read_bytes(), rel

    other = tmp_path / "other"
    synth.generate(other, train_per_cat=2, test_per_cat=1, seed=1, jobs=1, progress=False)
    train_0 = (out / "train/Annotations/train.csv").read_text()
    train_1 = (other / "train/Annotations/train.csv").read_text()
    assert train_1.splitlines()[1] not in train_0
    jpgs = {f for f in files if f.endswith(".jpg")}
    assert jpgs and not set(_all_files(other)) & jpgs


def test_idempotent_and_regenerates_on_new_parameters(tmp_path):
    out = tmp_path / "data"
    synth.generate(out, train_per_cat=2, test_per_cat=1, seed=0, warm_per_cat=1, jobs=1,
                   progress=False)
    before = {p: (out / p).stat().st_mtime_ns for p in _all_files(out)}
    start = time.perf_counter()
    summary = synth.generate(out, train_per_cat=2, test_per_cat=1, seed=0, warm_per_cat=1,
                             jobs=1, progress=False)
    assert summary["skipped"] is True and time.perf_counter() - start < 1.0
    assert {p: (out / p).stat().st_mtime_ns for p in _all_files(out)} == before

    summary = synth.generate(out, train_per_cat=1, test_per_cat=1, seed=5, jobs=1, progress=False)
    assert summary["skipped"] is False
    assert not (out / "train_warm").exists()            # old synthetic split removed
    files = _all_files(out)
    assert len([f for f in files if f.endswith(".jpg")]) == 2 * len(CATEGORIES)
    assert not set(files) & {f for f in before if f.endswith(".jpg")}
    assert json.loads((out / synth.MARKER).read_text())["seed"] == 5


@pytest.mark.parametrize("real_file", ["train/Annotations/train.csv", "test/test.csv",
                                       "train/Images/blouse/x.jpg"])
def test_refuses_to_overwrite_real_data(tmp_path, real_file, capsys):
    real = tmp_path / "input"
    (real / real_file).parent.mkdir(parents=True)
    (real / real_file).write_text("image_id,image_category\n")
    with pytest.raises(RuntimeError, match="refusing"):
        synth.generate(real, train_per_cat=1, test_per_cat=1, jobs=1, progress=False)
    assert synth.main(["--out", str(real), "--train-per-cat", "1", "--test-per-cat", "1",
                       "--no-progress"]) == 2
    assert "refusing" in capsys.readouterr().err
    assert sorted(p.relative_to(real).as_posix() for p in real.rglob("*") if p.is_file()) \
        == [real_file]


def _mean_shape_ne(train, train_sizes, test, test_sizes):
    """Independent NE of the per-category mean relative shape (DESIGN.md §1)."""
    total, count = 0.0, 0
    for cat in CATEGORIES:
        tr = train.keypoints[train.image_category == cat].astype(float)
        ok = tr[..., 2] >= 0
        rel = tr[..., :2] / train_sizes[train.image_category == cat][:, None, :]
        mean = np.where(ok[..., None], rel, 0).sum(0) / np.maximum(ok.sum(0), 1)[:, None]
        a, b = (KEYPOINT_INDEX[n] for n in NORMALIZER[cat])
        for kps, size in zip(test.keypoints[test.image_category == cat],
                             test_sizes[test.image_category == cat]):
            if kps[a, 2] < 0 or kps[b, 2] < 0:
                continue
            s = np.hypot(*(kps[a, :2] - kps[b, :2]).astype(float))
            for k in np.flatnonzero(kps[:, 2] == 1):
                total += np.hypot(*(mean[k] * size - kps[k, :2])) / s
                count += 1
    return total / count


def test_realism_figures(moderate):
    stats = synth.realism_stats(moderate)
    assert stats["n_images"] == 300
    assert stats["occluded_frac"] >= 0.08
    assert stats["absent_frac"] >= 0.02
    assert stats["normalizer_present_frac"] > 0.9
    assert 0.10 <= stats["non512_frac"] <= 0.4
    assert stats["mean_shape_ne"] >= 0.15
    assert stats["test_order_matches"]

    def load(split, rel):
        table, _ = read_annotations(moderate / rel)
        images = [cv2.imread(str(moderate / split / i)) for i in table.image_id]
        sizes = np.array([img.shape[1::-1] for img in images])
        return table, sizes.astype(float)

    train, train_sizes = load("train", "train/Annotations/train.csv")
    test, test_sizes = load("test", "test/answers.csv")
    assert stats["mean_shape_ne"] == pytest.approx(
        _mean_shape_ne(train, train_sizes, test, test_sizes), rel=1e-6)


@pytest.mark.parametrize("category,pairs", [
    ("blouse", [("neckline_left", "neckline_right"), ("shoulder_left", "shoulder_right"),
                ("armpit_left", "armpit_right"), ("cuff_left_out", "cuff_right_out"),
                ("top_hem_left", "top_hem_right")]),
    ("skirt", [("waistband_left", "waistband_right"), ("hemline_left", "hemline_right")]),
    ("trousers", [("waistband_left", "waistband_right"), ("bottom_left_out", "bottom_right_out"),
                  ("bottom_left_in", "bottom_right_in"), ("bottom_left_out", "bottom_left_in"),
                  ("bottom_right_in", "bottom_right_out")]),
])
def test_left_points_lie_left(moderate, category, pairs):
    table, _ = read_annotations(moderate / "train/Annotations/train.csv")
    kps = table.keypoints[table.image_category == category]
    for a, b in pairs:
        pa, pb = kps[:, KEYPOINT_INDEX[a]], kps[:, KEYPOINT_INDEX[b]]
        both = (pa[:, 2] >= 0) & (pb[:, 2] >= 0)
        assert both.sum() >= 20
        assert np.mean(pa[both, 0] < pb[both, 0]) >= 0.9, (a, b)
    if category == "blouse":      # hems below armpits below shoulders, in most images
        names = ("shoulder_left", "armpit_left", "top_hem_left")
        y = {n: kps[:, KEYPOINT_INDEX[n], 1] for n in names}
        ok = np.all([kps[:, KEYPOINT_INDEX[n], 2] >= 0 for n in y], axis=0)
        assert np.mean((y["shoulder_left"] < y["armpit_left"])[ok]) >= 0.8
        assert np.mean((y["armpit_left"] < y["top_hem_left"])[ok]) >= 0.9


@pytest.mark.parametrize("category", CATEGORIES)
def test_keypoints_sit_on_the_drawn_garment(category):
    """Silhouette keypoints lie on the garment outline; center_front inside the garment.

    "On the outline": garment and background pixels both within 4 px (9x9
    window), unless the window is cut by the image border.
    """
    for i in range(8):
        sample = synth.render_sample(synth.image_rng(7, "train", category, i), category)
        mask = sample.garment_mask
        h, w = mask.shape
        assert sample.image.shape == (h, w, 3)
        for name in CATEGORY_KEYPOINTS[category]:
            x, y, v = sample.keypoints[KEYPOINT_INDEX[name]]
            if v < 0:
                continue
            win = mask[max(y - 4, 0):y + 5, max(x - 4, 0):x + 5]
            if name == "center_front":
                assert win.all(), (category, i, name)
            else:
                assert win.any() and (not win.all() or x <= 3 or y <= 3 or x >= w - 4
                                      or y >= h - 4), (category, i, name)
