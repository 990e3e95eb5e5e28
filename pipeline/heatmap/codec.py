"""The heatmap codec (keypoints ↔ Gaussian heatmaps) and the heatmap-cell frame.

Three frames, all with pixel-centre convention (pixel i covers [i-0.5, i+0.5]):

* original pixels — the image as shipped (W × H);
* input pixels — the letterboxed square model input / image cache (S × S),
  `input = (orig + 0.5) * scale - 0.5 + offset`, per axis;
* heatmap cells — (S / stride) cells a side,
  `cell = (input + 0.5) / stride - 0.5`.

With these conventions a horizontal flip of the input (x → S-1-x) is exactly
a column reversal of the heatmap (u → W-1-u): no one-cell shift is needed.
This module (cells ↔ input pixels, heatmaps) and pipeline/frames.py (original ↔ input pixels)
are the only places that convert between frames; `Codec` binds them to one config.
"""
from __future__ import annotations

import dataclasses
from typing import Tuple

import numpy as np

from pipeline.frames import input_to_orig
from pipeline.names import REFINES


def input_to_cell(xy: np.ndarray, stride: int) -> np.ndarray:
    """Input pixels → heatmap cells."""
    return (np.asarray(xy, dtype=np.float64) + 0.5) / stride - 0.5


def cell_to_input(uv: np.ndarray, stride: int) -> np.ndarray:
    """Heatmap cells → input pixels."""
    return (np.asarray(uv, dtype=np.float64) + 0.5) * stride - 0.5


# --------------------------------------------------------------------------- encode


def encode(uv: np.ndarray, weight: np.ndarray, shape: Tuple[int, int], sigma: float) -> np.ndarray:
    """Gaussian heatmaps for K keypoints.

    uv: (K, 2) keypoints in heatmap cells (x, y); weight: (K,) 0 for points not
    supervised (their map is all zero); shape: (H, W) of the heatmap.
    Returns float32 (H, W, K) with peak 1 at each supervised point.
    """
    h, w = shape
    uv = np.asarray(uv, dtype=np.float32)
    xs = np.arange(w, dtype=np.float32)
    ys = np.arange(h, dtype=np.float32)
    gx = np.exp(-((xs[None, :] - uv[:, :1]) ** 2) / (2 * sigma ** 2))  # (K, W)
    gy = np.exp(-((ys[None, :] - uv[:, 1:2]) ** 2) / (2 * sigma ** 2))  # (K, H)
    maps = gy[:, :, None] * gx[:, None, :] * (np.asarray(weight) > 0)[:, None, None]
    return np.ascontiguousarray(maps.transpose(1, 2, 0), dtype=np.float32)


def encode_tensor(uv, weight, shape: Tuple[int, int], sigma: float):
    """`encode` for a batch, in Keras ops (runs on the accelerator inside the train step).

    uv: (B, K, 2) keypoints in heatmap cells; weight: (B, K). Returns float32
    (B, H, W, K), equal to stacking `encode` per sample (config train.targets: device).
    """
    from keras import ops

    h, w = shape
    uv = ops.cast(uv, "float32")
    xs = ops.arange(w, dtype="float32")
    ys = ops.arange(h, dtype="float32")
    gx = ops.exp(-ops.square(xs[None, None, :] - uv[:, :, :1]) / (2 * sigma ** 2))   # (B, K, W)
    gy = ops.exp(-ops.square(ys[None, None, :] - uv[:, :, 1:2]) / (2 * sigma ** 2))  # (B, K, H)
    on = ops.cast(ops.greater(weight, 0), "float32")[:, :, None, None]
    maps = gy[:, :, :, None] * gx[:, :, None, :] * on                               # (B, K, H, W)
    return ops.transpose(maps, (0, 2, 3, 1))


def inside(uv: np.ndarray, shape: Tuple[int, int]) -> np.ndarray:
    """(K,) bool: keypoint (heatmap cells) lies within the heatmap."""
    h, w = shape
    uv = np.asarray(uv)
    return (uv[..., 0] >= -0.5) & (uv[..., 0] <= w - 0.5) & (uv[..., 1] >= -0.5) & (uv[..., 1] <= h - 0.5)


# --------------------------------------------------------------------------- decode


