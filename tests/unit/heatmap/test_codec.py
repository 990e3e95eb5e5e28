"""Coordinate frames and the heatmap codec (pipeline/heatmap/codec.py)."""
from __future__ import annotations

import numpy as np
import pytest

from pipeline import frames
from pipeline.heatmap import codec

H, W = 24, 32  # non-square heatmaps: encode takes shape (H, W)


@pytest.mark.parametrize("width,height,size,expected", [
    (340, 512, 128, (85 / 340, 128 / 512, 21, 0)),
    (512, 300, 128, (128 / 512, 75 / 300, 0, 26)),
    (512, 512, 128, (0.25, 0.25, 0, 0)),
    (300, 200, 64, (64 / 300, 43 / 200, 0, 10)),
])
def test_letterbox_params_hand_computed(width, height, size, expected):
    p = frames.letterbox_params(width, height, size)
    np.testing.assert_allclose(p, expected)
    new_w, new_h = frames.resized_shape(p, width, height)
    assert max(new_w, new_h) == size
    assert p[2] + new_w <= size and p[3] + new_h <= size


@pytest.mark.parametrize("width,height", [(340, 512), (512, 300), (400, 400), (1024, 700)])
def test_orig_input_round_trip_and_edges(width, height):
    size = 128
    p = frames.letterbox_params(width, height, size)
    rng = np.random.default_rng(0)
    xy = rng.uniform(-0.5, [width - 0.5, height - 0.5], size=(50, 2))
    back = frames.input_to_orig(frames.orig_to_input(xy, p), p)
    np.testing.assert_allclose(back, xy, atol=1e-9)
    # the image's outer edges land on the letterbox's pixel edges
    new_w, new_h = frames.resized_shape(p, width, height)
    corners = frames.orig_to_input(np.array([[-0.5, -0.5], [width - 0.5, height - 0.5]]), p)
    np.testing.assert_allclose(corners, [[p[2] - 0.5, p[3] - 0.5], [p[2] + new_w - 0.5, p[3] + new_h - 0.5]])
    # the pixel-centre convention: original centre maps to the letterbox content's centre
    centre = frames.orig_to_input(np.array([(width - 1) / 2, (height - 1) / 2]), p)
    np.testing.assert_allclose(centre, [p[2] + (new_w - 1) / 2, p[3] + (new_h - 1) / 2])


def test_input_cell_round_trip_hand_computed():
    # stride 4: input pixels 0..3 form cell 0, whose centre is input 1.5
    assert codec.input_to_cell(np.array([1.5, 5.5]), 4).tolist() == [0.0, 1.0]
    assert codec.cell_to_input(np.array([0.0, 31.0]), 4).tolist() == [1.5, 125.5]
    xy = np.random.default_rng(1).uniform(-0.5, 127.5, (20, 2))
    np.testing.assert_allclose(codec.cell_to_input(codec.input_to_cell(xy, 4), 4), xy)


def test_encode_shape_peak_and_weight():
    uv = np.array([[5.0, 7.0], [20.0, 3.0], [10.0, 10.0]])
    hm = codec.encode(uv, np.array([1, 1, 0]), (H, W), 1.5)
    assert hm.shape == (H, W, 3) and hm.dtype == np.float32
    assert hm[7, 5, 0] == pytest.approx(1.0) and hm[3, 20, 1] == pytest.approx(1.0)
    assert np.unravel_index(hm[..., 0].argmax(), (H, W)) == (7, 5)
    assert (hm[..., 2] == 0).all()
    assert hm[7, 6, 0] == pytest.approx(np.exp(-1 / (2 * 1.5 ** 2)), rel=1e-6)


def _random_uv(rng, n, margin):
    return np.stack([rng.uniform(margin, W - 1 - margin, n), rng.uniform(margin, H - 1 - margin, n)], -1)


@pytest.mark.parametrize("sigma", [1.0, 1.5, 2.0])
def test_encode_decode_dark_sub_cell(sigma):
    rng = np.random.default_rng(2)
    uv = _random_uv(rng, 64, margin=5)
    hm = codec.encode(uv, np.ones(len(uv)), (H, W), sigma)[None]
    dec, score = codec.decode(hm, "dark", sigma)
    assert dec.shape == (1, 64, 2) and score.shape == (1, 64)
    err = np.hypot(*(dec[0] - uv).T)
    assert err.max() < 0.02, err.max()


def test_refinements_ranked_none_quarter_dark():
    rng = np.random.default_rng(3)
    uv = _random_uv(rng, 200, margin=3)
    hm = codec.encode(uv, np.ones(len(uv)), (H, W), 1.5)[None]
    errs = {r: np.hypot(*(codec.decode(hm, r, 1.5)[0][0] - uv).T).mean() for r in ("none", "quarter", "dark")}
    assert errs["quarter"] < 0.75 * errs["none"]
    assert errs["dark"] < 0.1
    assert errs["dark"] < errs["quarter"]
    none_uv = codec.decode(hm, "none")[0][0]
    assert (none_uv == np.round(none_uv)).all()
    np.testing.assert_array_equal(none_uv, np.round(uv))  # argmax is the nearest cell


