"""Procedural synthetic FashionAI dataset, written in the real competition layout.

With no real data in `input/`, this is the default data set and the test bed
of the pipeline. Every image shows one garment of one of the five categories,
drawn with cv2 as a textured polygon with an outline on a cluttered background.
Its keypoints are corners of the garment's silhouette (neckline, shoulders,
armpits, cuffs, hems, waistline, waistband, crotch, trouser bottoms), so they
follow the garment's geometry and are locatable in the image.

Coordinate frames:

* *canonical frame*: the upright garment, x to the right, y down, the neck
  centre (tops) or the waistband centre (skirt, trousers) at the origin, about
  one unit per torso length. `_left` keypoints have the smaller x there.
* *image frame*: integer pixels of the written JPEG (the "original image
  pixels" of DESIGN.md). A per-image homography (rotation about +/-25 degrees,
  scale, translation, mild perspective jitter) maps canonical to image
  coordinates; keypoints are mapped exactly with the drawing.

Visibility follows the Tianchi convention: 1 visible, 0 covered by an
occluder (position still annotated), -1 outside the image (written
`-1_-1_-1`). Keypoints of other categories are always `-1_-1_-1`.

Layout written by `generate(out_dir, ...)`::

    out_dir/.synthetic                          JSON of the parameters (marker)
    out_dir/train/Images/<cat>/<hex>.jpg
    out_dir/train/Annotations/train.csv
    out_dir/train_warm/Images/<cat>/<hex>.jpg   only when warm_per_cat > 0
    out_dir/train_warm/Annotations/annotations.csv
    out_dir/test/Images/<cat>/<hex>.jpg
    out_dir/test/test.csv                       image_id,image_category
    out_dir/test/answers.csv                    ground truth, rows in test.csv order

Each image is drawn from its own RNG seeded with (seed, split, category,
index), so the output does not depend on the number of jobs.

CLI: python -m pipeline.synth --out DIR --train-per-cat N --test-per-cat M --seed S
     [--warm-per-cat W] [--jobs J]
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import shutil
import struct
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from .fsutil import write_text_atomic
from .keypoints import (CATEGORIES, CATEGORY_KEYPOINTS, KEYPOINT_INDEX, NORMALIZER,
                        NUM_KEYPOINTS, category_indices)
from .tianchi import read_annotations, read_test_list, write_annotations, write_test_list

#: Bump when the drawing changes, so that an existing synthetic set is regenerated.
GENERATOR_VERSION = 1
MARKER = ".synthetic"

#: Split name -> (RNG id, annotation CSV relative to out_dir).
SPLITS: Dict[str, Tuple[int, str]] = {
    "train": (0, "train/Annotations/train.csv"),
    "test": (1, "test/answers.csv"),
    "train_warm": (2, "train_warm/Annotations/annotations.csv"),
}
TEST_LIST = "test/test.csv"

#: Image sizes (width, height) and their probabilities: about 80 % are 512x512.
IMAGE_SIZES: Tuple[Tuple[int, int], ...] = (
    (512, 512), (340, 512), (512, 340), (384, 512), (512, 400), (400, 400), (256, 320))
IMAGE_SIZE_P: Tuple[float, ...] = (0.80, 0.05, 0.03, 0.04, 0.03, 0.03, 0.02)

JPEG_QUALITY = 90
_SHIFT = 4                      # sub-pixel bits for cv2 polygon drawing
_SCALE = float(1 << _SHIFT)
_BATCH = 25                     # images per joblib task


# --------------------------------------------------------------------------- shapes

@dataclasses.dataclass
class Garment:
    """An upright garment in the canonical frame.

    keypoints: name -> (x, y) canonical; exactly CATEGORY_KEYPOINTS[category].
    silhouette: (M, 2) closed outline (keypoints are vertices of it).
    regions: polygons filled with a shade of the garment (neck opening, bands).
    lines: open polylines drawn as seams/creases; dots: points drawn as buttons.
    """

    category: str
    keypoints: Dict[str, np.ndarray]
    silhouette: np.ndarray
    regions: List[np.ndarray] = dataclasses.field(default_factory=list)
    lines: List[np.ndarray] = dataclasses.field(default_factory=list)
    dots: List[np.ndarray] = dataclasses.field(default_factory=list)


def _p(x: float, y: float) -> np.ndarray:
    return np.array([x, y], dtype=np.float64)


def _bezier(p0: np.ndarray, ctrl: np.ndarray, p1: np.ndarray, n: int = 8) -> np.ndarray:
    """(n+1, 2) points of the quadratic Bezier p0 -> p1, both ends included."""
    t = np.linspace(0.0, 1.0, n + 1)[:, None]
    return (1 - t) ** 2 * p0 + 2 * (1 - t) * t * ctrl + t ** 2 * p1


def _bulge(p0: np.ndarray, p1: np.ndarray, amount: float, n: int = 8) -> np.ndarray:
    """Curve p0 -> p1 whose control point lies `amount` (canonical units) off the chord.

    Positive `amount` bows it towards (-dy, dx) of the chord (dx, dy): outwards
    for the outlines here, which run down the image-left side of a garment,
    left to right along its hem and up its image-right side.
    """
    d = p1 - p0
    normal = np.array([-d[1], d[0]]) / (np.hypot(*d) + 1e-12)
    return _bezier(p0, (p0 + p1) / 2 + normal * amount, p1, n)


def _chain(*parts: np.ndarray) -> np.ndarray:
    """Concatenate polylines, dropping each part's first point when it repeats the last."""
    out = [np.atleast_2d(parts[0])]
    for part in parts[1:]:
        part = np.atleast_2d(part)
        if np.allclose(out[-1][-1], part[0]):
            part = part[1:]
        out.append(part)
    return np.concatenate(out)


