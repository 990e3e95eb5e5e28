"""Tests of the synthetic generator's model of real data (pipeline/tools/synth/real_model.py,
fit_real.py) and of the synthetic-vs-real comparison. Synthetic data only: the "real" CSVs
here are written by the tests."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import REPO  # noqa: E402

from pipeline.keypoints import CATEGORIES, CATEGORY_KEYPOINTS, KEYPOINTS
from pipeline.tianchi import HEADER, read_annotations
from pipeline.tools import synth
from pipeline.tools.synth import fit_real, real_model, render
from pipeline.tools.synth.preview import (
    comparison_panel,
    contact_sheet,
    real_comparison,
)

MODEL = real_model.load()


def _pattern_marginals(category):
    """Per keypoint, the absence probability implied by the fitted joint patterns."""
    names = CATEGORY_KEYPOINTS[category]
    pats = MODEL.data["absence"][category]
    total = sum(p for _, p in pats)
    return np.array([sum(p for absent, p in pats if n in absent) / total for n in names])


# --------------------------------------------------------------------------- the model file

def test_model_file_loads_and_is_small_fitted_numbers():
    text = real_model.MODEL_PATH.read_text()
    assert len(text) < 200_000
    assert "Images/" not in text and not re.search(r"[0-9a-f]{32}", text)    # no row, no image id
    data = json.loads(text)
    for cat in CATEGORIES:
        k = len(CATEGORY_KEYPOINTS[cat])
        lay = data["layouts"][cat]
        assert np.array(lay["mean"]).shape == (k, 2)
        comps = np.array(lay["components"])
        assert comps.shape == (len(lay["variances"]), 2 * k) and 2 <= len(comps) <= 12
        np.testing.assert_allclose(comps @ comps.T, np.eye(len(comps)), atol=1e-3)
        assert np.all(np.diff(lay["variances"]) <= 1e-9) and lay["residual"] >= 0
        probs = [p for _, p in data["absence"][cat]]
        assert sum(probs) == pytest.approx(1.0, abs=1e-3)
        assert all(set(a) <= set(CATEGORY_KEYPOINTS[cat]) for a, _ in data["absence"][cat])
        assert set(data["occluded"][cat]) == set(CATEGORY_KEYPOINTS[cat])
        assert all(0 <= v <= 1 for v in data["occluded"][cat].values())
        fr = data["framing"][cat]
        for key in ("area", "pos_x", "pos_y"):
            assert len(fr[key]) == len(fr["levels"]) and np.all(np.diff(fr[key]) >= 0)
        assert 0 < fr["area"][0] < fr["area"][-1] <= 1
    assert sum(p for _, _, p in data["sizes"]) == pytest.approx(1.0, abs=1e-3)
    non512 = sum(p for w, h, p in data["sizes"] if (w, h) != (512, 512))
    assert non512 == pytest.approx(data["real"]["non512_frac"], abs=2e-3)


def test_mean_layouts_are_garment_shaped():
    """Left points on the image's left, tops' shoulders above armpits above hems."""
    for cat in CATEGORIES:
        names = CATEGORY_KEYPOINTS[cat]
        mean = dict(zip(names, np.array(MODEL.data["layouts"][cat]["mean"])))
        for n in names:
            if "_left" in n:
                assert mean[n][0] < mean[n.replace("_left", "_right")][0], (cat, n)
        if cat in ("blouse", "outwear", "dress"):
            hem = "hemline_left" if cat == "dress" else "top_hem_left"
            assert mean["shoulder_left"][1] < mean["armpit_left"][1] < mean[hem][1]


# --------------------------------------------------------------------------- draws

@pytest.mark.parametrize("category", CATEGORIES)
def test_absence_draws_follow_the_fitted_patterns(category):
    rng = np.random.default_rng(0)
    absent = np.array([MODEL.sample_absent(rng, category) for _ in range(3000)])
    np.testing.assert_allclose(absent.mean(0), _pattern_marginals(category), atol=0.03)


def test_sleeveless_tops_lack_all_four_cuffs_and_are_drawn_without_sleeves():
    """Over a few hundred scenes the share of dresses without cuffs follows the model, and
    exactly those are drawn with the body only."""
    names = CATEGORY_KEYPOINTS["dress"]
    cuffs = [names.index(n) for n in names if n.startswith("cuff_")]
    want = sum(p for absent, p in MODEL.data["absence"]["dress"]
               if all(names[i] in absent for i in cuffs))
    assert want > 0.1                              # the data's sleeveless dresses
    sleeveless = 0
    n = 300
    for i in range(n):
        scene = render.build_scene(np.random.default_rng([5, i]), "dress")
        none = not scene.present[cuffs].any()
        sleeveless += none
        assert len(scene.garment.parts) == (1 if none else 3)
    assert abs(sleeveless / n - want) < 3.5 * np.sqrt(want * (1 - want) / n)


def test_layout_in_the_image_hits_the_drawn_fraction():
    rng = np.random.default_rng(1)
    for cat in CATEGORIES:
        fr = MODEL.data["framing"][cat]
        fracs = []
        for _ in range(400):
            size = MODEL.sample_size(rng)
            xy, present, frac = MODEL.sample_layout(rng, cat, size)
            w, h = size
            pts = xy[present]
            assert present.sum() >= 2
            assert np.all(pts >= 0) and np.all(pts[:, 0] <= w - 1) and np.all(pts[:, 1] <= h - 1)
            box = pts.max(0) - pts.min(0)
            assert box[0] * box[1] / (w * h) == pytest.approx(frac, rel=1e-6)
            fracs.append(frac)
        median = float(np.interp(0.5, fr["levels"], fr["area"]))
        assert np.median(fracs) == pytest.approx(median, rel=0.15), cat


def test_size_draws_follow_the_mix():
    rng = np.random.default_rng(2)
    sizes = np.array([MODEL.sample_size(rng) for _ in range(3000)])
    assert np.mean(np.any(sizes != 512, 1)) == pytest.approx(MODEL.data["real"]["non512_frac"],
                                                           abs=0.03)
    for cat in CATEGORIES:
        sizes = np.array([MODEL.sample_size(rng, cat) for _ in range(2000)])
        assert np.mean(np.any(sizes != 512, 1)) == pytest.approx(
            MODEL.data["real"][cat]["non512_frac"], abs=0.035)
        mix = MODEL.data["sizes_by_category"][cat]
        assert sum(p for _, _, p in mix) == pytest.approx(1.0, abs=1e-3)


def test_occlusion_flips_bring_the_real_rate():
    data = json.loads(json.dumps(MODEL.data))
    names = CATEGORY_KEYPOINTS["skirt"]
    data["occluded"]["skirt"] = dict(zip(names, [0.3, 0.3, 0.1, 0.0]))
    data["render_occluded"] = {"skirt": dict(zip(names, [0.2, 0.0, 0.2, 0.0]))}
    extra, uncover = real_model.RealModel(data).occlusion_flips("skirt")
    np.testing.assert_allclose(extra, [0.1 / 0.8, 0.3, 0.0, 0.0])
    np.testing.assert_allclose(uncover, [0.0, 0.0, 0.5, 0.0])
    # P(v=0) = r (1 - uncover) + (1 - r) extra = t
    r = np.array([0.2, 0.0, 0.2, 0.0])
    np.testing.assert_allclose(r * (1 - uncover) + (1 - r) * extra, [0.3, 0.3, 0.1, 0.0])


def test_occluded_share_follows_the_model_on_rendered_images():
    """Skirts: the share of annotated points with v=0 is near the fitted rate."""
    names = CATEGORY_KEYPOINTS["skirt"]
    target = np.mean([MODEL.data["occluded"]["skirt"][n] for n in names])
    v = []
    for i in range(60):
        k = synth.render_sample(synth.image_rng(21, "train", "skirt", i), "skirt").keypoints
        v += [x for x in k[:, 2] if x >= 0]
    v = np.array(v)
    assert abs(np.mean(v == 0) - target) < 0.09


def test_warp_passes_through_the_control_points():
    rng = np.random.default_rng(3)
    src = rng.uniform(-0.5, 0.5, (9, 2))
    sim = np.array([[300.0, -20, 256], [20, 300, 240], [0, 0, 1]])
    dst = render.apply_homography(sim, src) + rng.normal(0, 6, (9, 2))
    warp = render.Warp(sim, src, dst)
    np.testing.assert_allclose(warp(src), dst, atol=1e-3)
    exact = render.Warp(sim, src, render.apply_homography(sim, src))
    far = rng.uniform(-2, 2, (20, 2))
    np.testing.assert_allclose(exact(far), render.apply_homography(sim, far), atol=1e-3)
    m, err = render.similarity(src, render.apply_homography(sim, src))
    np.testing.assert_allclose(m, sim, atol=1e-6)
    assert err < 1e-9


# --------------------------------------------------------------------------- fit and comparison

def _write_rows(path: Path, rows):
    """rows: (image_id, category, {keypoint name: (x, y, v)})."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [",".join(HEADER)]
    for image_id, cat, cells in rows:
        lines.append(",".join([image_id, cat] + ["{}_{}_{}".format(*cells.get(n, (-1, -1, -1)))
                                                 for n in KEYPOINTS]))
    path.write_text("\n".join(lines) + "\n")


