"""Colours and surfaces: fabric patterns, low-frequency shading, folds, backdrops.

All arrays are float32 BGR in image pixels (0..255), shaped (h, w, 3) for
colours and (h, w) for multiplicative shading fields around 1.
"""
from __future__ import annotations

from typing import Optional, Tuple

import cv2
import numpy as np

_SHIFT = 4                      # sub-pixel bits for cv2 drawing
_SCALE = float(1 << _SHIFT)


def colour(rng: np.random.Generator, lum: float, sat: Optional[float] = None) -> np.ndarray:
    """A BGR colour (3,) whose channel mean is about `lum`."""
    hue = rng.uniform(-1.0, 1.0, 3)
    hue -= hue.mean()
    sat = rng.uniform(0.0, 90.0) if sat is None else sat
    return np.clip(lum + hue / (np.abs(hue).max() + 1e-9) * sat, 0, 255)


def texture(rng: np.random.Generator, h: int, w: int, base: np.ndarray, contrast: float,
            origin: Tuple[int, int] = (0, 0), span: float = 512.0) -> np.ndarray:
    """(h, w, 3) float32 fabric pattern around colour `base` (BGR) for the image box at `origin`.

    One of solid, stripes, checks, dots, smooth noise, gradient; the second
    colour stays within about `contrast` of the base brightness. Periodic
    patterns are laid out in image pixels (period a fraction of `span`), so two
    boxes painted from equal RNG states continue the same pattern.
    """
    kind = rng.choice(["solid", "stripes", "checks", "dots", "noise", "gradient"],
                      p=[0.35, 0.18, 0.12, 0.1, 0.13, 0.12])
    other = colour(rng, float(base.mean()) + rng.uniform(-contrast, contrast)).astype(np.float32)
    base32 = base.astype(np.float32)
    if kind == "solid":
        return np.broadcast_to(base32, (h, w, 3)).copy()
    if kind == "noise":
        small = rng.uniform(0, 1, (int(rng.integers(3, 12)),) * 2).astype(np.float32)
        t = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    else:
        yy, xx = np.mgrid[origin[1]:origin[1] + h, origin[0]:origin[0] + w].astype(np.float32)
        ang = rng.uniform(0, np.pi)
        period = rng.uniform(0.02, 0.08) * span + 2.0
        uu = xx * np.cos(ang) + yy * np.sin(ang)
        if kind == "stripes":
            t = (np.mod(uu, period) < period * rng.uniform(0.3, 0.6)).astype(np.float32)
        elif kind == "checks":
            vv = -xx * np.sin(ang) + yy * np.cos(ang)
            t = ((np.floor(uu / period) + np.floor(vv / period)) % 2).astype(np.float32)
        elif kind == "dots":
            vv = -xx * np.sin(ang) + yy * np.cos(ang)
            du, dv = np.mod(uu, period) - period / 2, np.mod(vv, period) - period / 2
            t = (du * du + dv * dv < (period * rng.uniform(0.15, 0.35)) ** 2).astype(np.float32)
        else:
            t = (uu - uu.min()) / (np.ptp(uu) + 1e-6)
    return base32 + (other - base32) * t[..., None]


def smooth_field(rng: np.random.Generator, h: int, w: int, amplitude: float,
                 cells: Tuple[int, int] = (2, 6)) -> np.ndarray:
    """(h, w) float32 low-frequency field 1 + about +/-amplitude (shading)."""
    n = int(rng.integers(*cells))
    small = rng.uniform(-amplitude, amplitude, (n, n)).astype(np.float32)
    return 1.0 + cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)


def folds(rng: np.random.Generator, h: int, w: int, n: int, strength: float) -> np.ndarray:
    """(h, w) float32 multiplicative fold shading: blurred dark and light creases around 1."""
    layer = np.zeros((h, w), np.float32)
    m = max(min(h, w), 8)
    for _ in range(n):
        p = rng.uniform(0, 1, 2) * (w, h)
        ang = rng.normal(np.pi / 2, 0.5)
        length = rng.uniform(0.2, 0.8) * max(h, w)
        q = p + length * np.array([np.cos(ang), np.sin(ang)])
        mid = (p + q) / 2 + rng.normal(0, 0.08 * m, 2)
        pts = np.array([p, mid, q])
        cv2.polylines(layer, [np.round(pts * _SCALE).astype(np.int32)], False,
                      float(rng.choice([-1.0, 1.0]) * rng.uniform(0.4, 1.0)),
                      max(1, int(m * rng.uniform(0.01, 0.04))), cv2.LINE_AA, _SHIFT)
    sigma = max(1.0, m * rng.uniform(0.012, 0.03))
    return 1.0 + strength * cv2.GaussianBlur(layer, (0, 0), sigma)


def background(rng: np.random.Generator, h: int, w: int, lum: float, clutter: int) -> np.ndarray:
    """(h, w, 3) float32 backdrop around brightness `lum`: gradient, blotches, `clutter` shapes."""
    small = np.array([[colour(rng, lum + rng.uniform(-18, 18), rng.uniform(0, 50))
                       for _ in range(2)] for _ in range(2)], dtype=np.float32)
    img = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    img *= smooth_field(rng, h, w, 0.12, (3, 10))[..., None]
    m = min(h, w)
    for _ in range(clutter):
        col = tuple(float(v) for v in colour(rng, lum + rng.uniform(-35, 35)))
        kind = rng.integers(0, 4)
        p = tuple(int(v) for v in rng.uniform(0, 1, 2) * (w, h))
        q = tuple(int(v) for v in rng.uniform(0, 1, 2) * (w, h))
        if kind == 0:
            cv2.line(img, p, q, col, int(rng.integers(1, 6)), cv2.LINE_AA)
        elif kind == 1:
            cv2.rectangle(img, p, q, col, -1 if rng.random() < 0.5 else int(rng.integers(1, 4)))
        elif kind == 2:
            cv2.circle(img, p, int(rng.uniform(0.02, 0.15) * m), col, -1, cv2.LINE_AA)
        else:
            pts = (rng.uniform(0, 1, (int(rng.integers(3, 6)), 2)) * (w, h)).astype(np.int32)
            cv2.polylines(img, [pts], False, col, int(rng.integers(1, 4)), cv2.LINE_AA)
    if clutter:
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.5, 2.0))
    return img