def _sleeve(shoulder: np.ndarray, armpit: np.ndarray, side: int, length: float,
            angle_deg: float, width_frac: float) -> Tuple[np.ndarray, np.ndarray]:
    """Cuff points (inner, outer) of a sleeve; side -1 image-left, +1 image-right.

    The sleeve leaves the shoulder at `angle_deg` from straight down, towards
    the outside; the cuff opening is perpendicular to it, `width_frac` of the
    armhole (shoulder-armpit) length wide; `in` lies towards the body.
    """
    a = np.deg2rad(angle_deg)
    direction = np.array([side * np.sin(a), np.cos(a)])
    inward = np.array([-side * np.cos(a), np.sin(a)])
    cuff_out = shoulder + length * direction
    width = width_frac * np.hypot(*(armpit - shoulder))
    return cuff_out + width * inward, cuff_out


def _top(rng: np.random.Generator, category: str) -> Garment:
    """Blouse, outwear or dress: neck, shoulders, sleeves, body, hem."""
    u = rng.uniform
    nw = u(0.07, 0.13)                              # neck half-width
    sw = nw + u(0.15, 0.24)                         # shoulder half-width
    sdrop = u(0.03, 0.10)
    armpit_y = sdrop + u(0.17, 0.27)
    bw = sw - u(0.0, 0.05)                          # body half-width at the armpits
    sleeve_len = {"blouse": (0.12, 0.70), "outwear": (0.40, 0.80), "dress": (0.10, 0.60)}[category]
    base_angle = u(18.0, 80.0)

    k: Dict[str, np.ndarray] = {}
    k["neckline_left"], k["neckline_right"] = _p(-nw, 0.0), _p(nw, 0.0)
    k["shoulder_left"], k["shoulder_right"] = _p(-sw, sdrop), _p(sw, sdrop)
    k["armpit_left"], k["armpit_right"] = _p(-bw, armpit_y), _p(bw, armpit_y)
    length = u(*sleeve_len)
    for side, name in ((-1, "left"), (1, "right")):
        angle = float(np.clip(base_angle + rng.normal(0.0, 8.0), 15.0, 88.0))
        if length < 0.25:                           # short sleeves stand out
            angle = max(angle, 45.0)
        cin, cout = _sleeve(k[f"shoulder_{name}"], k[f"armpit_{name}"], side,
                            length * u(0.92, 1.08), angle, u(0.55, 0.95))
        k[f"cuff_{name}_in"], k[f"cuff_{name}_out"] = cin, cout

    # body below the armpits: (left point, right point) pairs downwards
    if category == "blouse":
        hem_y, hw = armpit_y + u(0.30, 0.62), bw * u(0.85, 1.20)
        k["top_hem_left"], k["top_hem_right"] = _p(-hw, hem_y), _p(hw, hem_y)
        body = [("top_hem_left", "top_hem_right")]
    elif category == "outwear":
        waist_y, waist_hw = armpit_y + u(0.22, 0.38), bw * u(0.82, 1.0)
        hem_y, hw = waist_y + u(0.12, 0.55), waist_hw * u(0.95, 1.25)
        k["waistline_left"], k["waistline_right"] = _p(-waist_hw, waist_y), _p(waist_hw, waist_y)
        k["top_hem_left"], k["top_hem_right"] = _p(-hw, hem_y), _p(hw, hem_y)
        body = [("waistline_left", "waistline_right"), ("top_hem_left", "top_hem_right")]
    else:
        waist_y, waist_hw = armpit_y + u(0.15, 0.30), bw * u(0.70, 0.95)
        hem_y, hw = waist_y + u(0.35, 1.0), waist_hw * u(1.1, 2.2)
        k["waistline_left"], k["waistline_right"] = _p(-waist_hw, waist_y), _p(waist_hw, waist_y)
        k["hemline_left"], k["hemline_right"] = _p(-hw, hem_y), _p(hw, hem_y)
        body = [("waistline_left", "waistline_right"), ("hemline_left", "hemline_right")]

    hem_l, hem_r = k[body[-1][0]], k[body[-1][1]]
    back_neck = _bezier(k["neckline_right"], _p(0.0, u(0.0, 0.06)), k["neckline_left"])
    left_side = [k["armpit_left"]] + [k[l] for l, _ in body]
    right_side = [k[r] for _, r in reversed(body)] + [k["armpit_right"]]
    silhouette = _chain(
        np.array([k["neckline_left"], k["shoulder_left"], k["cuff_left_out"], k["cuff_left_in"]]),
        np.array(left_side[:-1]), _bulge(hem_l, hem_r, u(0.0, 0.06)),
        np.array(right_side[1:]),
        np.array([k["cuff_right_in"], k["cuff_right_out"], k["shoulder_right"]]),
        back_neck[:-1])

    regions, lines, dots = [], [], []
    depth = u(0.06, 0.28) if category != "outwear" else u(0.12, 0.40)
    if category == "outwear" or rng.random() < 0.5:          # V neck
        cf = _p(u(-0.01, 0.01), depth)
        front = np.array([k["neckline_left"], cf, k["neckline_right"]])
    else:                                                     # round neck
        cf = _p(0.0, depth)
        front = _chain(_bezier(k["neckline_left"], _p(-nw, depth), cf, 6),
                       _bezier(cf, _p(nw, depth), k["neckline_right"], 6))
    if "center_front" in CATEGORY_KEYPOINTS[category]:
        k["center_front"] = cf
    regions.append(_chain(front, back_neck[1:-1]))
    for name in ("left", "right"):
        lines.append(np.array([k[f"shoulder_{name}"], k[f"armpit_{name}"]]))
        cin, cout = k[f"cuff_{name}_in"], k[f"cuff_{name}_out"]
        back = (k[f"shoulder_{name}"] + k[f"armpit_{name}"]) / 2 - (cin + cout) / 2
        shift = back / (np.hypot(*back) + 1e-12) * 0.04
        lines.append(np.array([cout + shift, cin + shift]))
    if "waistline_left" in k:
        lines.append(np.array([k["waistline_left"], k["waistline_right"]]))
    if category == "outwear":
        lines.append(np.array([cf, _p(cf[0], hem_l[1])]))
        n_buttons = int(rng.integers(0, 6))
        for t in np.linspace(0.15, 0.85, n_buttons):
            dots.append(_p(cf[0] + 0.03, cf[1] + t * (hem_l[1] - cf[1])))
    return Garment(category, k, silhouette, regions, lines, dots)