def _fake_real_rows(n_per_cat: int, seed: int = 0):
    """Made-up rows: each category's mean layout, jittered, in a 512x512 frame, with known
    visibility: the last point of every third row occluded, of every fifth row absent."""
    rng = np.random.default_rng(seed)
    rows = []
    for cat in CATEGORIES:
        names = CATEGORY_KEYPOINTS[cat]
        mean = np.array(MODEL.data["layouts"][cat]["mean"])
        for i in range(n_per_cat):
            xy = np.clip(256 + 200 * (mean + rng.normal(0, 0.03, mean.shape)), 0, 511).astype(int)
            v = np.ones(len(names), int)
            if i % 3 == 0:
                v[-1] = 0
            cells = {n: (x, y, int(vv)) for n, (x, y), vv in zip(names, xy, v)}
            if i % 5 == 0:
                cells[names[-1]] = (-1, -1, -1)
            rows.append((f"Images/{cat}/{cat}{i:04d}.jpg", cat, cells))
    return rows


def test_fit_real_reproduces_the_figures_of_its_rows(tmp_path):
    ann = tmp_path / "ann.csv"
    _write_rows(ann, _fake_real_rows(40))
    model = fit_real.fit(ann)
    for cat in CATEGORIES:
        k = len(CATEGORY_KEYPOINTS[cat])
        # last point: 1/5 absent; occluded when i % 3 == 0 and not absent -> 11 of 32 present
        assert model["real"][cat]["absent_frac"] == pytest.approx(8 / (40 * k), abs=1e-4)
        last = CATEGORY_KEYPOINTS[cat][-1]
        assert model["occluded"][cat][last] == pytest.approx(
            sum(i % 3 == 0 and i % 5 != 0 for i in range(40)) / 32)
        pats = dict((tuple(a), p) for a, p in model["absence"][cat])
        assert pats[(last,)] == pytest.approx(0.2) and pats[()] == pytest.approx(0.8)
        np.testing.assert_allclose(model["layouts"][cat]["mean"], MODEL.data["layouts"][cat]["mean"],
                                   atol=0.12)
    assert model["sizes"] == [[512, 512, 1.0]]
    out = tmp_path / "model.json"
    fit_real.write(model, out)
    again = real_model.load(out)
    xy, present, _ = again.sample_layout(np.random.default_rng(0), "skirt", (512, 512))
    assert xy.shape == (4, 2)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth_tiny")
    synth.generate(out, train_per_cat=4, test_per_cat=2, seed=4, jobs=1, progress=False)
    return out


