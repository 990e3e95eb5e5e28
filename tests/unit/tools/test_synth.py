"""Tests of the synthetic data set (pipeline/tools/synth/): layout, contracts, realism, preview."""
from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import REPO  # noqa: E402

from pipeline.keypoints import (
    CATEGORIES,
    CATEGORY_KEYPOINTS,
    KEYPOINT_INDEX,
    KEYPOINTS,
    NORMALIZER,
    category_indices,
)
from pipeline.tianchi import (
    HEADER,
    TEST_HEADER,
    parse_cell,
    read_annotations,
    read_test_list,
)
from pipeline.tools import synth
from pipeline.tools.synth import figure, geometry, render
from pipeline.tools.synth.preview import contact_sheet, keypoint_colours

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
                  if p.is_file() and p.name not in (synth.MARKER, synth.REALISM))


def _load(root: Path, split: str, rel: str):
    """Annotations and (N, 2) sizes read by decoding every image (not the header reader)."""
    table, problems = read_annotations(root / rel)
    assert not problems
    sizes = np.array([cv2.imread(str(root / split / i)).shape[1::-1] for i in table.image_id])
    return table, sizes.astype(float)


# --------------------------------------------------------------------------- layout, contracts

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
    listed = set()
    for rel in ANNOTATION_CSVS:
        split = rel.split("/")[0]
        listed |= {f"{split}/{r[0]}" for r in _raw_rows(out / rel)[1]}
    assert set(_all_files(out)) - {*ANNOTATION_CSVS, "test/test.csv"} == listed
    assert (out / synth.REALISM).is_file()


def test_test_list_and_answers_in_same_order(small):
    out, _ = small
    ids, cats = read_test_list(out / "test/test.csv")
    answers, problems = read_annotations(out / "test/answers.csv")
    assert not problems
    assert ids == list(answers.image_id) and cats == list(answers.image_category)


def test_only_category_keypoints_annotated(small):
    """Other categories' columns (a second garment's points among them) are always -1_-1_-1."""
    out, _ = small
    for rel in ANNOTATION_CSVS:
        _, rows = _raw_rows(out / rel)
        for row in rows:
            cat, cells = row[1], dict(zip(KEYPOINTS, row[2:]))
            wanted = set(CATEGORY_KEYPOINTS[cat])
            for name, cell in cells.items():
                parse_cell(cell)                      # every cell is well formed
                if name not in wanted:
                    assert cell == "-1_-1_-1", (row[0], name)
            assert sum(parse_cell(cells[n])[2] >= 0 for n in wanted) >= 2


def test_annotated_coordinates_inside_their_image(small):
    out, _ = small
    for rel in ANNOTATION_CSVS:
        split = rel.split("/")[0]
        table, sizes = _load(out, split, rel)
        for image_id, kps, (w, h) in zip(table.image_id, table.keypoints, sizes):
            assert (w, h) == synth.image_size(out / split / image_id)
            pts = kps[kps[:, 2] >= 0]
            assert np.all((pts[:, 0] >= 0) & (pts[:, 0] < w) & (pts[:, 1] >= 0) & (pts[:, 1] < h))
            assert np.all(kps[kps[:, 2] < 0][:, :2] == -1)


def test_deterministic_and_independent_of_jobs(small, tmp_path):
    out, _ = small
    again = tmp_path / "again"
    synth.generate(again, jobs=2, progress=False, **SMALL)
    files = _all_files(out)
    assert files == _all_files(again)
    for rel in files + [synth.REALISM]:
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
    before = {p: (out / p).stat().st_mtime_ns for p in _all_files(out) + [synth.REALISM]}
    start = time.perf_counter()
    summary = synth.generate(out, train_per_cat=2, test_per_cat=1, seed=0, warm_per_cat=1,
                             jobs=1, progress=False)
    assert summary["skipped"] is True and time.perf_counter() - start < 1.0
    assert {p: (out / p).stat().st_mtime_ns for p in before} == before

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
    err = capsys.readouterr().err
    assert "refusing" in err and len(err.strip().splitlines()) == 1
    assert sorted(p.relative_to(real).as_posix() for p in real.rglob("*") if p.is_file()) \
        == [real_file]