def _skirt(rng: np.random.Generator) -> Garment:
    """Skirt: waistband corners on top, hemline corners at the bottom."""
    u = rng.uniform
    ww = u(0.22, 0.38)
    length = u(0.35, 1.2)
    hw = ww * u(1.0, 2.0)
    k = {"waistband_left": _p(-ww, 0.0), "waistband_right": _p(ww, 0.0),
         "hemline_left": _p(-hw, length), "hemline_right": _p(hw, length)}
    hip = u(0.0, 0.05)
    silhouette = _chain(
        np.array([k["waistband_right"], k["waistband_left"]]),
        _bulge(k["waistband_left"], k["hemline_left"], hip),
        _bulge(k["hemline_left"], k["hemline_right"], u(0.0, 0.07)),
        _bulge(k["hemline_right"], k["waistband_right"], hip)[:-1])
    band = u(0.04, 0.08)
    regions = [np.array([k["waistband_left"], k["waistband_right"],
                         _p(ww * 1.01, band), _p(-ww * 1.01, band)])]
    lines = []
    for t in np.linspace(-0.7, 0.7, int(rng.integers(0, 6))):
        lines.append(np.array([_p(t * ww, band), _p(t * hw, length * 0.97)]))
    return Garment("skirt", k, silhouette, regions, lines)


def _trousers(rng: np.random.Generator) -> Garment:
    """Trousers or shorts: waistband, crotch, two legs with in/out bottom corners."""
    u = rng.uniform
    ww = u(0.20, 0.32)
    crotch_y = u(0.22, 0.36)
    length = crotch_y + u(0.15, 1.2)
    k = {"waistband_left": _p(-ww, 0.0), "waistband_right": _p(ww, 0.0),
         "crotch": _p(u(-0.01, 0.01), crotch_y)}
    leg_w = ww * u(0.55, 1.0) + (0.04 if length - crotch_y < 0.4 else 0.0)
    base_spread = u(-2.0, 10.0)
    for side, name in ((-1, "left"), (1, "right")):
        spread = np.deg2rad(base_spread + rng.normal(0.0, 3.0))
        out = _p(side * (ww + length * np.tan(spread)), length * u(0.97, 1.03))
        inward = np.array([-side * np.cos(spread), np.sin(spread)])
        k[f"bottom_{name}_out"] = out
        k[f"bottom_{name}_in"] = out + leg_w * u(0.9, 1.1) * inward
    hip = u(0.0, 0.04)
    silhouette = _chain(
        np.array([k["waistband_right"], k["waistband_left"]]),
        _bulge(k["waistband_left"], k["bottom_left_out"], hip),
        np.array([k["bottom_left_in"], k["crotch"], k["bottom_right_in"]]),
        _bulge(k["bottom_right_out"], k["waistband_right"], hip)[:-1])
    band = u(0.04, 0.07)
    regions = [np.array([k["waistband_left"], k["waistband_right"],
                         _p(ww * 1.01, band), _p(-ww * 1.01, band)])]
    lines = [np.array([_p(k["crotch"][0], band), k["crotch"] - _p(0.0, 0.05)])]
    for name in ("left", "right"):
        mid = (k[f"bottom_{name}_in"] + k[f"bottom_{name}_out"]) / 2
        top = _p(mid[0] * 0.8, crotch_y * 0.8)
        if rng.random() < 0.6:
            lines.append(np.array([top, mid]))
    return Garment("trousers", k, silhouette, regions, lines)


def _segments_cross(a: np.ndarray, b: np.ndarray, c: np.ndarray, d: np.ndarray) -> bool:
    def orient(p, q, r):
        return (q[0] - p[0]) * (r[1] - p[1]) - (q[1] - p[1]) * (r[0] - p[0])
    return (orient(a, b, c) * orient(a, b, d) < 0) and (orient(c, d, a) * orient(c, d, b) < 0)


def is_simple_polygon(poly: np.ndarray) -> bool:
    """True when no two non-adjacent edges of the closed polygon (M, 2) cross."""
    m = len(poly)
    for i in range(m):
        a, b = poly[i], poly[(i + 1) % m]
        for j in range(i + 2, m):
            if i == 0 and j == m - 1:
                continue
            if _segments_cross(a, b, poly[j], poly[(j + 1) % m]):
                return False
    return True