def test_dark_near_the_border_no_worse_than_argmax():
    """Points one to three cells from the border: refinement must still help."""
    rng = np.random.default_rng(4)
    uv = np.concatenate([
        np.stack([rng.uniform(1, 3, 50), rng.uniform(4, H - 5, 50)], -1),          # near the left edge
        np.stack([rng.uniform(4, W - 5, 50), rng.uniform(H - 4, H - 2, 50)], -1),  # near the bottom edge
    ])
    for sigma in (1.5, 2.0):
        hm = codec.encode(uv, np.ones(len(uv)), (H, W), sigma)[None]
        err = {r: np.hypot(*(codec.decode(hm, r, sigma)[0][0] - uv).T) for r in ("none", "dark")}
        assert err["dark"].mean() < err["none"].mean(), (sigma, err["dark"].mean(), err["none"].mean())
        assert err["dark"].max() < 0.75, (sigma, err["dark"].max())


@pytest.mark.parametrize("refine", ["none", "quarter", "dark"])
def test_decode_score_is_the_peak(refine):
    rng = np.random.default_rng(5)
    uv = _random_uv(rng, 6, margin=2)
    amp = rng.uniform(0.2, 0.9, 6).astype(np.float32)
    hm = (codec.encode(uv, np.ones(6), (H, W), 1.5) * amp)[None]
    hm = np.concatenate([hm, 0.5 * hm])  # batch of two
    _, score = codec.decode(hm, refine)
    np.testing.assert_allclose(score, hm.max(axis=(1, 2)), rtol=1e-6)


def test_decode_unknown_refine():
    with pytest.raises(ValueError):
        codec.decode(np.zeros((1, 4, 4, 1)), "bilinear")


@pytest.mark.parametrize("width,height", [(340, 512), (512, 300)])
def test_decode_to_original_inverts_the_full_chain(width, height):
    size, stride, sigma = 128, 4, 1.5
    p = frames.letterbox_params(width, height, size)
    rng = np.random.default_rng(6)
    xy = rng.uniform([0.15 * width, 0.15 * height], [0.85 * width, 0.85 * height], size=(40, 2))
    uv = codec.input_to_cell(frames.orig_to_input(xy, p), stride)
    hs = size // stride
    hm = codec.encode(uv, np.ones(len(uv)), (hs, hs), sigma)[None]
    back, score = codec.decode_to_original(hm, p[None], stride, "dark", sigma)
    scale = min(p[0], p[1])
    err = np.hypot(*(back[0] - xy).T)
    assert err.max() < 0.1 * stride / scale, (err.max(), 0.1 * stride / scale)
    assert score.shape == (1, 40)
    np.testing.assert_allclose(codec.cells_to_original(uv[None], p[None], stride)[0], xy, atol=1e-9)


def test_input_flip_is_heatmap_column_reversal():
    size, stride = 128, 4
    hs = size // stride
    rng = np.random.default_rng(7)
    xy = rng.uniform(-0.5, size - 0.5, (10, 2))
    flipped = xy.copy()
    flipped[:, 0] = size - 1 - xy[:, 0]
    uv, uv_f = codec.input_to_cell(xy, stride), codec.input_to_cell(flipped, stride)
    np.testing.assert_allclose(uv_f[:, 0], hs - 1 - uv[:, 0])
    hm = codec.encode(uv, np.ones(10), (hs, hs), 1.5)
    hm_f = codec.encode(uv_f, np.ones(10), (hs, hs), 1.5)
    np.testing.assert_allclose(hm_f, hm[:, ::-1], atol=1e-6)
    # and decoding a column-reversed heatmap gives W-1-u (non-square map)
    uv2 = _random_uv(rng, 8, margin=4)
    hm2 = codec.encode(uv2, np.ones(8), (H, W), 1.5)[None]
    d, _ = codec.decode(hm2, "dark")
    d_rev, _ = codec.decode(np.ascontiguousarray(hm2[:, :, ::-1]), "dark")
    np.testing.assert_allclose(d_rev[..., 0], W - 1 - d[..., 0], atol=1e-4)
    np.testing.assert_allclose(d_rev[..., 1], d[..., 1], atol=1e-4)


def test_inside():
    uv = np.array([[-0.5, 0], [-0.6, 0], [W - 0.5, H - 0.5], [W - 0.4, 3], [3, H - 0.4]])
    assert codec.inside(uv, (H, W)).tolist() == [True, False, True, False, False]