def test_cli_module_writes_a_set(tmp_path):
    out = tmp_path / "cli"
    proc = subprocess.run([sys.executable, "-m", "pipeline.synth", "--out", str(out),
                           "--train-per-cat", "1", "--test-per-cat", "1", "--seed", "2",
                           "--jobs", "1", "--no-progress"], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "RuntimeWarning" not in proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["images"] == {"train": 5, "test": 5}
    assert len(read_annotations(out / "train/Annotations/train.csv")[0].image_id) == 5
    bad = subprocess.run([sys.executable, "-m", "pipeline.synth", "--out", str(out),
                          "--train-per-cat", "-1", "--test-per-cat", "1"], cwd=REPO,
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and bad.stderr.startswith("error:")


# --------------------------------------------------------------------------- realism

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


def test_realism_figures_counted_from_the_files(moderate):
    """Occluded/absent fractions, sizes, framing and mean-shape NE recounted from CSVs and pixels."""
    realism = json.loads((moderate / synth.REALISM).read_text())
    train, train_sizes = _load(moderate, "train", "train/Annotations/train.csv")
    test, test_sizes = _load(moderate, "test", "test/answers.csv")
    v = np.concatenate([k[category_indices(c), 2] for t in (train, test)
                        for c, k in zip(t.image_category, t.keypoints)])
    sizes = np.concatenate([train_sizes, test_sizes])
    assert len(sizes) == realism["n_images"] == 300
    occluded, absent = np.mean(v == 0), np.mean(v == -1)
    non512 = np.mean(np.any(sizes != 512, axis=1))
    assert occluded >= 0.08 and absent >= 0.02
    assert 0.10 <= non512 <= 0.4
    assert realism["occluded_frac"] == pytest.approx(occluded)
    assert realism["absent_frac"] == pytest.approx(absent)
    assert realism["non512_frac"] == pytest.approx(non512)
    assert sum(realism["sizes"].values()) == 300
    assert realism["sizes"]["512x512"] == int(np.all(sizes == 512, axis=1).sum())

    ne = _mean_shape_ne(train, train_sizes, test, test_sizes)
    assert ne >= 0.15
    assert realism["mean_shape_ne"] == pytest.approx(ne, rel=1e-6)
    assert realism["test_order_matches"]

    # framing: annotated keypoint box over image area, spread as in real photos (p10/p50/p90
    # about 0.10 / 0.29 / 0.58, pipeline/tools/synth/real_model.json)
    boxes = []
    for t, s in ((train, train_sizes), (test, test_sizes)):
        for k, (w, h) in zip(t.keypoints, s):
            pts = k[k[:, 2] >= 0, :2].astype(float)
            boxes.append(np.prod(pts.max(0) - pts.min(0)) / (w * h))
    boxes = np.array(boxes)
    q10, q50, q90 = np.quantile(boxes, [0.1, 0.5, 0.9])
    assert 0.05 <= q10 <= 0.16 and 0.2 <= q50 <= 0.4 and 0.45 <= q90 <= 0.75
    assert realism["framing"]["q50"] == pytest.approx(q50)
    assert realism["per_category"]["all"]["box_p10"] == pytest.approx(q10)
    assert realism["per_category"]["all"]["box_p90"] == pytest.approx(q90)
    assert realism["per_category"]["all"]["occluded_frac"] == pytest.approx(occluded)
    assert realism["per_category"]["all"]["mean_shape_ne"] == pytest.approx(ne, rel=1e-6)


def test_shot_fractions_match_the_drawn_images(small):
    """figure / second-garment fractions in realism.json are those of the images drawn."""
    out, _ = small
    realism = json.loads((out / synth.REALISM).read_text())
    metas = []
    for split, per_cat in (("train", 12), ("test", 6), ("train_warm", 3)):
        for cat in CATEGORIES:
            for i in range(per_cat):
                metas.append(synth.render_sample(synth.image_rng(0, split, cat, i), cat).meta)
    figure_frac = np.mean([m["figure"] for m in metas])
    second_frac = np.mean([m["second"] is not None for m in metas])
    assert realism["figure_frac"] == pytest.approx(figure_frac)
    assert realism["second_garment_frac"] == pytest.approx(second_frac)
    assert 0.55 <= figure_frac <= 0.85 and second_frac >= 0.4
    assert all(60 <= m["quality"] <= 95 for m in metas)
    assert len({m["quality"] for m in metas}) > 10


@pytest.mark.parametrize("category,pairs", [
    ("blouse", [("neckline_left", "neckline_right"), ("shoulder_left", "shoulder_right"),
                ("armpit_left", "armpit_right"), ("top_hem_left", "top_hem_right")]),
    ("dress", [("shoulder_left", "shoulder_right"), ("waistline_left", "waistline_right"),
               ("hemline_left", "hemline_right")]),
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
        # the inner trouser bottoms cross in real rows too (left of the right one in 87 %)
        floor = 0.75 if (a, b) == ("bottom_left_in", "bottom_right_in") else 0.9
        assert np.mean(pa[both, 0] < pb[both, 0]) >= floor, (a, b)
    if category == "blouse":      # hems below armpits below shoulders, in most images
        names = ("shoulder_left", "armpit_left", "top_hem_left")
        y = {n: kps[:, KEYPOINT_INDEX[n], 1] for n in names}
        ok = np.all([kps[:, KEYPOINT_INDEX[n], 2] >= 0 for n in y], axis=0)
        assert np.mean((y["shoulder_left"] < y["armpit_left"])[ok]) >= 0.8
        assert np.mean((y["armpit_left"] < y["top_hem_left"])[ok]) >= 0.9


#: Points on the garment's outer outline (armpits, waistlines and cuffs may lie inside the
#: silhouette, where a sleeve hangs against the body or crosses it).
OUTLINE = ("neckline", "center_front", "shoulder", "top_hem", "hemline", "waistband", "bottom",
           "crotch")


@pytest.mark.parametrize("category", CATEGORIES)
def test_keypoints_sit_on_the_labelled_garment(category):
    """Annotated points touch the labelled garment's own pixels (within 2 px; all but a rare
    corner the warp onto a real layout squeezes into a neck opening), and visible outline
    points lie on its edge (garment and other pixels within 3 px)."""
    on_edge = total = touching = annotated = 0
    for i in range(10):
        sample = synth.render_sample(synth.image_rng(7, "train", category, i), category)
        mask = sample.garment_mask
        h, w = mask.shape
        assert sample.image.shape == (h, w, 3)
        for name in CATEGORY_KEYPOINTS[category]:
            x, y, v = sample.keypoints[KEYPOINT_INDEX[name]]
            if v < 0:
                continue
            near = mask[max(y - 2, 0):y + 3, max(x - 2, 0):x + 3]
            touching += bool(near.any())
            annotated += 1
            if v == 1 and name.startswith(OUTLINE):
                below = 10 if name == "crotch" else 4       # the legs part below the crotch
                win = mask[max(y - 3, 0):y + below, max(x - 3, 0):x + 4]
                border = min(x, y, w - 1 - x, h - 1 - y) <= 3
                on_edge += bool(border or not win.all())
                total += 1
    assert total >= 20 and on_edge >= 0.95 * total
    assert touching >= 0.97 * annotated, (touching, annotated)


def test_canvas_tracks_what_covers_each_point():
    """Painting order decides visibility: later paint covers a point, its own part uncovers it,
    paint before the point's part is drawn does not count."""
    canvas = render.Canvas(np.zeros((50, 50, 3), np.float32), np.eye(3))
    # point 0 belongs to part 0 (a body), point 1 to parts 0 and 1 (a shoulder), point 2 to part 1
    canvas.track(np.array([[10, 10], [30, 30], [40, 10]]),
                 [frozenset({0}), frozenset({0, 1}), frozenset({1})])
    square = lambda x0, y0, x1, y1: np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], float)
    canvas.paint(canvas.mask([square(35, 5, 45, 15)]), (1, 1, 1))            # under: not drawn yet
    canvas.paint(canvas.mask([square(0, 0, 35, 35)]), (2, 2, 2), part=0)     # the body
    canvas.paint(canvas.mask([square(5, 5, 15, 15)]), (3, 3, 3))             # a hand over point 0
    canvas.paint(canvas.mask([square(25, 5, 45, 35)]), (4, 4, 4), part=1)    # a sleeve over 1 and 2
    assert canvas.point_cover[0] > 0.5                    # covered by the hand
    assert canvas.point_cover[1] < 0.5                    # its own sleeve is drawn over it
    assert canvas.point_cover[2] < 0.5                    # the earlier paint came before its part
    canvas.paint(canvas.mask([square(20, 20, 40, 40)]), (5, 5, 5), part=0)   # body over the sleeve
    assert canvas.point_cover[1] < 0.5 and canvas.point_cover[2] < 0.5
    canvas.paint(canvas.mask([square(36, 6, 44, 14)]), (6, 6, 6), part=0)    # body part over the cuff
    assert canvas.point_cover[2] > 0.5
    np.testing.assert_allclose(canvas.image[10, 40], 6)


def test_occluded_points_exist_in_every_category():
    counts = {c: 0 for c in CATEGORIES}
    for cat in CATEGORIES:
        for i in range(30):
            s = synth.render_sample(synth.image_rng(11, "train", cat, i), cat)
            counts[cat] += int((s.keypoints[category_indices(cat), 2] == 0).sum())
    assert all(n > 0 for n in counts.values()), counts


# --------------------------------------------------------------------------- pieces

def test_offset_path_and_band_widths():
    path = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    left, right = figure.offset_path(path, np.array([0.1, 0.1, 0.2]))
    np.testing.assert_allclose(np.linalg.norm(left[0] - right[0]), 0.2)
    np.testing.assert_allclose(left[2], [1.0, 1.2])           # normal (-dy, dx) of (1, 0) is (0, 1)
    # the mitred corner stays 0.1 from both legs
    np.testing.assert_allclose(np.abs(left[1] - path[1]), [0.1, 0.1])
    assert figure.band(path, 0.1).shape == (6, 2)


def test_trim_path_cuts_at_arc_length():
    path = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    pts, ws = geometry.trim_path(path, np.array([1.0, 2.0, 3.0]), 1.5)
    np.testing.assert_allclose(pts, [[0, 0], [0, 1], [0.5, 1]])
    np.testing.assert_allclose(ws, [1, 2, 2.5])
    pts, _ = geometry.trim_path(path, np.zeros(3), 10.0)
    np.testing.assert_allclose(pts[-1], [1, 1])


def _segment_distance(p, a, b):
    t = np.clip(np.dot(p - a, b - a) / np.dot(b - a, b - a), 0.0, 1.0)
    return float(np.linalg.norm(p - (a + t * (b - a))))


@pytest.mark.parametrize("flat", [False, True])
def test_garments_follow_the_skeleton(flat):
    """Cuffs lie on their side's arm; trouser bottoms on their leg; `in` is nearer the body."""
    rng = np.random.default_rng(4)
    for _ in range(20):
        sk = figure.sample_skeleton(rng, flat=flat)
        top = geometry.make_garment(rng, "blouse", sk)
        parts = top.keypoint_parts()
        names = CATEGORY_KEYPOINTS["blouse"]
        assert parts[names.index("cuff_left_in")] == {1}
        assert parts[names.index("armpit_right")] == {0, 2}
        assert parts[names.index("top_hem_left")] == {0}
        trousers = geometry.make_garment(rng, "trousers", sk)
        for side, name in ((-1, "left"), (1, "right")):
            arm, leg = sk.arm(side), sk.leg(side)
            cuff = (top.keypoints[f"cuff_{name}_in"] + top.keypoints[f"cuff_{name}_out"]) / 2
            dist = min(_segment_distance(cuff, arm[i], arm[i + 1]) for i in range(2))
            assert dist < 0.05
            b_in, b_out = trousers.keypoints[f"bottom_{name}_in"], trousers.keypoints[f"bottom_{name}_out"]
            assert side * b_out[0] > side * b_in[0]
            assert b_in[1] > trousers.keypoints["crotch"][1]


def test_labelled_keypoints_lie_where_the_layout_put_them():
    """The warp takes the garment's corners onto the drawn layout: every annotated point is
    the rounded layout point, inside the image."""
    for cat in CATEGORIES:
        for i in range(4):
            rng = synth.image_rng(13, "train", cat, i)
            scene = render.build_scene(rng, cat)
            xy = render.to_image(scene.hom, scene.garment.keypoint_array())
            w, h = scene.size
            assert np.all(xy[scene.present] >= 0) and np.all(xy[scene.present, 0] <= w - 1)
            assert np.all(xy[scene.present, 1] <= h - 1)
            k = synth.render_sample(synth.image_rng(13, "train", cat, i), cat).keypoints
            got = k[category_indices(cat)]
            np.testing.assert_array_equal(got[:, 2] >= 0, scene.present)
            np.testing.assert_allclose(got[scene.present, :2], xy[scene.present], atol=0.51)


# --------------------------------------------------------------------------- preview

def test_contact_sheet_draws_the_labels(small, tmp_path):
    out, _ = small
    path = tmp_path / "sheet" / "preview.png"
    count, written = contact_sheet(out, path, n=20, tile=128)
    assert count == 20 and written == path
    sheet = cv2.imread(str(path))
    assert sheet.shape == (4 * (128 + 18), 5 * 128, 3)
    table, _ = read_annotations(out / "train/Annotations/train.csv")
    first = int(np.flatnonzero(table.image_category == CATEGORIES[0])[0])   # the first tile
    img = cv2.imread(str(out / "train" / table.image_id[first]))
    s = 128 / max(img.shape[:2])
    ox, oy = (128 - img.shape[1] * s) / 2, (128 - img.shape[0] * s) / 2
    colours = keypoint_colours()
    hits = 0
    kps = table.keypoints[first]
    for k in category_indices(CATEGORIES[0]):
        x, y, v = kps[k]
        if v == 1:
            px = sheet[int(y * s + oy) + 18, int(x * s + ox)].astype(int)
            hits += np.abs(px - colours[k]).sum() < 60
    assert hits >= 0.5 * (kps[category_indices(CATEGORIES[0]), 2] == 1).sum() > 0


def test_contact_sheet_cli_error_is_one_line(tmp_path, capsys):
    from pipeline.tools.synth.preview import main

    assert main(["--input", str(tmp_path / "missing"), "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and len(err.strip().splitlines()) == 1