def test_real_stats_of_a_hand_written_csv(tmp_path):
    ann = tmp_path / "real.csv"
    rows = [("Images/skirt/a.jpg", "skirt", {"waistband_left": (10, 10, 1), "waistband_right": (110, 10, 0),
                                             "hemline_left": (0, 110, 1), "hemline_right": (-1, -1, -1)}),
            ("Images/skirt/b.jpg", "skirt", {"waistband_left": (0, 0, 1), "waistband_right": (256, 0, 1),
                                             "hemline_left": (0, 256, 1), "hemline_right": (256, 256, 1)})]
    _write_rows(ann, rows)
    real = synth.real_stats(ann)
    assert real["skirt"]["occluded_frac"] == pytest.approx(1 / 8)
    assert real["skirt"]["absent_frac"] == pytest.approx(1 / 8)
    assert real["skirt"]["non512_frac"] is None and "512x512" in real["sizes_from"]
    assert real["skirt"]["box_p50"] == pytest.approx(np.median([110 * 100 / 512 ** 2, 0.25]))
    assert "blouse" not in real


def test_realism_against_a_real_csv_side_by_side(tiny, tmp_path, capsys):
    """A data set compared with itself (images beside the CSV) agrees on every figure but the
    mean-shape NE (another split); realism.json gains `real` and `vs_real`, also when skipped."""
    real_dir = tmp_path / "real"
    shutil.copytree(tiny / "train", real_dir / "train")
    ann = real_dir / "train/Annotations/train.csv"
    real = synth.real_stats(ann)
    assert real["sizes_from"].startswith("image headers")
    own = synth.realism_stats(tiny)["per_category"]
    train_only = synth.dataset.group_stats(*_table_and_sizes(tiny / "train"))
    for cat in CATEGORIES:
        for stat in ("occluded_frac", "absent_frac", "box_p50", "non512_frac"):
            assert real[cat][stat] == pytest.approx(train_only[cat][stat])
    assert set(own) == set(CATEGORIES) | {"all"} and "mean_shape_ne" in own["all"]

    summary = synth.generate(tiny, train_per_cat=4, test_per_cat=2, seed=4, jobs=1,
                             progress=False, real_ann=ann)
    assert summary["skipped"] is True
    realism = json.loads((tiny / synth.REALISM).read_text())
    assert realism["real"]["source"] == str(ann)
    assert 0 < realism["real"]["all"]["mean_shape_ne"] < 5
    rows = realism["vs_real"]
    stats = {r["statistic"] for r in rows}
    assert stats == set(synth.dataset.TOLERANCES)
    assert {r["category"] for r in rows} == set(CATEGORIES) | {"all"}
    row = next(r for r in rows if r["statistic"] == "occluded_frac" and r["category"] == "skirt")
    assert row["synthetic"] == pytest.approx(own["skirt"]["occluded_frac"])
    assert row["real"] == pytest.approx(real["skirt"]["occluded_frac"])
    assert row["within"] == (abs(row["synthetic"] - row["real"]) <= 0.04)

    far = tmp_path / "far.csv"                      # everything occluded: outside the tolerance
    table, _ = read_annotations(ann)
    _write_rows(far, [(i, c, {n: (5, 5 + j, 0) for j, n in enumerate(CATEGORY_KEYPOINTS[c])})
                      for i, c in zip(table.image_id, table.image_category)])
    rows = synth.compare(own, synth.real_stats(far))
    occ = [r for r in rows if r["statistic"] == "occluded_frac"]
    assert all(r["within"] is False for r in occ)
    assert all(r["within"] is None for r in rows if r["statistic"] == "non512_frac")

    sheet = tmp_path / "sheet.png"
    contact_sheet(tiny, sheet, n=5, tile=64)
    plain = cv2.imread(str(sheet)).shape
    contact_sheet(tiny, sheet, n=5, tile=64, comparison=real_comparison(tiny, ann))
    assert cv2.imread(str(sheet)).shape[0] > plain[0]
    assert comparison_panel(rows, 600).shape[1] == 600


def _table_and_sizes(split_dir: Path):
    table, _ = read_annotations(split_dir / "Annotations/train.csv")
    sizes = np.array([synth.image_size(split_dir / i) for i in table.image_id], float)
    return table.keypoints, table.image_category, sizes


def test_cli_real_ann_prints_the_table(tiny, tmp_path):
    ann = tmp_path / "real.csv"
    _write_rows(ann, _fake_real_rows(10))
    out = tmp_path / "cli"
    proc = subprocess.run([sys.executable, "-m", "pipeline.synth", "--out", str(out),
                           "--train-per-cat", "1", "--test-per-cat", "1", "--jobs", "1",
                           "--no-progress", "--real-ann", str(ann)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "synthetic vs real" in proc.stderr and "occluded_frac" in proc.stderr
    realism = json.loads((out / synth.REALISM).read_text())
    assert realism["real"]["n_images"] == 50 and realism["vs_real"]
