"""Tianchi CSV formats (pipeline/tianchi.py): cells, annotation files, test lists, sources."""
from __future__ import annotations

import csv

import numpy as np
import pytest
from conftest import cells, random_keypoints, write_csv

from pipeline.keypoints import CATEGORY_KEYPOINTS, KEYPOINT_INDEX, KEYPOINTS
from pipeline.tianchi import (
    ABSENT_CELL,
    HEADER,
    TEST_HEADER,
    Problem,
    discover_train_sources,
    format_cell,
    parse_cell,
    read_annotations,
    read_test_list,
    write_annotations,
    write_test_list,
)


@pytest.mark.parametrize("cell,expected", [("241_135_1", (241, 135, 1)), ("206_243_0", (206, 243, 0)),
                                           ("-1_-1_-1", (-1, -1, -1)), ("0_0_1", (0, 0, 1)),
                                           (" 12_7_1 ", (12, 7, 1))])
def test_parse_cell(cell, expected):
    assert parse_cell(cell) == expected


@pytest.mark.parametrize("xyv", [(241, 135, 1), (0, 0, 0), (511, 339, 1), (-1, -1, -1)])
def test_format_parse_round_trip(xyv):
    assert parse_cell(format_cell(*xyv)) == xyv


def test_format_cell_rounds_and_writes_absent():
    assert format_cell(10.4, 20.6, 1) == "10_21_1"
    assert format_cell(3.0, 4.0, 0) == "3_4_0"
    assert format_cell(123.0, 45.0, -1) == ABSENT_CELL


@pytest.mark.parametrize("cell,reason", [
    ("1_2", "not of the form x_y_v"),
    ("a_b_1", "non-integer"),
    ("1.5_2_1", "non-integer"),
    ("3_4_2", "visibility 2"),
    ("-1_5_-1", "absent"),
    ("-3_5_1", "negative"),
    ("", "not of the form"),
    ("1_2_1_1", "not of the form"),
])
def test_malformed_cells_rejected_with_reason(cell, reason):
    with pytest.raises(ValueError, match=reason):
        parse_cell(cell)


def _row(image_id, category, rng, **overrides):
    kps = random_keypoints(category if category in CATEGORY_KEYPOINTS else "dress", 300, 200, rng)
    fields = [image_id, category, *cells(kps)]
    for name, text in overrides.items():
        fields[2 + KEYPOINT_INDEX[name]] = text
    return fields, kps


def test_read_annotations_keeps_good_rows_reports_bad_ones(tmp_path):
    rng = np.random.default_rng(0)
    good1, k1 = _row("Images/blouse/a.jpg", "blouse", rng)
    bad_cell, _ = _row("Images/dress/b.jpg", "dress", rng, shoulder_right="12_x_1")
    bad_cat, _ = _row("Images/hat/c.jpg", "hat", rng)
    good2, k2 = _row("Images/skirt/d.jpg", "skirt", rng)
    dup, _ = _row("Images/blouse/a.jpg", "blouse", rng)
    short = ["Images/dress/e.jpg", "dress", "1_1_1"]
    good3, k3 = _row("Images/trousers/f.jpg", "trousers", rng)
    path = write_csv(tmp_path / "train.csv", [good1, bad_cell, bad_cat, good2, dup, short, good3])

    table, problems = read_annotations(path)
    assert list(table.image_id) == ["Images/blouse/a.jpg", "Images/skirt/d.jpg", "Images/trousers/f.jpg"]
    assert list(table.image_category) == ["blouse", "skirt", "trousers"]
    assert list(table.rows) == [2, 5, 8]  # header is line 1
    assert table.keypoints.shape == (3, 24, 3)
    np.testing.assert_array_equal(table.keypoints[0], k1)
    np.testing.assert_array_equal(table.keypoints[1], k2)
    np.testing.assert_array_equal(table.keypoints[2], k3)

    assert [(p.file, p.row, p.column) for p in problems] == [
        (str(path), 3, "shoulder_right"), (str(path), 4, "image_category"),
        (str(path), 6, "image_id"), (str(path), 7, "*")]
    assert all(isinstance(p, Problem) for p in problems)
    assert "12_x_1" in problems[0].reason
    assert "unknown category 'hat'" in problems[1].reason
    assert "duplicate" in problems[2].reason and "Images/blouse/a.jpg" in problems[2].reason
    assert "expected 26 fields, found 3" in problems[3].reason
    assert str(problems[0]).startswith(f"{path}: row 3, column shoulder_right:")


