"""Keypoint metadata of the FashionAI task: the single source of truth.

Everything else (flip tables, per-category channel lists, NE normalizers,
CSV column order) is derived from the declarations in this module.
"""
from __future__ import annotations

from typing import Dict, List, Tuple

#: The 24 keypoints, in the column order of the Tianchi CSV files.
KEYPOINTS: Tuple[str, ...] = (
    "neckline_left", "neckline_right", "center_front", "shoulder_left", "shoulder_right",
    "armpit_left", "armpit_right", "waistline_left", "waistline_right",
    "cuff_left_in", "cuff_left_out", "cuff_right_in", "cuff_right_out",
    "top_hem_left", "top_hem_right", "waistband_left", "waistband_right",
    "hemline_left", "hemline_right", "crotch",
    "bottom_left_in", "bottom_left_out", "bottom_right_in", "bottom_right_out",
)
NUM_KEYPOINTS = len(KEYPOINTS)
KEYPOINT_INDEX: Dict[str, int] = {name: i for i, name in enumerate(KEYPOINTS)}

#: The five garment categories, in a fixed order.
CATEGORIES: Tuple[str, ...] = ("blouse", "outwear", "dress", "skirt", "trousers")

#: Keypoints annotated for each category (subset of KEYPOINTS, CSV order kept).
CATEGORY_KEYPOINTS: Dict[str, Tuple[str, ...]] = {
    "blouse": (
        "neckline_left", "neckline_right", "center_front", "shoulder_left", "shoulder_right",
        "armpit_left", "armpit_right", "cuff_left_in", "cuff_left_out", "cuff_right_in",
        "cuff_right_out", "top_hem_left", "top_hem_right",
    ),
    "outwear": (
        "neckline_left", "neckline_right", "shoulder_left", "shoulder_right",
        "armpit_left", "armpit_right", "waistline_left", "waistline_right",
        "cuff_left_in", "cuff_left_out", "cuff_right_in", "cuff_right_out",
        "top_hem_left", "top_hem_right",
    ),
    "dress": (
        "neckline_left", "neckline_right", "center_front", "shoulder_left", "shoulder_right",
        "armpit_left", "armpit_right", "waistline_left", "waistline_right",
        "cuff_left_in", "cuff_left_out", "cuff_right_in", "cuff_right_out",
        "hemline_left", "hemline_right",
    ),
    "skirt": ("waistband_left", "waistband_right", "hemline_left", "hemline_right"),
    "trousers": (
        "waistband_left", "waistband_right", "crotch",
        "bottom_left_in", "bottom_left_out", "bottom_right_in", "bottom_right_out",
    ),
}

#: Per category, the two keypoints whose distance normalizes the error (NE).
NORMALIZER: Dict[str, Tuple[str, str]] = {
    "blouse": ("armpit_left", "armpit_right"),
    "outwear": ("armpit_left", "armpit_right"),
    "dress": ("armpit_left", "armpit_right"),
    "skirt": ("waistband_left", "waistband_right"),
    "trousers": ("waistband_left", "waistband_right"),
}


def flip_partner(name: str) -> str:
    """Name of the keypoint that `name` becomes under a horizontal flip.

    Every `_left` token swaps with `_right` (in/out kept); self-symmetric
    points (`center_front`, `crotch`) map to themselves.
    """
    tokens = name.split("_")
    swapped = ["right" if t == "left" else "left" if t == "right" else t for t in tokens]
    partner = "_".join(swapped)
    if partner not in KEYPOINT_INDEX:
        raise KeyError(f"flip partner {partner!r} of {name!r} is not a keypoint")
    return partner


#: FLIP_INDEX[k] is the index of the keypoint that k becomes after a flip (24 points).
FLIP_INDEX: Tuple[int, ...] = tuple(KEYPOINT_INDEX[flip_partner(n)] for n in KEYPOINTS)


def category_indices(category: str) -> List[int]:
    """Indices into KEYPOINTS (CSV order) of the keypoints of `category`."""
    return [KEYPOINT_INDEX[n] for n in CATEGORY_KEYPOINTS[category]]


def category_flip_index(category: str) -> List[int]:
    """Flip permutation in the category's own channel order.

    A model for `category` predicts len(CATEGORY_KEYPOINTS[category]) channels;
    channel c of a flipped image corresponds to channel result[c] of the original.
    """
    names = CATEGORY_KEYPOINTS[category]
    local = {n: i for i, n in enumerate(names)}
    return [local[flip_partner(n)] for n in names]


def normalizer_local_indices(category: str) -> Tuple[int, int]:
    """Positions of the normalizer pair in the category's channel order."""
    names = CATEGORY_KEYPOINTS[category]
    a, b = NORMALIZER[category]
    return names.index(a), names.index(b)


def _check_metadata() -> None:
    assert set(CATEGORY_KEYPOINTS) == set(CATEGORIES) == set(NORMALIZER)
    for cat, names in CATEGORY_KEYPOINTS.items():
        assert all(n in KEYPOINT_INDEX for n in names), cat
        assert list(names) == sorted(names, key=KEYPOINT_INDEX.__getitem__), cat
        assert set(NORMALIZER[cat]) <= set(names), cat
        assert all(flip_partner(n) in names for n in names), cat
    assert all(FLIP_INDEX[FLIP_INDEX[i]] == i for i in range(NUM_KEYPOINTS))


_check_metadata()
