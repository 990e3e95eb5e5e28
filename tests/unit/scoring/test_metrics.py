"""Normalized error (pipeline/scoring/metrics.py) on hand-computed cases and against a plain loop."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from conftest import cells, random_keypoints, run_module, write_csv

from pipeline.keypoints import (
    CATEGORIES,
    CATEGORY_KEYPOINTS,
    KEYPOINT_INDEX,
    KEYPOINTS,
    NORMALIZER,
)
from pipeline.scoring.metrics import (
    image_normalizers,
    normalized_error,
    point_errors,
    score_files,
)
from pipeline.tianchi import ABSENT_CELL, HEADER

I = KEYPOINT_INDEX


def _image(category, points):
    """(24, 3) truth from {name: (x, y, v)}; unspecified points absent."""
    kps = np.full((24, 3), -1.0)
    for name, xyv in points.items():
        assert name in CATEGORY_KEYPOINTS[category]
        kps[I[name]] = xyv
    return kps


def _skirt(**changes):
    pts = {"waistband_left": (0, 0, 1), "waistband_right": (10, 0, 1),
           "hemline_left": (0, 20, 1), "hemline_right": (10, 20, 1)}
    pts.update(changes)
    return _image("skirt", pts)


def _pred_from(truth, offsets=None):
    pred = truth[..., :2].copy()
    for (n, name), (dx, dy) in (offsets or {}).items():
        pred[n, I[name]] += (dx, dy)
    return pred


def test_single_skirt_hand_computed():
    truth = _skirt()[None]
    pred = _pred_from(truth, {(0, "waistband_left"): (3, 4), (0, "hemline_left"): (6, 8)})
    r = normalized_error(truth, pred, ["skirt"])
    # s = 10; errors 5/10 and 10/10 over 4 visible points
    assert r["ne"] == pytest.approx(1.5 / 4)
    assert r["ne_percent"] == pytest.approx(37.5)
    assert r["n_points"] == 4 and r["n_images"] == 1 and r["n_images_skipped"] == 0
    assert r["per_category"] == {"skirt": pytest.approx(0.375)}
    assert r["per_keypoint"] == {"waistband_left": pytest.approx(0.5), "waistband_right": 0.0,
                                 "hemline_left": pytest.approx(1.0), "hemline_right": 0.0}


def test_occluded_and_absent_points_excluded():
    offsets = {(0, "waistband_left"): (3, 4), (0, "hemline_left"): (6, 8), (0, "hemline_right"): (100, 0)}
    occluded = _skirt(hemline_right=(10, 20, 0))[None]
    r = normalized_error(occluded, _pred_from(occluded, offsets), ["skirt"])
    assert r["ne"] == pytest.approx(1.5 / 3) and r["n_points"] == 3
    assert "hemline_right" not in r["per_keypoint"]
    absent = _skirt(hemline_right=(-1, -1, -1))[None]
    r = normalized_error(absent, _pred_from(absent, offsets), ["skirt"])
    assert r["ne"] == pytest.approx(1.5 / 3) and r["n_points"] == 3


def test_occluded_normalizer_point_still_normalizes_but_is_not_counted():
    truth = _skirt(waistband_left=(0, 0, 0))[None]
    pred = _pred_from(truth, {(0, "waistband_left"): (50, 50), (0, "hemline_left"): (6, 8)})
    r = normalized_error(truth, pred, ["skirt"])
    assert r["n_images_skipped"] == 0
    assert r["ne"] == pytest.approx(1.0 / 3) and r["n_points"] == 3


@pytest.mark.parametrize("bad", [dict(waistband_right=(-1, -1, -1)), dict(waistband_right=(0, 0, 1))],
                         ids=["normalizer-absent", "normalizer-coincident"])
def test_unnormalizable_image_skipped_and_counted(bad):
    good = _skirt()
    broken = _skirt(**bad)
    truth = np.stack([good, broken])
    pred = _pred_from(truth, {(0, "hemline_left"): (6, 8), (1, "hemline_left"): (500, 500)})
    with np.errstate(all="raise"):  # no division by zero anywhere
        r = normalized_error(truth, pred, ["skirt", "skirt"])
    assert r["n_images_skipped"] == 1 and r["n_images"] == 2
    assert r["n_points"] == 4
    assert r["ne"] == pytest.approx(1.0 / 4)
    assert np.isnan(image_normalizers(truth, ["skirt", "skirt"])[1])
    assert np.isnan(point_errors(truth, pred, ["skirt", "skirt"])[1]).all()


def test_all_images_skipped_gives_nan_not_an_error():
    truth = _skirt(waistband_left=(-1, -1, -1))[None]
    r = normalized_error(truth, truth[..., :2], ["skirt"])
    assert math.isnan(r["ne"]) and r["n_points"] == 0 and r["n_images_skipped"] == 1
    assert r["per_category"] == {} and r["per_keypoint"] == {}


def test_pooled_mean_over_points_not_mean_of_image_means():
    skirt = _skirt()
    trousers = _image("trousers", {
        "waistband_left": (0, 0, 1), "waistband_right": (20, 0, 1), "crotch": (10, 30, 1),
        "bottom_left_in": (8, 60, 1), "bottom_left_out": (0, 60, 1),
        "bottom_right_in": (12, 60, 1), "bottom_right_out": (20, 60, 1)})
    truth = np.stack([skirt, trousers])
    # skirt: one point off by 10 (s=10) → 1.0; trousers: one point off by 20 (s=20) → 1.0
    pred = _pred_from(truth, {(0, "hemline_left"): (10, 0), (1, "crotch"): (0, 20)})
    r = normalized_error(truth, pred, ["skirt", "trousers"])
    pooled, mean_of_means = 2.0 / 11, (1.0 / 4 + 1.0 / 7) / 2
    assert pooled != pytest.approx(mean_of_means)
    assert r["ne"] == pytest.approx(pooled)
    assert r["n_points"] == 11
    assert r["per_category"] == {"skirt": pytest.approx(0.25), "trousers": pytest.approx(1.0 / 7)}
    assert r["per_keypoint"]["waistband_left"] == 0.0  # pooled over both images
    assert r["per_keypoint"]["hemline_left"] == pytest.approx(1.0)
    assert r["per_keypoint"]["crotch"] == pytest.approx(1.0)
    assert set(r["per_keypoint"]) == set(CATEGORY_KEYPOINTS["skirt"]) | set(CATEGORY_KEYPOINTS["trousers"])


def test_armpit_normalizer_for_tops():
    truth = _image("outwear", {n: (5 * i, 3 * i, 1) for i, n in enumerate(CATEGORY_KEYPOINTS["outwear"])})
    truth[I["armpit_left"]] = (100, 100, 1)
    truth[I["armpit_right"]] = (130, 140, 1)  # s = 50
    assert image_normalizers(truth[None], ["outwear"])[0] == pytest.approx(50.0)
    pred = _pred_from(truth[None], {(0, "neckline_left"): (0, 25)})
    r = normalized_error(truth[None], pred, ["outwear"])
    assert r["ne"] == pytest.approx(0.5 / 14)


def test_nan_prediction_for_counted_point_is_an_error_but_fine_elsewhere():
    truth = _skirt()[None]
    pred = np.full((1, 24, 2), np.nan)
    pred[0, [I[n] for n in CATEGORY_KEYPOINTS["skirt"]]] = truth[0, [I[n] for n in CATEGORY_KEYPOINTS["skirt"]], :2]
    assert normalized_error(truth, pred, ["skirt"])["ne"] == 0.0  # NaN only for other categories' points
    pred[0, I["hemline_left"]] = np.nan
    with pytest.raises(ValueError):
        normalized_error(truth, pred, ["skirt"])


def _reference_ne(truth, pred, categories):
    """Straightforward loop implementation of the leaderboard NE (DESIGN §1)."""
    total, count, skipped = 0.0, 0, 0
    per_cat, per_kp = {}, {}
    for t, p, cat in zip(truth, pred, categories):
        a, b = (KEYPOINT_INDEX[n] for n in NORMALIZER[cat])
        if t[a][2] == -1 or t[b][2] == -1:
            skipped += 1
            continue
        s = math.sqrt((t[a][0] - t[b][0]) ** 2 + (t[a][1] - t[b][1]) ** 2)
        if s == 0:
            skipped += 1
            continue
        for k in range(24):
            if t[k][2] != 1:
                continue
            e = math.sqrt((p[k][0] - t[k][0]) ** 2 + (p[k][1] - t[k][1]) ** 2) / s
            total += e
            count += 1
            per_cat.setdefault(cat, []).append(e)
            per_kp.setdefault(KEYPOINTS[k], []).append(e)
    return (total / count, count, skipped, {c: sum(v) / len(v) for c, v in per_cat.items()},
            {k: sum(v) / len(v) for k, v in per_kp.items()})


def _random_set(rng, n):
    cats = list(rng.choice(CATEGORIES, size=n))
    truth = []
    for i, cat in enumerate(cats):
        w, h = rng.choice([(512, 512), (340, 512), (400, 400)], axis=0)
        kps = random_keypoints(cat, int(w), int(h), rng, occluded=0.2)
        idx = [KEYPOINT_INDEX[n] for n in CATEGORY_KEYPOINTS[cat]]
        for k in idx:
            if rng.random() < 0.1:
                kps[k] = -1  # absent
        a, b = (KEYPOINT_INDEX[n] for n in NORMALIZER[cat])
        if i % 7 == 3:
            kps[b] = -1  # normalizer missing
        elif i % 11 == 5:
            kps[b] = (kps[a][0], kps[a][1], 1)  # normalizer coincident
        truth.append(kps)
    truth = np.array(truth, np.float64)
    pred = truth[..., :2] + rng.normal(0, 15, size=(n, 24, 2))
    return truth, pred, cats


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_reference_loop_on_random_sets(seed):
    rng = np.random.default_rng(seed)
    truth, pred, cats = _random_set(rng, 60)
    ne, count, skipped, per_cat, per_kp = _reference_ne(truth, pred, cats)
    r = normalized_error(truth, pred, cats)
    assert skipped >= 8  # the random set does exercise the skipping
    assert r["ne"] == pytest.approx(ne, rel=1e-12)
    assert r["n_points"] == count and r["n_images_skipped"] == skipped
    assert r["per_category"].keys() == per_cat.keys()
    for c in per_cat:
        assert r["per_category"][c] == pytest.approx(per_cat[c], rel=1e-12)
    assert r["per_keypoint"].keys() == per_kp.keys()
    for k in per_kp:
        assert r["per_keypoint"][k] == pytest.approx(per_kp[k], rel=1e-12)


def _write_pair(tmp_path, truth, pred, cats):
    ids = [f"Images/{c}/{i:03d}.jpg" for i, c in enumerate(cats)]
    t_rows = [[i, c, *cells(k.astype(np.int64))] for i, c, k in zip(ids, cats, truth)]
    pred_kps = np.concatenate([np.rint(pred), np.ones(pred.shape[:2] + (1,))], -1).astype(np.int64)
    p_rows = [[i, c, *[f"{x}_{y}_1" if n in CATEGORY_KEYPOINTS[c] else "-1_-1_-1"
                        for n, (x, y, _) in zip(KEYPOINTS, k)]]
              for i, c, k in zip(ids, cats, pred_kps)]
    return (write_csv(tmp_path / "truth.csv", t_rows), write_csv(tmp_path / "pred.csv", p_rows[::-1]),
            pred_kps[..., :2].astype(np.float64))


def test_score_files_and_cli_json(tmp_path):
    rng = np.random.default_rng(5)
    truth, pred, cats = _random_set(rng, 25)
    pred = np.clip(pred, 0, None)  # submission cells hold non-negative integers
    t_csv, p_csv, pred_int = _write_pair(tmp_path, truth, pred, cats)
    ne, count, skipped, per_cat, per_kp = _reference_ne(truth, pred_int, cats)

    r = score_files(t_csv, p_csv)  # rows matched by image_id (pred file is reversed)
    assert r["ne"] == pytest.approx(ne) and r["n_points"] == count

    proc = run_module("pipeline.metrics", "--truth", str(t_csv), "--pred", str(p_csv), "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert {"ne", "n_points", "n_images_skipped", "per_category", "per_keypoint"} <= set(out)
    assert out["ne"] == pytest.approx(ne)
    assert out["n_points"] == count and out["n_images_skipped"] == skipped
    assert out["per_category"] == pytest.approx(per_cat)
    assert out["per_keypoint"] == pytest.approx(per_kp)

    text = run_module("pipeline.metrics", "--truth", str(t_csv), "--pred", str(p_csv))
    assert text.returncode == 0 and f"{ne:.5f}" in text.stdout


def test_missing_prediction_scores_the_rest_and_names_it_strict_refuses(tmp_path):
    rng = np.random.default_rng(6)
    truth, pred, cats = _random_set(rng, 6)
    t_csv, p_csv, pred_int = _write_pair(tmp_path, truth, np.clip(pred, 0, None), cats)
    lines = p_csv.read_text().splitlines()
    p_csv.write_text("\n".join(lines[:-1]) + "\n")  # drop the last data line: truth row 2 (the file is reversed)
    ne, count, skipped, _, _ = _reference_ne(truth[1:], pred_int[1:], cats[1:])
    proc = run_module("pipeline.metrics", "--truth", str(t_csv), "--pred", str(p_csv), "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["ne"] == pytest.approx(ne) and out["n_points"] == count and out["n_images_skipped"] == skipped
    assert out["n_images_missing"] == 1 and out["n_images"] == 5 and out["n_images_truth"] == 6
    first = f"Images/{cats[0]}/000.jpg"
    assert out["missing_image_ids"] == [first]
    assert "warning" in proc.stderr and first in proc.stderr and "truth row 2" in proc.stderr
    assert any("covers only" in n for n in out["notes"])
    text = run_module("pipeline.metrics", "--truth", str(t_csv), "--pred", str(p_csv))
    assert text.returncode == 0 and "only the 5 of 6" in text.stdout
    strict = run_module("pipeline.metrics", "--truth", str(t_csv), "--pred", str(p_csv), "--json", "--strict")
    assert strict.returncode != 0 and "no prediction" in strict.stderr and first in strict.stderr
    assert strict.stdout == ""


# --------------------------------------------------------------------------- submission files as found
#
# Real competitors' files: no header, rows in their own order, all 24 cells filled whatever the
# category, coordinates slightly outside the image. Scored by the competition's rules.

def _quirky_files(tmp_path, header=False):
    """A skirt and a trousers truth row (s = 10 and 20) and a prediction file with every quirk.

    skirt: waistband_left off by (3, 4) → 5/10; hemline_right predicted at (-1, 20) (truth
    (10, 20)) → 11/10, written `-1_20_1`. trousers: crotch predicted `-1_-1_-1` (truth
    (10, 30)) → sqrt(11² + 31²)/20; waistband_right at (20, -2) (truth (20, 0)) → 2/20.
    Other categories' cells are filled with points (ignored). 11 counted points.
    """
    skirt = _skirt(hemline_right=(10, 20, 1))
    trousers = _image("trousers", {
        "waistband_left": (0, 0, 1), "waistband_right": (20, 0, 1), "crotch": (10, 30, 1),
        "bottom_left_in": (8, 60, 1), "bottom_left_out": (0, 60, 1),
        "bottom_right_in": (12, 60, 1), "bottom_right_out": (20, 60, 1)})
    truth = np.stack([skirt, trousers]).astype(np.int64)
    ids = ["Images/skirt/s.jpg", "Images/trousers/t.jpg"]
    t_csv = write_csv(tmp_path / "truth.csv", [[i, c, *cells(k)] for i, c, k in
                                               zip(ids, ["skirt", "trousers"], truth)])
    filled = {n: f"{7 + j}_{3 + j}_1" for j, n in enumerate(KEYPOINTS)}  # every cell of every row filled
    s_row = dict(filled, **{n: f"{x}_{y}_1" for n, (x, y, _) in
                            ((n, truth[0, I[n]]) for n in CATEGORY_KEYPOINTS["skirt"])})
    s_row.update(waistband_left="3_4_1", hemline_right="-1_20_1")
    t_row = dict(filled, **{n: f"{x}_{y}_1" for n, (x, y, _) in
                            ((n, truth[1, I[n]]) for n in CATEGORY_KEYPOINTS["trousers"])})
    t_row.update(crotch="-1_-1_-1", waistband_right="20_-2_1")
    rows = [[ids[1], "trousers", *[t_row[n] for n in KEYPOINTS]],  # not in truth order
            [ids[0], "skirt", *[s_row[n] for n in KEYPOINTS]]]
    p_csv = tmp_path / "pred.csv"
    p_csv.write_text(("" if not header else ",".join(HEADER) + "\n")
                     + "".join(",".join(r) + "\n" for r in rows))
    expected = (0.5 + 1.1 + math.hypot(11, 31) / 20 + 2 / 20) / 11
    return t_csv, p_csv, rows, expected


@pytest.mark.parametrize("header", [False, True], ids=["no-header", "header"])
def test_real_submission_quirks_scored_by_the_competition_rules(tmp_path, header):
    t_csv, p_csv, _, expected = _quirky_files(tmp_path, header)
    r = score_files(t_csv, p_csv)
    assert r["ne"] == pytest.approx(expected, rel=1e-12) and r["n_points"] == 11
    assert r["per_category"]["skirt"] == pytest.approx((0.5 + 1.1) / 4)
    assert r["per_keypoint"]["crotch"] == pytest.approx(math.hypot(11, 31) / 20)
    assert r["n_images_missing"] == 0 and r["n_images"] == 2
    assert any("no header" in n for n in r["notes"]) == (not header)
    proc = run_module("pipeline.metrics", "--truth", str(t_csv), "--pred", str(p_csv), "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["ne"] == pytest.approx(expected, rel=1e-12)
    assert ("no header" in proc.stderr) == (not header)


def _broken(rows, r, column, value):
    rows = [list(x) for x in rows]
    if column == "image_id":
        rows[r][0] = value
    elif column == "image_category":
        rows[r][1] = value
    else:
        rows[r][2 + I[column]] = value
    return rows


@pytest.mark.parametrize("case", [
    ("duplicate", lambda rows: rows + [rows[0]], "row 3, column image_id", "duplicate"),
    ("unknown-id", lambda rows: _broken(rows, 1, "image_id", "Images/skirt/zz.jpg"), "row 2, column image_id",
     "not in the truth"),
    ("malformed-own-cell", lambda rows: _broken(rows, 0, "crotch", "10.5_3_1"), "row 1, column crotch", "integers"),
    ("bad-visibility", lambda rows: _broken(rows, 1, "hemline_left", "3_4_7"), "row 2, column hemline_left",
     "visibility"),
    ("wrong-category", lambda rows: _broken(rows, 1, "image_category", "dress"), "row 2, column image_category",
     "skirt"),
    ("field-count", lambda rows: [rows[0][:-1], rows[1]], "row 1", "expected 26 fields"),
], ids=lambda c: c[0])
def test_prediction_file_errors_name_file_row_and_column(tmp_path, case):
    _, change, where, words = case
    t_csv, p_csv, rows, _ = _quirky_files(tmp_path)
    p_csv.write_text("".join(",".join(r) + "\n" for r in change(rows)))
    with pytest.raises(ValueError) as err:
        score_files(t_csv, p_csv)
    assert f"{p_csv}: {where}" in str(err.value) and words in str(err.value)
    proc = run_module("pipeline.metrics", "--truth", str(t_csv), "--pred", str(p_csv), "--json")
    assert proc.returncode != 0 and where in proc.stderr and proc.stdout == ""


def test_other_categories_cells_are_never_read(tmp_path):
    t_csv, p_csv, rows, expected = _quirky_files(tmp_path)
    garbage = _broken(_broken(rows, 0, "neckline_left", "garbage"), 1, "crotch", "")  # not skirt/trousers points
    p_csv.write_text("".join(",".join(r) + "\n" for r in garbage))
    assert score_files(t_csv, p_csv)["ne"] == pytest.approx(expected, rel=1e-12)


def test_truth_row_without_an_annotated_point_is_skipped_and_counted(tmp_path):
    t_csv, p_csv, rows, expected = _quirky_files(tmp_path)
    empty = ["Images/dress/e.jpg", "dress", *[ABSENT_CELL] * 24]  # an answers row with nothing annotated
    t_csv.write_text(t_csv.read_text() + ",".join(empty) + "\n")
    p_csv.write_text(p_csv.read_text() + ",".join(empty[:2] + ["5_5_1"] * 24) + "\n")
    r = score_files(t_csv, p_csv)
    assert r["ne"] == pytest.approx(expected, rel=1e-12) and r["n_images_skipped"] == 1 and r["n_images"] == 3


def test_cli_json_is_strict_json_when_nothing_can_be_scored(tmp_path):
    truth = _skirt(waistband_left=(-1, -1, -1))[None]
    t_csv, p_csv, _ = _write_pair(tmp_path, truth, np.clip(truth[..., :2], 0, None), ["skirt"])
    proc = run_module("pipeline.metrics", "--truth", str(t_csv), "--pred", str(p_csv), "--json")
    assert proc.returncode == 0, proc.stderr

    def no_constants(name):
        raise AssertionError(f"{name} is not JSON")
    out = json.loads(proc.stdout, parse_constant=no_constants)
    assert out["ne"] is None and out["n_points"] == 0 and out["n_images_skipped"] == 1


# --------------------------------------------------------------------------- bootstrap intervals

from pipeline.scoring.metrics import (
    bootstrap_ne,
    image_sums,
    paired_bootstrap_diff,
    resample_weights,
    resampled_ne,
)


def test_image_sums_pool_points_not_images():
    err = np.array([[0.1, np.nan, 0.3], [np.nan, np.nan, np.nan], [0.5, 0.5, 0.5]])
    sums, counts = image_sums(err)
    assert np.allclose(sums, [0.4, 0.0, 1.5]) and counts.tolist() == [2, 0, 3]
    # the identity resample (each image once) gives the pooled NE, not the mean of image means
    ne = resampled_ne(sums, counts, np.ones((1, 3), np.int32))[0]
    assert ne == pytest.approx(1.9 / 5) and ne != pytest.approx((0.2 + 0.5) / 2)
    # an image drawn twice counts its points twice
    assert resampled_ne(sums, counts, np.array([[2, 0, 1]]))[0] == pytest.approx(2.3 / 7)


def test_resample_weights_draw_n_images_each_and_are_seeded():
    w = resample_weights(7, n_boot=50, seed=3)
    assert w.shape == (50, 7) and (w.sum(1) == 7).all() and (w >= 0).all()
    assert (w == resample_weights(7, n_boot=50, seed=3)).all()
    assert not (w == resample_weights(7, n_boot=50, seed=4)).all()


def test_bootstrap_interval_contains_the_estimate_and_narrows_with_more_images():
    rng = np.random.default_rng(0)
    small = rng.gamma(2.0, 0.05, size=(20, 5))
    big = rng.gamma(2.0, 0.05, size=(500, 5))
    out_small, out_big = bootstrap_ne(*image_sums(small)), bootstrap_ne(*image_sums(big))
    for out, err in ((out_small, small), (out_big, big)):
        assert out["ne"] == pytest.approx(err.mean())
        assert out["lo"] < out["ne"] < out["hi"]
    assert out_big["hi"] - out_big["lo"] < 0.5 * (out_small["hi"] - out_small["lo"])


def test_bootstrap_of_a_constant_error_has_zero_width_and_nothing_counted_is_nan():
    out = bootstrap_ne(*image_sums(np.full((10, 3), 0.07)))
    assert out["lo"] == pytest.approx(0.07) and out["hi"] == pytest.approx(0.07)
    empty = bootstrap_ne(*image_sums(np.full((4, 2), np.nan)))
    assert math.isnan(empty["ne"]) and math.isnan(empty["lo"])


def test_paired_difference_of_identical_rows_is_exactly_zero():
    rng = np.random.default_rng(1)
    sums, counts = image_sums(rng.gamma(2.0, 0.05, size=(30, 4)))
    out = paired_bootstrap_diff(sums, counts, sums, counts)
    assert out["diff"] == 0.0 and out["lo"] == 0.0 and out["hi"] == 0.0 and out["significant"] is False


def test_paired_difference_detects_a_clearly_better_row():
    rng = np.random.default_rng(2)
    a = rng.gamma(2.0, 0.05, size=(40, 6))
    b = a * 0.95  # B 5 % better on every point
    out = paired_bootstrap_diff(*image_sums(a), *image_sums(b))
    assert out["diff"] == pytest.approx(b.mean() - a.mean()) and out["diff"] < 0
    assert out["lo"] <= out["diff"] <= out["hi"] < 0 and out["significant"] is True
    # pairing: the unpaired intervals overlap a lot, yet the paired one excludes 0
    ia, ib = bootstrap_ne(*image_sums(a)), bootstrap_ne(*image_sums(b))
    assert ib["hi"] > ia["lo"]


def test_paired_difference_of_noise_is_not_significant():
    rng = np.random.default_rng(3)
    a = rng.gamma(2.0, 0.05, size=(40, 6))
    b = a + rng.normal(0, 0.02, size=a.shape)  # no systematic difference
    b[:, 0] = a[:, 0]
    b = np.abs(b)
    out = paired_bootstrap_diff(*image_sums(a), *image_sums(b))
    assert out["lo"] < 0 < out["hi"] and out["significant"] is False


def test_paired_difference_needs_aligned_arrays():
    with pytest.raises(ValueError, match="aligned"):
        paired_bootstrap_diff(np.zeros(3), np.ones(3), np.zeros(4), np.ones(4))


def test_resamples_drawn_in_blocks_still_draw_n_images_each():
    from pipeline.scoring.metrics import _weight_blocks

    one = np.concatenate(list(_weight_blocks(9, 40, seed=5)))
    blocks = np.concatenate(list(_weight_blocks(9, 40, seed=5, max_cells=9 * 7)))
    assert one.shape == blocks.shape == (40, 9) and (one.sum(1) == 9).all() and (blocks.sum(1) == 9).all()
