"""Training augmentation (pipeline/augment.py): flips, affine warps, keypoints following the image."""
from __future__ import annotations

import numpy as np
import pytest

from pipeline import augment
from pipeline.heatmap import codec
from pipeline.keypoints import CATEGORY_KEYPOINTS, category_flip_index

S = 64


def _sample(category, seed=0):
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, size=(S, S, 3), dtype=np.uint8)
    k = len(CATEGORY_KEYPOINTS[category])
    xy = rng.uniform(2, S - 3, size=(k, 2))
    valid = rng.random(k) > 0.2
    return img, xy, valid


@pytest.mark.parametrize("category", ["blouse", "trousers", "skirt"])
def test_flip_twice_is_identity(category):
    img, xy, valid = _sample(category)
    fi = category_flip_index(category)
    img1, xy1, valid1 = augment.flip_sample(img, xy, valid, fi)
    np.testing.assert_array_equal(img1, img[:, ::-1])
    img2, xy2, valid2 = augment.flip_sample(img1, xy1, valid1, fi)
    np.testing.assert_array_equal(img2, img)
    np.testing.assert_allclose(xy2, xy, atol=1e-9)
    np.testing.assert_array_equal(valid2, valid)


def test_flip_swaps_channels_and_mirrors_x():
    img, xy, valid = _sample("trousers")
    fi = category_flip_index("trousers")
    names = CATEGORY_KEYPOINTS["trousers"]
    _, xy1, valid1 = augment.flip_sample(img, xy, valid, fi)
    left, right = names.index("bottom_left_in"), names.index("bottom_right_in")
    # the new left point is the mirrored old right point
    np.testing.assert_allclose(xy1[left], [S - 1 - xy[right, 0], xy[right, 1]])
    assert valid1[left] == valid[right]
    crotch = names.index("crotch")
    np.testing.assert_allclose(xy1[crotch], [S - 1 - xy[crotch, 0], xy[crotch, 1]])


@pytest.mark.parametrize("category", ["dress", "trousers"])
def test_flipped_left_heatmap_is_mirrored_right_heatmap(category):
    stride, sigma = 4, 1.5
    hs = S // stride
    img, xy, _ = _sample(category, seed=1)
    valid = np.ones(len(xy), bool)
    fi = category_flip_index(category)
    names = CATEGORY_KEYPOINTS[category]
    _, xy_f, valid_f = augment.flip_sample(img, xy, valid, fi)
    hm = codec.encode(codec.input_to_cell(xy, stride), valid, (hs, hs), sigma)
    hm_f = codec.encode(codec.input_to_cell(xy_f, stride), valid_f, (hs, hs), sigma)
    for c, name in enumerate(names):
        partner = names[fi[c]]
        if "left" in name.split("_"):
            assert "right" in partner.split("_")
        np.testing.assert_allclose(hm_f[:, :, c], hm[:, ::-1, fi[c]], atol=1e-6, err_msg=name)


def _dot_image(x, y, r=2):
    img = np.zeros((S, S, 3), np.uint8)
    img[y - r:y + r + 1, x - r:x + r + 1] = 255
    return img


def _centroid(img):
    w = img[..., 0].astype(np.float64)
    ys, xs = np.mgrid[0:img.shape[0], 0:img.shape[1]]
    return np.array([(w * xs).sum() / w.sum(), (w * ys).sum() / w.sum()])


@pytest.mark.parametrize("seed", range(6))
def test_random_affine_keypoints_follow_the_image(seed):
    rng = np.random.default_rng(seed)
    m, flip = augment.random_affine(rng, S, rotation=30, scale_min=0.8, scale_max=1.2, translate=0.08,
                                    flip_prob=0.5)
    assert m.shape == (2, 3)
    dot = np.array([[22.0, 37.0]])
    img = _dot_image(22, 37)
    warped, xy, valid = augment.apply_geometry(img, dot, np.array([True]), m, flip, [0])
    assert warped.shape == img.shape and warped.dtype == np.uint8
    expected = augment.transform_points(dot, m)[0]
    np.testing.assert_allclose(xy[0], expected)
    np.testing.assert_allclose(_centroid(warped), expected, atol=0.25)
    assert valid[0]


def test_random_affine_flip_prob_one_mirrors():
    rng = np.random.default_rng(0)
    m, flip = augment.random_affine(rng, S, 0, 1, 1, 0, flip_prob=1.0)
    assert flip
    np.testing.assert_allclose(m, augment.flip_matrix(S)[:2], atol=1e-12)
    m, flip = augment.random_affine(rng, S, 0, 1, 1, 0, flip_prob=0.0)
    assert not flip
    np.testing.assert_allclose(m, np.eye(3)[:2], atol=1e-12)


def test_points_pushed_outside_become_invalid():
    shift = np.array([[1.0, 0.0, 20.0], [0.0, 1.0, -10.0]])  # 20 px right, 10 px up
    xy = np.array([[10.0, 30.0], [50.0, 30.0], [30.0, 5.0], [30.0, 40.0]])
    valid = np.array([True, True, True, False])
    img = np.zeros((S, S, 3), np.uint8)
    _, new_xy, new_valid = augment.apply_geometry(img, xy, valid, shift, False, [0, 1, 2, 3])
    np.testing.assert_allclose(new_xy, [[30, 20], [70, 20], [50, -5], [50, 30]])
    assert new_valid.tolist() == [True, False, False, False]  # absent stays absent


def test_transform_points_hand_computed():
    m = np.array([[0.0, -1.0, 10.0], [1.0, 0.0, 0.0]])  # rotate 90° then shift
    np.testing.assert_allclose(augment.transform_points(np.array([[1.0, 2.0], [3.0, 0.0]]), m),
                               [[8.0, 1.0], [10.0, 3.0]])


def test_color_jitter():
    img, _, _ = _sample("skirt")
    rng = np.random.default_rng(0)
    assert augment.color_jitter(rng, img, 0.0) is img
    out = augment.color_jitter(rng, img, 0.3)
    assert out.shape == img.shape and out.dtype == np.uint8
    gray = np.full((S, S, 3), 100, np.uint8)
    out = augment.color_jitter(np.random.default_rng(1), gray, 0.2)
    assert np.ptp(out) == 0 and 80 <= out[0, 0, 0] <= 120  # a flat gray stays flat, brightness ±20 %
