"""Flip TTA: mirrored predictions, flipped back, land on the original's frame and channels."""
import numpy as np

from pipeline.heatmap import codec, tta
from pipeline.heatmap.inference import peak_features
from pipeline.keypoints import CATEGORY_KEYPOINTS, category_flip_index

H, W, SIGMA = 24, 32, 1.5


def heatmaps_of(uv):
    """(K, 2) cells → (1, H, W, K) Gaussian maps."""
    return codec.encode(uv, np.ones(len(uv)), (H, W), SIGMA)[None]


def mirror_points(uv, flip_index):
    """Keypoints of the mirrored image: x → W-1-x and left/right channels swapped."""
    out = uv[flip_index].copy()
    out[:, 0] = W - 1 - out[:, 0]
    return out


def test_flip_back_heatmaps_equals_original():
    flip = category_flip_index("trousers")
    uv = np.random.default_rng(0).uniform([2, 2], [W - 3, H - 3], size=(7, 2))
    mirrored = heatmaps_of(mirror_points(uv, flip))
    np.testing.assert_allclose(tta.flip_back_heatmaps(mirrored, flip), heatmaps_of(uv), atol=1e-6)


def test_flip_back_cells_matches_decoded_flipped_back_maps():
    flip = category_flip_index("blouse")
    uv = np.random.default_rng(1).uniform([2, 2], [W - 3, H - 3], size=(13, 2))
    mirrored = heatmaps_of(mirror_points(uv, flip))
    decoded_mirror, _ = codec.decode(mirrored, "dark", SIGMA)
    back = tta.flip_back_cells(decoded_mirror, W, flip)[0]
    np.testing.assert_allclose(back, uv, atol=0.05)
    # channels really swapped: left points stay left of their right partners after the round trip
    names = CATEGORY_KEYPOINTS["blouse"]
    left, right = names.index("cuff_left_in"), names.index("cuff_right_in")
    assert np.sign(back[left, 0] - back[right, 0]) == np.sign(uv[left, 0] - uv[right, 0])


def test_merges_average():
    a, b = np.zeros((1, H, W, 2)), np.ones((1, H, W, 2))
    np.testing.assert_allclose(tta.merge_heatmaps(a, b), 0.5)
    np.testing.assert_allclose(tta.merge_coords(np.zeros((1, 2, 2)), np.full((1, 2, 2), 4.0)), 2.0)


def test_peak_features_find_the_second_peak():
    uv = np.array([[10.0, 10.0]])
    maps = heatmaps_of(uv) + 0.5 * heatmaps_of(np.array([[20.0, 14.0]]))
    decoded, score = codec.decode(maps, "dark", SIGMA)
    f = peak_features(maps, decoded)
    np.testing.assert_allclose(f["peak2_dist"][0, 0], np.hypot(10, 4), atol=0.5)
    assert 0.45 < f["peak2_val"][0, 0] < 0.55
    assert f["sharpness"][0, 0] > 0.3
    single = peak_features(heatmaps_of(uv), decoded)
    assert single["peak2_val"][0, 0] < f["peak2_val"][0, 0]
