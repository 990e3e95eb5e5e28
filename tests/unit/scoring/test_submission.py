"""Submission writer and validator (pipeline/scoring/submission.py)."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import run_module, write_csv, write_image

from pipeline.keypoints import CATEGORIES, CATEGORY_KEYPOINTS, KEYPOINT_INDEX, KEYPOINTS
from pipeline.scoring.submission import (
    SHOW_FIRST,
    check_submission,
    finalize,
    validate,
    write_submission,
)
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
    """What the platform would refuse: (id, rows, header, expected (row, column) of the one error, words)."""
    recat = [list(x) for x in rows]
    recat[2][1] = "skirt"
    bad_header = list(HEADER)
    bad_header[5], bad_header[6] = bad_header[6], bad_header[5]
    return [
        ("wrong-header", rows, bad_header, (1, 6), "header"),
        ("missing-row", rows[:2], HEADER, (4, "image_id"), "Images/trousers/c.jpg"),
        ("extra-row", rows + [["Images/dress/z.jpg", "dress", *[ABSENT_CELL] * 24]], HEADER,
         (5, "image_id"), "extra"),
        ("duplicate-row", rows + [rows[0]], HEADER, (5, "image_id"), "duplicate"),
        ("wrong-category", recat, HEADER, (4, "image_category"), "trousers"),
        ("non-integer", _set(rows, 2, "crotch", "10.5_3_1"), HEADER, (4, "crotch"), "integer"),
        ("double-minus", _set(rows, 2, "crotch", "--3_3_1"), HEADER, (4, "crotch"), "integer"),
        ("two-parts", _set(rows, 2, "crotch", "3_1"), HEADER, (4, "crotch"), "integer"),
        ("visibility-2", _set(rows, 2, "crotch", "3_1_2"), HEADER, (4, "crotch"), "visibility"),
        ("malformed-other-cell", _set(rows, 0, "neckline_left", "n/a"), HEADER, (2, "neckline_left"), "integer"),
        ("field-count", [rows[0], rows[1][:25], rows[2]], HEADER, (3, None), "expected 26 fields"),
    ]


BAD_IDS = [c[0] for c in _bad_cases([["x", "skirt"] + [""] * 24] * 3)]


@pytest.mark.parametrize("case", range(len(BAD_IDS)), ids=BAD_IDS)
def test_bad_submissions_rejected_naming_row_and_column(test_set, case):
    tmp_path, test_csv, rows = test_set
    name, bad_rows, header, where, words = _bad_cases(rows)[case]
    path = _write(tmp_path, bad_rows, header)
    problems = validate(path, test_csv)
    assert len(problems) == 1, problems
    row, col = where
    assert (f"row {row}, column {col}" if col else f"row {row}:") in problems[0]
    assert words in problems[0] and problems[0].startswith(str(path))
    if case in (1, 3, 9):  # the CLI: non-zero exit, one stdout line per error
        proc = run_module("pipeline.submit", "--validate", str(path), "--test", str(test_csv))
        assert proc.returncode != 0
        assert proc.stdout.splitlines() == problems


def _warning_cases(rows):
    """What the platform accepted: (id, rows, header, warning kind, rows it names)."""
    swapped = [rows[1], rows[0], rows[2]]
    return [
        ("reordered", swapped, HEADER, "order", [2, 3]),
        ("non-category-point", _set(rows, 0, "neckline_left", "5_5_1"), HEADER, "other-cells", [2]),
        ("category-point-absent", _set(rows, 1, "armpit_left", ABSENT_CELL), HEADER, "visibility", [3]),
        ("visibility-0", _set(rows, 1, "shoulder_right", "10_10_0"), HEADER, "visibility", [3]),
        ("x-outside", _set(rows, 0, "hemline_left", "300_10_1"), HEADER, "outside", [2]),
        ("y-outside", _set(rows, 2, "bottom_left_in", "10_300_1"), HEADER, "outside", [4]),
        ("negative", _set(rows, 1, "cuff_left_in", "-2_10_1"), HEADER, "outside", [3]),
        ("no-header", rows, None, "no-header", [1]),
    ]


WARN_IDS = [c[0] for c in _warning_cases([["x", "skirt"] + [""] * 24] * 3)]


@pytest.mark.parametrize("case", range(len(WARN_IDS)), ids=WARN_IDS)
def test_what_the_platform_accepted_is_a_warning_not_an_error(test_set, case):
    tmp_path, test_csv, rows = test_set
    name, warn_rows, header, kind, named = _warning_cases(rows)[case]
    path = _write(tmp_path, warn_rows, header) if header else _write_headerless(tmp_path, warn_rows)
    assert validate(path, test_csv) == []  # the platform scored it
    check = check_submission(path, test_csv)
    assert check.errors == {} and list(check.warnings) == [kind]
    assert sorted({r for r, _ in check.warnings[kind]}) == named
    strict = validate(path, test_csv, strict=True)  # what our writer demands of its own files
    assert len(strict) == 1 and "warning" in strict[0]
    proc = run_module("pipeline.submit", "--validate", str(path), "--test", str(test_csv))
    assert proc.returncode == 0 and proc.stdout == ""
    warn = [line for line in proc.stderr.splitlines() if ": warning: " in line]
    assert len(warn) == 1 and f"row{'s' if len(named) > 1 else ''} {named[0]}" in warn[0]


def _write_headerless(tmp_path, rows, name="sub.csv"):
    path = tmp_path / name
    path.write_text("".join(",".join(r) + "\n" for r in rows))
    return path


def test_outside_checked_against_sizes_dict(test_set):
    tmp_path, test_csv, rows = test_set
    path = _write(tmp_path, _set(rows, 1, "neckline_left", "400_10_1"))
    assert check_submission(path, test_csv).warnings == {}  # the real image is 512 wide
    check = check_submission(path, test_csv, sizes={"Images/blouse/b.jpg": (400, 600)})
    assert check.errors == {} and [r for r, _ in check.warnings["outside"]] == [3]
    assert "neckline_left" in check.warnings["outside"][0][1] and "400x600" in check.warnings["outside"][0][1]


def test_several_problems_one_line_each(test_set):
    tmp_path, test_csv, rows = test_set
    bad = _set(_set(rows, 0, "hemline_left", "300_10_1"), 2, "crotch", "a_b_c")
    bad = _set(bad, 1, "neckline_left", "x_y_z")
    path = _write(tmp_path, bad)
    problems = validate(path, test_csv)
    assert len(problems) == 2 and "row 3, column neckline_left" in problems[0] and "row 4, column crotch" in problems[1]
    proc = run_module("pipeline.submit", "--validate", str(path), "--test", str(test_csv))
    assert proc.returncode != 0 and proc.stdout.splitlines() == problems
    assert sum(": warning: " in line for line in proc.stderr.splitlines()) == 1  # hemline_left outside the image


def _competitor_file(tmp_path, n, rng):
    """test.csv of n rows (no images) and a file as competitors wrote them: no header, shuffled, every
    cell filled, some coordinates negative."""
    cats = [CATEGORIES[i % len(CATEGORIES)] for i in range(n)]
    ids = [f"Images/{c}/{i:05d}.jpg" for i, c in enumerate(cats)]
    test_csv = write_csv(tmp_path / "big" / "test.csv", list(zip(ids, cats)), TEST_HEADER)
    rows = [[iid, cat, *[f"{x}_{y}_1" for x, y in rng.integers(-3, 500, size=(24, 2))]]
            for iid, cat in zip(ids, cats)]
    order = rng.permutation(n)
    return test_csv, [rows[i] for i in order]


def test_competitor_file_accepted_with_one_warning_line_per_kind(tmp_path):
    rng = np.random.default_rng(0)
    test_csv, rows = _competitor_file(tmp_path, 2000, rng)
    path = _write_headerless(tmp_path, rows)
    proc = run_module("pipeline.submit", "--validate", str(path), "--test", str(test_csv))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout == ""
    warn = proc.stderr.splitlines()
    kinds = ["no header", "test.csv position", "other categories", "outside the image"]
    assert len(warn) == len(kinds) + 1 and all(any(k in line for line in warn) for k in kinds)
    assert "valid" in warn[-1]


def test_errors_on_a_big_file_are_capped_per_kind(tmp_path):
    rng = np.random.default_rng(1)
    test_csv, rows = _competitor_file(tmp_path, 2000, rng)
    kept = rows[100:]                      # 100 missing rows
    kept[:50] = [[r[0] + ".x", *r[1:]] for r in kept[:50]]  # 50 extra ids (and 50 more missing)
    for r in kept[50:90]:
        r[5] = "bad"                       # 40 malformed cells
    path = _write_headerless(tmp_path, kept)
    check = check_submission(path, test_csv, sizes={})
    assert len(check.errors["missing"]) == 150 and len(check.errors["image_id"]) == 50
    assert len(check.errors["cell"]) == 40
    proc = run_module("pipeline.submit", "--validate", str(path), "--test", str(test_csv))
    assert proc.returncode != 0
    out = proc.stdout.splitlines()
    assert len(out) == 3 * (SHOW_FIRST + 1)  # a handful of each kind, then "... and N more"
    assert "... and 145 more missing" in proc.stdout and "... and 35 more cell" in proc.stdout
    assert len(proc.stderr.splitlines()) <= 6


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
    check = check_submission(out, test_csv)
    assert check.errors == {} and check.warnings == {}  # our own writer: not even a warning
    assert validate(out, test_csv, strict=True) == []
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