def _argmax_2d(hm: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """hm: (N, H, W, K) → integer x, y (N, K) of the maximum and its value."""
    n, h, w, k = hm.shape
    flat = hm.transpose(0, 3, 1, 2).reshape(n, k, h * w)
    idx = flat.argmax(-1)
    return idx % w, idx // w, np.take_along_axis(flat, idx[..., None], -1)[..., 0]


def _gather(hm_nkhw: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Values of hm (N, K, H, W) at clipped integer (x, y) of shape (N, K)."""
    n, k, h, w = hm_nkhw.shape
    xc, yc = np.clip(x, 0, w - 1), np.clip(y, 0, h - 1)
    ni, ki = np.meshgrid(np.arange(n), np.arange(k), indexing="ij")
    return hm_nkhw[ni, ki, yc, xc]


def _blurred_neighbourhood(hm_nhwk: np.ndarray, x: np.ndarray, y: np.ndarray, sigma: float) -> np.ndarray:
    """The 3×3 cells around (x, y) of every Gaussian-blurred map (DARK's distribution modulation).

    Equal to blurring each whole map (cv2.GaussianBlur, kernel 2·round(3σ)+1,
    zero padding) and reading the 3×3 neighbourhood, but only the (2r+3)²
    patch each result needs is read. Zero padding, as the DARK reference: mirror
    padding folds a border point's tail back onto it and drags the refined
    position by up to a cell, worse than no refinement at all.
    hm_nhwk: (N, H, W, K); x, y: (N, K) int. Returns (N, K, 3, 3) float64, [dy, dx].
    """
    import cv2

    r = int(round(3 * sigma))
    g = cv2.getGaussianKernel(2 * r + 1, sigma)[:, 0].astype(np.float64)
    pad = r + 1
    padded = np.pad(np.asarray(hm_nhwk, dtype=np.float32), ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    n, k = x.shape
    offs = np.arange(2 * r + 3)  # patch rows/columns y-1-r .. y+1+r, in padded coordinates y + offs
    ni = np.arange(n)[:, None, None, None]
    ki = np.arange(k)[None, :, None, None]
    patch = padded[ni, (y[..., None] + offs)[..., :, None], (x[..., None] + offs)[..., None, :], ki]
    patch = patch.astype(np.float64)  # (N, K, 2r+3, 2r+3)
    cols = np.stack([patch[..., i:i + 2 * r + 1] @ g for i in range(3)], -1)            # (N, K, 2r+3, 3)
    return np.stack([np.einsum("nkyx,y->nkx", cols[:, :, j:j + 2 * r + 1], g) for j in range(3)], -2)


def decode(heatmaps: np.ndarray, refine: str = "dark", sigma: float = 1.5) -> Tuple[np.ndarray, np.ndarray]:
    """Heatmaps → keypoints in heatmap cells, with sub-pixel refinement.

    heatmaps: (N, H, W, K). refine: "none" (integer argmax), "quarter" (a
    quarter cell toward the higher neighbour, as HRNet) or "dark" (a Newton
    step on the log of the blurred heatmap, as DARK).
    Returns uv (N, K, 2) float64 in heatmap cells and score (N, K) (peak value).
    """
    hm = np.asarray(heatmaps, dtype=np.float32)
    x, y, score = _argmax_2d(hm)
    uv = np.stack([x, y], -1).astype(np.float64)
    if refine == "none":
        return uv, score.astype(np.float64)
    nkhw = hm.transpose(0, 3, 1, 2)
    if refine == "quarter":
        dx = _gather(nkhw, x + 1, y) - _gather(nkhw, x - 1, y)
        dy = _gather(nkhw, x, y + 1) - _gather(nkhw, x, y - 1)
        uv += 0.25 * np.stack([np.sign(dx), np.sign(dy)], -1)
        return uv, score.astype(np.float64)
    if refine != "dark":
        raise ValueError(f"unknown refine {refine!r}; known: {', '.join(REFINES)}")
    logm = np.log(np.maximum(_blurred_neighbourhood(hm, x, y, sigma), 1e-10))  # (N, K, 3, 3)

    def at(ddx, ddy):
        return logm[..., 1 + ddy, 1 + ddx]

    c = at(0, 0)
    gx = 0.5 * (at(1, 0) - at(-1, 0))
    gy = 0.5 * (at(0, 1) - at(0, -1))
    hxx = at(1, 0) - 2 * c + at(-1, 0)
    hyy = at(0, 1) - 2 * c + at(0, -1)
    hxy = 0.25 * (at(1, 1) - at(1, -1) - at(-1, 1) + at(-1, -1))
    det = hxx * hyy - hxy ** 2
    ok = (det > 1e-12) & (hxx < 0) & (hyy < 0)  # a proper maximum: Hessian negative definite
    safe = np.where(ok, det, 1.0)
    off_x = -(hyy * gx - hxy * gy) / safe
    off_y = -(hxx * gy - hxy * gx) / safe
    offset = np.stack([off_x, off_y], -1)
    offset = np.where(ok[..., None], np.clip(offset, -1.0, 1.0), 0.0)
    h, w = hm.shape[1:3]
    border = (x == 0) | (y == 0) | (x == w - 1) | (y == h - 1)
    uv += np.where(border[..., None], 0.0, offset)
    return uv, score.astype(np.float64)


def decode_to_original(heatmaps: np.ndarray, params: np.ndarray, stride: int,
                       refine: str = "dark", sigma: float = 1.5) -> Tuple[np.ndarray, np.ndarray]:
    """Heatmaps (N, H, W, K) → keypoints (N, K, 2) in original pixels and scores (N, K).

    params: (N, 4) letterbox transform of each image (see letterbox_params).
    """
    uv, score = decode(heatmaps, refine, sigma)
    return cells_to_original(uv, params, stride), score


def cells_to_original(uv: np.ndarray, params: np.ndarray, stride: int) -> np.ndarray:
    """Heatmap cells (N, K, 2) → original pixels (N, K, 2); params (N, 4)."""
    return input_to_orig(cell_to_input(uv, stride), np.asarray(params)[:, None, :])


# --------------------------------------------------------------------------- test-time rescaling


def centre_scale_matrix(size: int, scale: float) -> np.ndarray:
    """(2, 3) affine, input pixels of a size×size input → input pixels of that input rescaled by
    `scale` about its centre ((size-1)/2, pixel-centre frame): x' = scale·(x - c) + c."""
    c = (size - 1) / 2.0
    return np.array([[scale, 0.0, c * (1 - scale)], [0.0, scale, c * (1 - scale)]])


def matrix_to_cells(matrix: np.ndarray, stride: int) -> np.ndarray:
    """An input-pixel affine (2, 3) expressed in heatmap cells (cell = (input + 0.5)/stride - 0.5)."""
    a, t = np.asarray(matrix, dtype=np.float64)[:, :2], np.asarray(matrix, dtype=np.float64)[:, 2]
    b = 0.5 / stride - 0.5
    return np.concatenate([a, (t / stride + b - a @ np.full(2, b))[:, None]], axis=1)


def warp_images(images: np.ndarray, matrices: np.ndarray, size: int) -> np.ndarray:
    """Images (N, S, S, C) uint8 warped by (N, 2, 3) affines into (N, size, size, C), bilinear,
    zero border (a 2:1 downscale at these pixel-centre frames averages 2×2 source pixels)."""
    import cv2

    images = np.asarray(images)
    out = np.zeros((len(images), size, size) + images.shape[3:], images.dtype)
    for i, (image, m) in enumerate(zip(images, matrices)):
        out[i] = cv2.warpAffine(np.ascontiguousarray(image), np.asarray(m, np.float64), (size, size),
                                flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                                borderValue=0).reshape(out.shape[1:])
    return out


def rescale_images(images: np.ndarray, scale: float) -> np.ndarray:
    """Images (N, S, S, C) uint8 rescaled by `scale` about their centre, same size, zero border
    (scale > 1 zooms in and crops, < 1 zooms out). Point x of an image lands at
    centre_scale_matrix(S, scale) @ x."""
    images = np.asarray(images)
    if scale == 1.0 or not len(images):
        return images
    size = images.shape[1]
    return warp_images(images, np.broadcast_to(centre_scale_matrix(size, scale), (len(images), 2, 3)), size)


def _linear_resampling(n: int, scale: float, shift: float) -> np.ndarray:
    """(n, n) matrix W with (W @ v)[u] = v linearly interpolated at scale·u + shift (zero outside)."""
    src = scale * np.arange(n) + shift
    lo = np.floor(src).astype(int)
    frac = src - lo
    w = np.zeros((n, n + 2))  # columns -1 .. n: out-of-range neighbours land in the padding columns
    rows = np.arange(n)
    np.add.at(w, (rows, np.clip(lo, -1, n) + 1), 1 - frac)
    np.add.at(w, (rows, np.clip(lo + 1, -1, n) + 1), frac)
    return w[:, 1:-1]


def maps_to_base(heatmaps: np.ndarray, scale: float, stride: int) -> np.ndarray:
    """Heatmaps (N, h, w, K) predicted on inputs rescaled by `scale` (rescale_images) → the base
    input's heatmap cells: the value at base cell u is the map at its rescaled cell (bilinear,
    zero where the rescaled input did not see the base input)."""
    hm = np.asarray(heatmaps, dtype=np.float32)
    if scale == 1.0:
        return hm
    h, w = hm.shape[1:3]
    if h * stride != w * stride:
        raise ValueError(f"maps_to_base: square heatmaps expected, got {h}×{w}")
    m = matrix_to_cells(centre_scale_matrix(h * stride, scale), stride)
    wy = _linear_resampling(h, m[1, 1], m[1, 2]).astype(np.float32)
    wx = _linear_resampling(w, m[0, 0], m[0, 2]).astype(np.float32)
    return np.einsum("yv,nvuk,xu->nyxk", wy, hm, wx, optimize=True)


def cells_to_base(uv: np.ndarray, scale: float, stride: int, size: int) -> np.ndarray:
    """Keypoints (..., 2) in heatmap cells of an input rescaled by `scale` → cells of the base input."""
    m = matrix_to_cells(centre_scale_matrix(size, scale), stride)
    return (np.asarray(uv, dtype=np.float64) - m[:, 2]) / np.diag(m[:, :2])


# --------------------------------------------------------------------------- the codec of a config


@dataclasses.dataclass(frozen=True)
class Codec:
    """The heatmap codec of one config, built once (`Codec.from_config`): every conversion that
    needs the stride, sigma or sub-pixel refinement goes through it, so no caller re-assembles them.

    stride: input pixels per heatmap cell; sigma: Gaussian sigma in cells; refine: none | quarter
    | dark; input_size: S of the S×S model input (heatmaps are S/stride cells a side).
    """

    stride: int
    sigma: float
    refine: str
    input_size: int

    @classmethod
    def from_config(cls, cfg) -> "Codec":
        return cls(cfg.model.stride, cfg.codec.sigma, cfg.codec.refine, cfg.model.input_size)

    @property
    def cells(self) -> int:
        """Heatmap side in cells."""
        return self.input_size // self.stride

    def to_cells(self, xy: np.ndarray) -> np.ndarray:
        """Input pixels (..., 2) → heatmap cells (..., 2)."""
        return input_to_cell(xy, self.stride)

    def encode(self, uv: np.ndarray, weight: np.ndarray) -> np.ndarray:
        """Cells (K, 2) and weights (K,) → target heatmaps (H, W, K) float32."""
        return encode(uv, weight, (self.cells, self.cells), self.sigma)

    def decode(self, heatmaps: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Heatmaps (N, H, W, K) → cells (N, K, 2) and scores (N, K)."""
        return decode(heatmaps, self.refine, self.sigma)

    def decode_to_original(self, heatmaps: np.ndarray, params: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Heatmaps (N, H, W, K) → original pixels (N, K, 2) and scores (N, K); params (N, 4)."""
        return decode_to_original(heatmaps, params, self.stride, self.refine, self.sigma)

    def to_original(self, uv: np.ndarray, params: np.ndarray) -> np.ndarray:
        """Cells (N, K, 2) → original pixels (N, K, 2); params (N, 4)."""
        return cells_to_original(uv, params, self.stride)

    def maps_to_base(self, heatmaps: np.ndarray, scale: float) -> np.ndarray:
        """Heatmaps of an input rescaled by `scale` → heatmaps of the base input (see maps_to_base)."""
        return maps_to_base(heatmaps, scale, self.stride)

    def cells_to_base(self, uv: np.ndarray, scale: float, size: int) -> np.ndarray:
        """Cells of an input rescaled by `scale` → cells of the base size×size input."""
        return cells_to_base(uv, scale, self.stride, size)
