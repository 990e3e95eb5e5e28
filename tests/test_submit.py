"""Submission writer and validator (pipeline/submit.py)."""
from __future__ import annotations


import numpy as np
import pytest

from conftest import run_module, write_csv, write_image
from pipeline.keypoints import CATEGORY_KEYPOINTS, KEYPOINT_INDEX, KEYPOINTS
from pipeline.submit import finalize, validate, write_submission
from pipeline.tianchi import ABSENT_CELL, HEADER, TEST_HEADER, read_annotations

TEST_ROWS = [("Images/skirt/a.jpg", "skirt", (300, 200)), ("Images/blouse/b.jpg", "blouse", (512, 512)),
             ("Images/trousers/c.jpg", "trousers", (200, 300))]


def test_finalize_rounds_and_clips():
    xy = np.array([[[10.4, 20.6], [-3.2, -0.4], [299.7, 205.0], [np.nan, np.nan]],
                   [[299.7, 205.0], [511.49, 0.5001], [1e6, -1e6], [12.0, 13.0]]])
    sizes = np.array([[300, 200], [512, 512]])
    out = finalize(xy, sizes)
    assert out.dtype == np.int64 and out.shape == (2, 4, 2)
    np.testing.assert_array_equal(out, [[[10, 21], [0, 0], [299, 199], [0, 0]],
                                        [[300, 205], [511, 1], [511, 0], [12, 13]]])


@pytest.fixture
def test_set(tmp_path):
    """test.csv with real images, and a valid submission for it (as raw rows)."""
    test_dir = tmp_path / "test"
    for iid, _, (w, h) in TEST_ROWS:
        write_image(test_dir / iid, w, h)
    test_csv = write_csv(test_dir / "test.csv", [(i, c) for i, c, _ in TEST_ROWS], TEST_HEADER)
    rows = []
    for iid, cat, (w, h) in TEST_ROWS:
        wanted = CATEGORY_KEYPOINTS[cat]
        rows.append([iid, cat, *[f"{(7 * k) % w}_{(11 * k) % h}_1" if n in wanted else ABSENT_CELL
                                 for k, n in enumerate(KEYPOINTS)]])
    return tmp_path, test_csv, rows


def _write(tmp_path, rows, header=HEADER, name="sub.csv"):
    return write_csv(tmp_path / name, rows, header)


def _set(rows, r, name, value):
    rows = [list(x) for x in rows]
    rows[r][2 + KEYPOINT_INDEX[name]] = value
    return rows


def test_good_submission_is_valid(test_set):
    tmp_path, test_csv, rows = test_set
    path = _write(tmp_path, rows)
    assert validate(path, test_csv) == []
    assert validate(path, test_csv, sizes={}) == []
    proc = run_module("pipeline.submit", "--validate", str(path), "--test", str(test_csv))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout == ""


def _bad_cases(rows):
    """(id, rows, header, expected (row, column) of the one problem, words in the message)."""
    swapped = [rows[1], rows[0], rows[2]]
    recat = [list(x) for x in rows]
    recat[2][1] = "skirt"
    bad_header = list(HEADER)
    bad_header[5], bad_header[6] = bad_header[6], bad_header[5]
    return [
        ("wrong-header", rows, bad_header, (1, 6), "header"),
        ("missing-row", rows[:2], HEADER, (4, "image_id"), "missing"),
        ("extra-row", rows + [["Images/dress/z.jpg", "dress", *[ABSENT_CELL] * 24]], HEADER,
         (5, "image_id"), "extra"),
        ("reordered", swapped, HEADER, None, "Images/skirt/a.jpg"),
        ("wrong-category", recat, HEADER, (4, "image_category"), "trousers"),
        ("non-category-point", _set(rows, 0, "neckline_left", "5_5_1"), HEADER, (2, "neckline_left"), ABSENT_CELL),
        ("category-point-absent", _set(rows, 1, "armpit_left", ABSENT_CELL), HEADER, (3, "armpit_left"),
         "visibility 1"),
        ("visibility-0", _set(rows, 1, "shoulder_right", "10_10_0"), HEADER, (3, "shoulder_right"), "visibility 1"),
        ("non-integer", _set(rows, 2, "crotch", "10.5_3_1"), HEADER, (4, "crotch"), "integer"),
        ("double-minus", _set(rows, 2, "crotch", "--3_3_1"), HEADER, (4, "crotch"), "integer"),
        ("two-parts", _set(rows, 2, "crotch", "3_1"), HEADER, (4, "crotch"), "integer"),
        ("x-outside", _set(rows, 0, "hemline_left", "300_10_1"), HEADER, (2, "hemline_left"), "300x200"),
        ("y-outside", _set(rows, 2, "bottom_left_in", "10_300_1"), HEADER, (4, "bottom_left_in"), "200x300"),
        ("negative", _set(rows, 1, "cuff_left_in", "-2_10_1"), HEADER, (3, "cuff_left_in"), "outside"),
    ]