def test_read_annotations_non_category_points_left_absent(tmp_path):
    rng = np.random.default_rng(1)
    row, kps = _row("Images/skirt/a.jpg", "skirt", rng)
    path = write_csv(tmp_path / "a.csv", [row])
    table, problems = read_annotations(path)
    assert problems == []
    others = [KEYPOINT_INDEX[n] for n in KEYPOINTS if n not in CATEGORY_KEYPOINTS["skirt"]]
    assert (table.keypoints[0, others] == -1).all()


def test_read_annotations_wrong_header_raises(tmp_path):
    path = write_csv(tmp_path / "bad.csv", [], header=["image_id", "image_category", *KEYPOINTS[::-1]])
    with pytest.raises(ValueError, match="row 1"):
        read_annotations(path)


def test_read_annotations_empty_body(tmp_path):
    table, problems = read_annotations(write_csv(tmp_path / "e.csv", []))
    assert len(table) == 0 and problems == [] and table.keypoints.shape == (0, 24, 3)


def test_write_annotations_writes_absent_for_other_categories(tmp_path):
    kps = np.tile(np.array([[10.4, 20.6, 1]]), (2, 24, 1))  # every point "annotated" in the array
    out = tmp_path / "out" / "sub.csv"
    write_annotations(out, ["Images/skirt/a.jpg", "Images/blouse/b.jpg"], ["skirt", "blouse"], kps)
    with open(out, newline="") as f:
        rows = list(csv.reader(f))
    assert tuple(rows[0]) == HEADER
    for fields, cat in zip(rows[1:], ["skirt", "blouse"]):
        for name, cell in zip(KEYPOINTS, fields[2:]):
            assert cell == ("10_21_1" if name in CATEGORY_KEYPOINTS[cat] else ABSENT_CELL), (cat, name)
    table, problems = read_annotations(out)
    assert problems == [] and list(table.image_id) == ["Images/skirt/a.jpg", "Images/blouse/b.jpg"]
    assert not [p for p in out.parent.iterdir() if p.name != "sub.csv"]  # no temporary left behind


def test_write_read_round_trip(tmp_path):
    rng = np.random.default_rng(2)
    cats = ["blouse", "outwear", "dress", "skirt", "trousers"]
    kps = np.stack([random_keypoints(c, 512, 340, rng, occluded=0.3) for c in cats])
    ids = [f"Images/{c}/{i}.jpg" for i, c in enumerate(cats)]
    write_annotations(tmp_path / "a.csv", ids, cats, kps)
    table, problems = read_annotations(tmp_path / "a.csv")
    assert problems == []
    np.testing.assert_array_equal(table.keypoints, kps)


def test_test_list_round_trip_and_bad_category(tmp_path):
    ids, cats = ["Images/dress/x.jpg", "Images/skirt/y.jpg"], ["dress", "skirt"]
    write_test_list(tmp_path / "test.csv", ids, cats)
    assert (tmp_path / "test.csv").read_text().splitlines()[0] == ",".join(TEST_HEADER)
    assert read_test_list(tmp_path / "test.csv") == (ids, cats)
    write_csv(tmp_path / "bad.csv", [["Images/a.jpg", "dress"], ["Images/b.jpg", "hat"]], TEST_HEADER)
    with pytest.raises(ValueError, match="row 3"):
        read_test_list(tmp_path / "bad.csv")


def test_discover_train_sources(tmp_path):
    for rel in ("train/Annotations/train.csv", "train_warm/Annotations/annotations.csv",
                "test/Annotations/test.csv", "test/test.csv"):
        write_csv(tmp_path / rel, [])
    (tmp_path / "train" / "Images").mkdir()
    found = discover_train_sources(tmp_path)
    assert [(n, d, c) for n, d, c in found] == [
        ("train", tmp_path / "train", tmp_path / "train/Annotations/train.csv"),
        ("train_warm", tmp_path / "train_warm", tmp_path / "train_warm/Annotations/annotations.csv")]
    assert discover_train_sources(tmp_path / "nothing") == []
