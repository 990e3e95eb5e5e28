"""Keypoint metadata (pipeline/keypoints.py): names, category subsets, flip tables."""
from __future__ import annotations

import pytest

from pipeline import keypoints as kp

CSV_ORDER = """neckline_left neckline_right center_front shoulder_left shoulder_right
armpit_left armpit_right waistline_left waistline_right
cuff_left_in cuff_left_out cuff_right_in cuff_right_out
top_hem_left top_hem_right waistband_left waistband_right
hemline_left hemline_right crotch
bottom_left_in bottom_left_out bottom_right_in bottom_right_out""".split()


def test_24_names_in_csv_order():
    assert kp.KEYPOINTS == tuple(CSV_ORDER)
    assert kp.NUM_KEYPOINTS == 24
    assert [kp.KEYPOINT_INDEX[n] for n in CSV_ORDER] == list(range(24))
    assert kp.CATEGORIES == ("blouse", "outwear", "dress", "skirt", "trousers")


@pytest.mark.parametrize("category,count", [("blouse", 13), ("outwear", 14), ("dress", 15),
                                            ("skirt", 4), ("trousers", 7)])
def test_per_category_counts(category, count):
    names = kp.CATEGORY_KEYPOINTS[category]
    assert len(names) == count == len(set(names))
    assert kp.category_indices(category) == sorted(kp.category_indices(category))
    assert [kp.KEYPOINTS[i] for i in kp.category_indices(category)] == list(names)


def test_category_membership_from_the_task_table():
    ck = kp.CATEGORY_KEYPOINTS
    assert "center_front" in ck["blouse"] and "center_front" in ck["dress"]
    assert "center_front" not in ck["outwear"]
    assert "waistline_left" in ck["outwear"] and "waistline_left" not in ck["blouse"]
    assert "top_hem_left" in ck["blouse"] and "top_hem_left" not in ck["dress"]
    assert "hemline_left" in ck["dress"] and "hemline_left" in ck["skirt"]
    assert set(ck["skirt"]) == {"waistband_left", "waistband_right", "hemline_left", "hemline_right"}
    assert set(ck["trousers"]) == {"waistband_left", "waistband_right", "crotch", "bottom_left_in",
                                   "bottom_left_out", "bottom_right_in", "bottom_right_out"}


def test_normalizer_pairs():
    for cat in ("blouse", "outwear", "dress"):
        assert kp.NORMALIZER[cat] == ("armpit_left", "armpit_right")
    for cat in ("skirt", "trousers"):
        assert kp.NORMALIZER[cat] == ("waistband_left", "waistband_right")
    assert kp.normalizer_local_indices("skirt") == (0, 1)
    assert kp.normalizer_local_indices("blouse") == (5, 6)
    assert kp.normalizer_local_indices("outwear") == (4, 5)


def test_flip_index_is_an_involution_swapping_every_left_right_pair():
    fi = kp.FLIP_INDEX
    assert sorted(fi) == list(range(24))
    assert all(fi[fi[i]] == i for i in range(24))
    name = {n: kp.KEYPOINTS[fi[kp.KEYPOINT_INDEX[n]]] for n in kp.KEYPOINTS}
    expected = {
        "neckline_left": "neckline_right", "shoulder_left": "shoulder_right",
        "armpit_left": "armpit_right", "waistline_left": "waistline_right",
        "cuff_left_in": "cuff_right_in", "cuff_left_out": "cuff_right_out",
        "top_hem_left": "top_hem_right", "waistband_left": "waistband_right",
        "hemline_left": "hemline_right",
        "bottom_left_in": "bottom_right_in", "bottom_left_out": "bottom_right_out",
    }
    for left, right in expected.items():
        assert name[left] == right and name[right] == left
    assert name["center_front"] == "center_front"
    assert name["crotch"] == "crotch"
    # nothing else is fixed, and in/out never swap
    assert {n for n in kp.KEYPOINTS if name[n] == n} == {"center_front", "crotch"}
    for n in kp.KEYPOINTS:
        assert n.endswith("_in") == name[n].endswith("_in")


def test_flip_partner_rejects_non_keypoints():
    with pytest.raises(KeyError):
        kp.flip_partner("sleeve_left")


@pytest.mark.parametrize("category", kp.CATEGORIES)
def test_category_flip_index_consistent_with_flip_index(category):
    idx = kp.category_indices(category)
    local = kp.category_flip_index(category)
    assert sorted(local) == list(range(len(idx)))
    assert all(local[local[c]] == c for c in range(len(idx)))
    for c, k in enumerate(idx):
        assert idx[local[c]] == kp.FLIP_INDEX[k]


def test_category_flip_index_hand_checked():
    assert kp.category_flip_index("skirt") == [1, 0, 3, 2]
    # waistband_l, waistband_r, crotch, bottom_left_in, bottom_left_out, bottom_right_in, bottom_right_out
    assert kp.category_flip_index("trousers") == [1, 0, 2, 5, 6, 3, 4]