@pytest.mark.parametrize("case", range(14), ids=[c[0] for c in _bad_cases([["x", "skirt"] + [""] * 24] * 3)])
def test_bad_submissions_rejected_naming_row_and_column(test_set, case):
    tmp_path, test_csv, rows = test_set
    name, bad_rows, header, where, words = _bad_cases(rows)[case]
    path = _write(tmp_path, bad_rows, header)
    problems = validate(path, test_csv)
    assert problems, name
    if where is None:  # reordered: both swapped rows are reported on image_id
        assert len(problems) == 2
        assert "row 2, column image_id" in problems[0] and "row 3, column image_id" in problems[1]
    else:
        assert len(problems) == 1, problems
        row, col = where
        assert f"row {row}, column {col}" in problems[0]
    assert words in " ".join(problems)
    assert all(p.startswith(str(path)) for p in problems)

    proc = run_module("pipeline.submit", "--validate", str(path), "--test", str(test_csv)) if case in (1, 5) \
        else None
    if proc is not None:  # the CLI: non-zero exit, one stdout line per problem
        assert proc.returncode != 0
        assert proc.stdout.splitlines() == problems


def test_outside_checked_against_sizes_dict(test_set):
    tmp_path, test_csv, rows = test_set
    path = _write(tmp_path, _set(rows, 1, "neckline_left", "400_10_1"))
    assert validate(path, test_csv) == []  # the real image is 512 wide
    problems = validate(path, test_csv, sizes={"Images/blouse/b.jpg": (400, 600)})
    assert len(problems) == 1 and "row 3, column neckline_left" in problems[0] and "400x600" in problems[0]


def test_several_problems_one_line_each(test_set):
    tmp_path, test_csv, rows = test_set
    bad = _set(_set(rows, 0, "hemline_left", "300_10_1"), 2, "crotch", "a_b_c")
    path = _write(tmp_path, bad[:2] + [bad[2]])
    problems = validate(path, test_csv)
    assert len(problems) == 2
    proc = run_module("pipeline.submit", "--validate", str(path), "--test", str(test_csv))
    assert proc.returncode != 0 and proc.stdout.splitlines() == problems


def test_write_submission_writes_a_valid_file(test_set):
    tmp_path, test_csv, _ = test_set
    ids = [r[0] for r in TEST_ROWS]
    cats = [r[1] for r in TEST_ROWS]
    sizes = np.array([r[2] for r in TEST_ROWS])
    xy = np.full((3, 24, 2), np.nan)
    rng = np.random.default_rng(0)
    for n, cat in enumerate(cats):
        for name in CATEGORY_KEYPOINTS[cat]:
            xy[n, KEYPOINT_INDEX[name]] = rng.uniform(-20, 600, size=2)  # some outside: clipped
    out = tmp_path / "output" / "submission.csv"
    write_submission(out, test_csv, ids, cats, xy, sizes)
    assert validate(out, test_csv) == []
    table, problems = read_annotations(out)
    assert problems == [] and list(table.image_id) == ids
    expected = finalize(xy, sizes)
    for n, cat in enumerate(cats):
        idx = [KEYPOINT_INDEX[k] for k in CATEGORY_KEYPOINTS[cat]]
        np.testing.assert_array_equal(table.keypoints[n, idx, :2], expected[n, idx])
        assert (table.keypoints[n, idx, 2] == 1).all()
    assert sorted(p.name for p in out.parent.iterdir()) == ["submission.csv"]


def test_write_submission_refuses_and_leaves_no_file(test_set):
    tmp_path, test_csv, _ = test_set
    ids = [r[0] for r in TEST_ROWS]
    cats = [r[1] for r in TEST_ROWS]
    sizes = np.array([r[2] for r in TEST_ROWS])
    xy = np.full((3, 24, 2), 5.0)
    out = tmp_path / "output" / "submission.csv"
    with pytest.raises(ValueError, match="refusing"):
        write_submission(out, test_csv, ids[::-1], cats[::-1], xy, sizes[::-1])
    assert not out.exists()
    assert list(out.parent.iterdir()) == []  # no temporary file left either
    with pytest.raises(ValueError):
        write_submission(out, test_csv, ids[:2], cats[:2], xy[:2], sizes[:2])  # a missing row
    assert not out.exists()


def test_write_submission_keeps_previous_file_on_refusal(test_set):
    tmp_path, test_csv, _ = test_set
    out = tmp_path / "submission.csv"
    out.write_text("previous\n")
    with pytest.raises(ValueError):
        write_submission(out, test_csv, ["x.jpg"], ["skirt"], np.zeros((1, 24, 2)), np.array([[10, 10]]))
    assert out.read_text() == "previous\n"