def _parts_clear(g: Garment, gap: float = 0.03) -> bool:
    """Sleeves and legs do not fold over the body: cuffs outside the torso, legs apart.

    The armpit and crotch corners stay open (about 19 and 2 x 10 degrees at
    least) so that they remain visible corners of the outline.
    """
    k = g.keypoints
    if g.category == "trousers":
        c = k["crotch"]
        for side, name in ((-1, "left"), (1, "right")):
            b = k[f"bottom_{name}_in"]
            if b[1] < c[1] + 2 * gap or side * (b[0] - c[0]) < gap + 0.18 * (b[1] - c[1]):
                return False
        return True
    if "cuff_left_in" not in k:
        return True
    for side, name in ((-1, "left"), (1, "right")):
        body = [k[n] for n in (f"armpit_{name}", f"waistline_{name}", f"top_hem_{name}",
                               f"hemline_{name}") if n in k]
        cuff = k[f"cuff_{name}_in"]
        xs, ys = np.array([p[0] * side for p in body]), np.array([p[1] for p in body])
        # the body side's outermost x between the armpit and the cuff's height
        reach = max([float(np.interp(cuff[1], ys, xs))] + list(xs[ys <= cuff[1]]))
        if cuff[0] * side < reach + gap + 0.35 * max(cuff[1] - body[0][1], 0.0):
            return False
    return True


def _valid(g: Garment, min_dist: float = 0.035) -> bool:
    """Keypoints distinct, sleeves/legs clear of the body, outline not self-crossing."""
    pts = np.array(list(g.keypoints.values()))
    d = np.hypot(*(pts[:, None] - pts[None]).transpose(2, 0, 1))
    np.fill_diagonal(d, np.inf)
    return bool(d.min() >= min_dist) and _parts_clear(g) and is_simple_polygon(g.silhouette)


def draw_garment_shape(rng: np.random.Generator, category: str) -> Garment:
    """Sample a valid upright garment of `category` (canonical frame)."""
    make = {"skirt": _skirt, "trousers": _trousers}.get(category)
    for _ in range(50):
        g = make(rng) if make else _top(rng, category)
        if _valid(g):
            return g
    raise RuntimeError(f"could not draw a valid {category} shape")  # pragma: no cover


# --------------------------------------------------------------------------- pose

def apply_homography(h: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Map (..., 2) points with the 3x3 homography h."""
    pts = np.asarray(pts, dtype=np.float64)
    flat = pts.reshape(-1, 2)
    q = flat @ h[:2, :2].T + h[:2, 2]
    w = flat @ h[2, :2] + h[2, 2]
    return (q / w[:, None]).reshape(pts.shape)


def sample_pose(rng: np.random.Generator, silhouette: np.ndarray, size: Tuple[int, int],
                crop: bool) -> np.ndarray:
    """Homography canonical -> image pixels: rotation, scale, shift, perspective jitter.

    size is (width, height). With `crop` the garment may be larger than the
    image or shifted past its border, so that some keypoints fall outside.
    """
    w, h = size
    lo, hi = silhouette.min(0), silhouette.max(0)
    centre = (lo + hi) / 2
    theta = np.deg2rad(float(np.clip(rng.normal(0.0, 12.0), -25.0, 25.0)))
    c, s = np.cos(theta), np.sin(theta)
    rot = np.array([[c, -s], [s, c]])
    extent = np.abs((silhouette - centre) @ rot.T).max(0) * 2         # rotated bbox size
    fill = rng.uniform(0.95, 1.25) if crop else rng.uniform(0.62, 0.95)
    scale = fill * min(w / extent[0], h / extent[1])
    slack = np.array([w, h]) - extent * scale
    offset = rng.uniform(-0.5, 0.5, 2) * np.maximum(slack, 0.0)
    if crop:
        offset += rng.normal(0.0, 0.12, 2) * np.array([w, h])
    a = np.eye(3)
    a[:2, :2] = scale * rot
    a[:2, 2] = np.array([w / 2, h / 2]) + offset - scale * rot @ centre
    corners = np.array([[lo[0], lo[1]], [hi[0], lo[1]], [hi[0], hi[1]], [lo[0], hi[1]]])
    src = apply_homography(a, corners)
    jitter = rng.uniform(-0.04, 0.04, (4, 2)) * scale * extent.max()
    p = cv2.getPerspectiveTransform(src.astype(np.float32), (src + jitter).astype(np.float32))
    return p.astype(np.float64) @ a


# --------------------------------------------------------------------------- colours, textures

def _colour(rng: np.random.Generator, lum: float, sat: Optional[float] = None) -> np.ndarray:
    """A BGR colour whose channel mean is about `lum`."""
    hue = rng.uniform(-1.0, 1.0, 3)
    hue -= hue.mean()
    sat = rng.uniform(0.0, 90.0) if sat is None else sat
    return np.clip(lum + hue / (np.abs(hue).max() + 1e-9) * sat, 0, 255)


def _grid(h: int, w: int) -> Tuple[np.ndarray, np.ndarray]:
    return np.mgrid[0:h, 0:w].astype(np.float32)


def texture(rng: np.random.Generator, h: int, w: int, base: np.ndarray,
            contrast: float) -> np.ndarray:
    """(h, w, 3) uint8 garment texture around colour `base` (BGR).

    One of solid, stripes, checks, dots, smooth noise, gradient; the second
    colour stays within about `contrast` of the base brightness.
    """
    kind = rng.choice(["solid", "stripes", "checks", "dots", "noise", "gradient"],
                      p=[0.2, 0.2, 0.15, 0.15, 0.15, 0.15])
    other = _colour(rng, float(base.mean()) + rng.uniform(-contrast, contrast))
    base32, other32 = base.astype(np.float32), other.astype(np.float32)
    if kind == "solid":
        return np.broadcast_to(base.astype(np.uint8), (h, w, 3)).copy()
    if kind == "noise":
        small = rng.uniform(0, 1, (int(rng.integers(3, 12)),) * 2).astype(np.float32)
        t = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)[..., None]
    else:
        yy, xx = _grid(h, w)
        ang = rng.uniform(0, np.pi)
        period = rng.uniform(0.03, 0.12) * max(h, w)
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
        t = t[..., None]
    return np.clip(base32 * (1 - t) + other32 * t, 0, 255).astype(np.uint8)


def paint_texture(rng: np.random.Generator, img: np.ndarray, mask: np.ndarray,
                  base: np.ndarray, contrast: float) -> None:
    """Fill the pixels of `mask` (h, w) in `img` (h, w, 3) with a texture, in place.

    The texture is drawn over the mask's bounding box only (cheaper).
    """
    x, y, w, h = cv2.boundingRect(mask)
    if w == 0 or h == 0:
        return
    sel = mask[y:y + h, x:x + w] > 0
    tex = texture(rng, h, w, base, contrast)
    img[y:y + h, x:x + w][sel] = tex[sel]


def background(rng: np.random.Generator, h: int, w: int, lum: float) -> np.ndarray:
    """(h, w, 3) uint8 cluttered background around brightness `lum`.

    Gradient, smooth noise blotches and random lines/rectangles/circles, all
    within about +/-35 of `lum` so the garment keeps its contrast.
    """
    small = np.array([[_colour(rng, lum + rng.uniform(-15, 15), rng.uniform(0, 60))
                       for _ in range(2)] for _ in range(2)], dtype=np.float32)
    img = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    blot = rng.uniform(-25, 25, (int(rng.integers(4, 16)),) * 2).astype(np.float32)
    img += cv2.resize(blot, (w, h), interpolation=cv2.INTER_CUBIC)[..., None]
    img = np.clip(img, 0, 255).astype(np.uint8)
    m = min(h, w)
    for _ in range(int(rng.integers(4, 14))):
        col = tuple(float(v) for v in _colour(rng, lum + rng.uniform(-35, 35)))
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
    return img


def _contrasting_lums(rng: np.random.Generator, gap: float = 90.0) -> Tuple[float, float]:
    """(garment, background) brightness at least `gap` apart."""
    g = rng.uniform(35.0, 220.0)
    options = []
    if g + gap <= 235:
        options.append((g + gap, 235.0))
    if g - gap >= 20:
        options.append((20.0, g - gap))
    lo, hi = options[int(rng.integers(len(options)))]
    return g, rng.uniform(lo, hi)


def _to_px(pts: np.ndarray) -> np.ndarray:
    """Image-frame float points -> int32 fixed-point for cv2 drawing with shift."""
    return np.round(np.asarray(pts) * _SCALE).astype(np.int32)


def _px_tuple(pt: np.ndarray) -> Tuple[int, int]:
    """One image-frame point as a fixed-point (x, y) tuple for cv2 drawing with shift."""
    x, y = _to_px(pt)
    return int(x), int(y)


def _occluders(rng: np.random.Generator, img: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Draw 0-3 occluders near random `targets` (K, 2) points; return their mask (h, w) bool."""
    h, w = img.shape[:2]
    mask = np.zeros((h, w), np.uint8)
    n = int(rng.choice(4, p=[0.25, 0.35, 0.25, 0.15]))
    m = min(h, w)
    for _ in range(n if len(targets) else 0):
        centre = targets[int(rng.integers(len(targets)))] + rng.normal(0, 0.03 * m, 2)
        r = rng.uniform(0.05, 0.12) * m
        col = tuple(float(v) for v in _colour(rng, rng.uniform(20, 235)))
        kind = rng.integers(0, 3)
        layer = np.zeros((h, w), np.uint8)
        if kind == 0:
            axes = (int(r * _SCALE), int(r * rng.uniform(0.4, 1.0) * _SCALE))
            cv2.ellipse(layer, _px_tuple(centre), axes, rng.uniform(0, 180), 0, 360, 255, -1,
                        cv2.LINE_8, _SHIFT)
        elif kind == 1:
            box = cv2.boxPoints(((float(centre[0]), float(centre[1])),
                                 (float(r * 2), float(r * rng.uniform(0.6, 2.0))),
                                 float(rng.uniform(0, 180))))
            cv2.fillPoly(layer, [_to_px(box)], 255, cv2.LINE_8, _SHIFT)
        else:
            ang = np.sort(rng.uniform(0, 2 * np.pi, int(rng.integers(5, 9))))
            rad = r * rng.uniform(0.5, 1.2, len(ang))
            blob = centre + np.stack([np.cos(ang), np.sin(ang)], 1) * rad[:, None]
            cv2.fillPoly(layer, [_to_px(blob)], 255, cv2.LINE_8, _SHIFT)
        if rng.random() < 0.3:
            paint_texture(rng, img, layer, np.array(col), 40.0)
        else:
            img[layer > 0] = col
        mask |= layer
    return mask > 0


# --------------------------------------------------------------------------- one image

@dataclasses.dataclass
class Sample:
    """One drawn image.

    image: (h, w, 3) uint8 BGR. keypoints: (24, 3) int64 x, y, v in image
    pixels (-1, -1, -1 for absent points and other categories' points).
    garment_mask: (h, w) bool silhouette of the garment (before occluders).
    """

    image: np.ndarray
    keypoints: np.ndarray
    garment_mask: np.ndarray


def _inside(xy: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    w, h = size
    return (xy[..., 0] >= 0) & (xy[..., 0] <= w - 1) & (xy[..., 1] >= 0) & (xy[..., 1] <= h - 1)


def _choose_pose(rng: np.random.Generator, g: Garment, size: Tuple[int, int]) -> np.ndarray:
    """A pose homography; normalizer points are kept in the image in ~97 % of images."""
    names = CATEGORY_KEYPOINTS[g.category]
    pts = np.array([g.keypoints[n] for n in names])
    norm = [names.index(n) for n in NORMALIZER[g.category]]
    crop = rng.random() < 0.25
    strict = rng.random() < 0.97
    for _ in range(30):
        hom = sample_pose(rng, g.silhouette, size, crop)
        inside = _inside(np.rint(apply_homography(hom, pts)), size)
        if inside.mean() >= 0.5 and (not strict or inside[norm].all()):
            return hom
    return sample_pose(rng, g.silhouette, size, False)


def render_sample(rng: np.random.Generator, category: str) -> Sample:
    """Draw one image of `category` with its keypoints (image pixel frame)."""
    size = IMAGE_SIZES[int(rng.choice(len(IMAGE_SIZES), p=IMAGE_SIZE_P))]
    w, h = size
    g = draw_garment_shape(rng, category)
    hom = _choose_pose(rng, g, size)

    g_lum, b_lum = _contrasting_lums(rng)
    away = 1.0 if g_lum > b_lum else -1.0
    base = _colour(rng, g_lum)
    img = background(rng, h, w, b_lum)
    sil = _to_px(apply_homography(hom, g.silhouette))
    mask = np.zeros((h, w), np.uint8)
    cv2.fillPoly(mask, [sil], 255, cv2.LINE_8, _SHIFT)
    garment = mask > 0
    paint_texture(rng, img, mask, base, 30.0)

    thick = max(1, int(round(min(w, h) / 200)))
    shade = tuple(float(v) for v in np.clip(base + away * rng.uniform(25, 45), 0, 255))
    for region in g.regions:
        cv2.fillPoly(img, [_to_px(apply_homography(hom, region))], shade, cv2.LINE_AA, _SHIFT)
    for line in g.lines:
        cv2.polylines(img, [_to_px(apply_homography(hom, line))], False, shade, thick,
                      cv2.LINE_AA, _SHIFT)
    for dot in g.dots:
        cv2.circle(img, _px_tuple(apply_homography(hom, dot)), int(thick * 2 * _SCALE), shade, -1,
                   cv2.LINE_AA, _SHIFT)
    outline = tuple(float(v) for v in np.clip(base + away * rng.uniform(50, 90), 0, 255))
    cv2.polylines(img, [sil], True, outline, thick + 1, cv2.LINE_AA, _SHIFT)

    names = CATEGORY_KEYPOINTS[category]
    xy = np.rint(apply_homography(hom, np.array([g.keypoints[n] for n in names]))).astype(np.int64)
    inside = _inside(xy, size)
    occluded = _occluders(rng, img, xy[inside].astype(np.float64))
    if rng.random() < 0.3:
        img = cv2.GaussianBlur(img, (3, 3), 0)

    kps = np.full((NUM_KEYPOINTS, 3), -1, dtype=np.int64)
    for j, name in enumerate(names):
        if inside[j]:
            x, y = xy[j]
            kps[KEYPOINT_INDEX[name]] = (x, y, 0 if occluded[y, x] else 1)
    return Sample(img, kps, garment)


# --------------------------------------------------------------------------- files

def image_rng(seed: int, split: str, category: str, index: int) -> np.random.Generator:
    """The RNG of one image: seeded from (seed, split, category, index) only."""
    return np.random.default_rng([seed, SPLITS[split][0], CATEGORIES.index(category), index])


def image_name(seed: int, split: str, category: str, index: int) -> str:
    """32-hex file stem derived from (seed, split, category, index)."""
    key = f"fashionai-synth:{GENERATOR_VERSION}:{seed}:{split}:{category}:{index}"
    return hashlib.md5(key.encode()).hexdigest()


def _render_batch(out_dir: str, seed: int, split: str, category: str,
                  indices: Sequence[int]) -> List[Tuple[str, np.ndarray]]:
    """Draw and write images; return (image_id, keypoints (24, 3)) per index."""
    cv2.setNumThreads(1)
    split_dir = Path(out_dir) / split
    (split_dir / "Images" / category).mkdir(parents=True, exist_ok=True)
    rows = []
    for i in indices:
        sample = render_sample(image_rng(seed, split, category, i), category)
        image_id = f"Images/{category}/{image_name(seed, split, category, i)}.jpg"
        if not cv2.imwrite(str(split_dir / image_id), sample.image,
                           [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]):
            raise OSError(f"could not write {split_dir / image_id}")
        rows.append((image_id, sample.keypoints))
    return rows


def _params(train_per_cat: int, test_per_cat: int, seed: int, warm_per_cat: int) -> Dict:
    return {"generator": "pipeline.synth", "version": GENERATOR_VERSION, "seed": int(seed),
            "train_per_cat": int(train_per_cat), "test_per_cat": int(test_per_cat),
            "warm_per_cat": int(warm_per_cat)}


def _split_counts(params: Dict) -> Dict[str, int]:
    counts = {"train": params["train_per_cat"], "test": params["test_per_cat"],
              "train_warm": params["warm_per_cat"]}
    return {s: n for s, n in counts.items() if n > 0}


def _expected_csvs(params: Dict) -> List[str]:
    out = [SPLITS[s][1] for s in _split_counts(params)]
    return out + ([TEST_LIST] if params["test_per_cat"] > 0 else [])


def _read_marker(out_dir: Path) -> Optional[Dict]:
    try:
        return json.loads((out_dir / MARKER).read_text())
    except (OSError, ValueError):
        return None


def check_not_real(out_dir) -> None:
    """Raise RuntimeError when `out_dir` may hold real data: no synthetic marker but
    annotation CSVs (`*/Annotations/*.csv`, `test/test.csv`) or files in a split directory."""
    out_dir = Path(out_dir)
    if (out_dir / MARKER).exists():
        return
    found = sorted(out_dir.glob("*/Annotations/*.csv")) + \
        ([out_dir / TEST_LIST] if (out_dir / TEST_LIST).exists() else [])
    for split in SPLITS:
        if not found and (out_dir / split).is_dir():
            first = next((p for p in (out_dir / split).rglob("*") if p.is_file()), None)
            found = [first] if first else []
    if found:
        raise RuntimeError(
            f"refusing to write synthetic data into {out_dir}: it holds {found[0]} and no "
            f"{MARKER} marker, so it looks like real data. Choose another directory or "
            f"remove the data yourself.")


def generate(out_dir, train_per_cat: int, test_per_cat: int, seed: int = 0,
             warm_per_cat: int = 0, jobs: int = -1, progress: bool = True) -> Dict:
    """Write a synthetic data set in the competition layout under `out_dir`.

    Idempotent: with a marker of identical parameters and every CSV present it
    returns at once (summary `skipped: True`). With a marker of other
    parameters the old train/train_warm/test directories are removed first.
    Refuses (RuntimeError) to touch a directory holding real annotations.
    Returns a summary: parameters, images per split, seconds, and the
    fractions of occluded / absent category points and non-512x512 images.
    """
    if min(train_per_cat, test_per_cat, warm_per_cat) < 0 or seed < 0:
        raise ValueError("counts and seed must be non-negative")
    out_dir = Path(out_dir)
    params = _params(train_per_cat, test_per_cat, seed, warm_per_cat)
    check_not_real(out_dir)
    counts = {s: n * len(CATEGORIES) for s, n in _split_counts(params).items()}
    complete = all((out_dir / c).exists() for c in _expected_csvs(params))
    if complete and _read_marker(out_dir) == params:
        return {"out_dir": str(out_dir), "params": params, "images": counts, "skipped": True}

    start = time.perf_counter()
    for split in SPLITS:
        if (out_dir / split).exists():
            shutil.rmtree(out_dir / split)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out_dir / MARKER, json.dumps(params, indent=1, sort_keys=True) + "\n")

    tasks = []
    for split, n in _split_counts(params).items():
        for cat in CATEGORIES:
            tasks += [(split, cat, range(i, min(i + _BATCH, n))) for i in range(0, n, _BATCH)]
    results = _run_tasks(str(out_dir), seed, tasks, jobs, progress)

    stats = {"points": 0, "occluded": 0, "absent": 0}
    for split, n in _split_counts(params).items():
        ids, cats, kps = [], [], []
        for (t_split, cat, _), rows in zip(tasks, results):
            if t_split != split:
                continue
            for image_id, k in rows:
                ids.append(image_id)
                cats.append(cat)
                kps.append(k)
                v = k[category_indices(cat), 2]
                stats["points"] += v.size
                stats["occluded"] += int((v == 0).sum())
                stats["absent"] += int((v == -1).sum())
        write_annotations(out_dir / SPLITS[split][1], ids, cats, np.stack(kps))
        if split == "test":
            write_test_list(out_dir / TEST_LIST, ids, cats)
    points = max(stats["points"], 1)
    return {"out_dir": str(out_dir), "params": params, "images": counts, "skipped": False,
            "seconds": round(time.perf_counter() - start, 2),
            "occluded_frac": stats["occluded"] / points, "absent_frac": stats["absent"] / points}


def _run_tasks(out_dir: str, seed: int, tasks: List, jobs: int, progress: bool) -> List:
    """Render every (split, category, indices) task, in task order."""
    from tqdm import tqdm

    total = sum(len(t[2]) for t in tasks)
    bar = tqdm(total=total, desc="synth", unit="img", disable=not progress)
    n_jobs = _effective_jobs(jobs, len(tasks))
    if n_jobs == 1:
        results = []
        for split, cat, idx in tasks:
            results.append(_render_batch(out_dir, seed, split, cat, list(idx)))
            bar.update(len(idx))
    else:
        from joblib import Parallel, delayed

        parallel = Parallel(n_jobs=n_jobs, return_as="generator")
        results = []
        calls = (delayed(_render_batch)(out_dir, seed, s, c, list(i)) for s, c, i in tasks)
        for rows in parallel(calls):
            results.append(rows)
            bar.update(len(rows))
    bar.close()
    return results


def _effective_jobs(jobs: int, n_tasks: int) -> int:
    import os

    cpus = os.cpu_count() or 1
    n = cpus + 1 + jobs if jobs < 0 else jobs
    return max(1, min(n, n_tasks))


# --------------------------------------------------------------------------- checks

def jpeg_size(path) -> Tuple[int, int]:
    """(width, height) of a JPEG read from its SOF header (falls back to cv2)."""
    with open(path, "rb") as f:
        data = f.read(65536)
    i = 2
    while i + 9 < len(data):
        if data[i] != 0xFF:
            i += 1
            continue
        marker = data[i + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7 or marker == 0xFF:
            i += 1 if marker == 0xFF else 2
            continue
        length = struct.unpack(">H", data[i + 2:i + 4])[0]
        if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF):
            h, w = struct.unpack(">HH", data[i + 5:i + 9])
            return int(w), int(h)
        i += 2 + length
    img = cv2.imread(str(path))
    if img is None:
        raise OSError(f"cannot read image {path}")
    return img.shape[1], img.shape[0]


def _load_split(split_dir: Path, csv_path: Path):
    table, problems = read_annotations(csv_path)
    if problems:
        raise ValueError(f"{csv_path}: {problems[0]}")
    sizes = np.array([jpeg_size(split_dir / i) for i in table.image_id], dtype=np.float64)
    return table, sizes.reshape(-1, 2)


def mean_shape_prediction(train_kps: np.ndarray, train_cats: Sequence[str],
                          train_sizes: np.ndarray, test_cats: Sequence[str],
                          test_sizes: np.ndarray) -> np.ndarray:
    """Per-category mean keypoint position, predicted for every test image.

    Means are taken over annotated (v >= 0) train points in relative
    coordinates (x / width, y / height) and mapped back to each test image's
    pixels. kps: (N, 24, 3); sizes: (N, 2) width, height. Returns (M, 24, 2).
    """
    train_cats, test_cats = np.asarray(train_cats), np.asarray(test_cats)
    rel = train_kps[..., :2] / train_sizes[:, None, :]
    pred = np.zeros((len(test_cats), NUM_KEYPOINTS, 2))
    for cat in CATEGORIES:
        sel = train_cats == cat
        if not sel.any():
            continue
        ok = train_kps[sel][..., 2] >= 0
        mean = np.where(ok[..., None], rel[sel], 0).sum(0) / np.maximum(ok.sum(0), 1)[:, None]
        pred[test_cats == cat] = mean[None] * test_sizes[test_cats == cat][:, None, :]
    return pred


def realism_stats(out_dir) -> Dict:
    """How hard and how realistic a generated set is.

    occluded_frac / absent_frac: fractions of category points with v=0 / v=-1
    over all annotated splits; normalizer_present_frac: images whose two
    normalizer points are both annotated; non512_frac: images not 512x512;
    mean_shape_ne: NE on the test split of predicting each category's mean
    train shape (relative coordinates mapped to each test image's size).
    """
    from .metrics import normalized_error

    out_dir = Path(out_dir)
    loaded = {}
    for split, (_, rel) in SPLITS.items():
        if (out_dir / rel).exists():
            loaded[split] = _load_split(out_dir / split, out_dir / rel)
    if "train" not in loaded:
        raise FileNotFoundError(f"{out_dir}: no train annotations")
    v_all, norm_ok, sizes_all = [], [], []
    for table, sizes in loaded.values():
        sizes_all.append(sizes)
        for cat, k in zip(table.image_category, table.keypoints):
            v_all.append(k[category_indices(cat), 2])
            a, b = (KEYPOINT_INDEX[n] for n in NORMALIZER[cat])
            norm_ok.append(k[a, 2] >= 0 and k[b, 2] >= 0)
    v = np.concatenate(v_all)
    sizes = np.concatenate(sizes_all)
    out = {"n_images": int(len(sizes)),
           "occluded_frac": float((v == 0).mean()), "absent_frac": float((v == -1).mean()),
           "normalizer_present_frac": float(np.mean(norm_ok)),
           "non512_frac": float(np.mean(np.any(sizes != 512, axis=1)))}
    if "test" in loaded:
        (train, train_sizes), (test, test_sizes) = loaded["train"], loaded["test"]
        ids, _ = read_test_list(out_dir / TEST_LIST)
        out["test_order_matches"] = list(ids) == list(test.image_id)
        pred = mean_shape_prediction(train.keypoints, train.image_category, train_sizes,
                                     test.image_category, test_sizes)
        ne = normalized_error(test.keypoints, pred, test.image_category)
        out.update(mean_shape_ne=ne["ne"], mean_shape_per_category=ne["per_category"],
                   mean_shape_images_skipped=ne["n_images_skipped"])
    return out


# --------------------------------------------------------------------------- CLI

def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Write the synthetic FashionAI data set.")
    parser.add_argument("--out", required=True, help="output directory (e.g. input)")
    parser.add_argument("--train-per-cat", type=int, required=True)
    parser.add_argument("--test-per-cat", type=int, required=True)
    parser.add_argument("--warm-per-cat", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=-1, help="parallel jobs (-1: all cores)")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--stats", action="store_true", help="also print realism_stats")
    args = parser.parse_args(argv)
    try:
        summary = generate(args.out, args.train_per_cat, args.test_per_cat, args.seed,
                           args.warm_per_cat, args.jobs, not args.no_progress)
    except (RuntimeError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.stats:
        summary["realism"] = realism_stats(args.out)
    print(json.dumps(summary, indent=1, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
