"""Rendering: a scene of figure and garments, framed, drawn with soft edges, shading and folds.

Layouts and frames: each image first draws, from the model of real annotations
(`real_model`, fitted by `fit_real`), its size, the labelled garment's keypoint
layout placed in the image (box area and position from real quantiles) and which
keypoints are absent (one of the real joint patterns: a sleeveless top lacks its
four cuffs and is drawn without sleeves). The scene is built in the canonical
frame of `figure` / `geometry` (the best matching of a few drawn figures and
garments); one `Warp` per image (a similarity, then a thin-plate spline through
the garment's keypoints) maps it to *image pixels* (the "original image pixels"
of DESIGN.md), so that the garment's corners land on the drawn layout, and
everything else (figure, second garment) bends with it.

Visibility (DESIGN.md §1): a labelled point is `v=0` when something painted
after its own part of the labelled garment (hand, forearm, hair, a second
garment worn over it, a prop, a sleeve of the same garment folded over the
front or the body over a sleeve held behind the back) covers its pixel. The
labels then follow the real per-keypoint rates (`RealModel.occlusion_flips`):
where the drawing covers a keypoint less often than real annotators mark it
`v=0` (an armpit under a hanging sleeve, the back of a collar), visible points
are marked `v=0` with the probability that makes up the difference; where it
covers it more often (a cuff under the edge of a hand), covered points are
marked `v=1` with the probability that removes the excess. Absent points are `-1_-1_-1`; every annotated
point lies inside the image. Only the labelled garment's category points are
returned; a second garment's points never are.
"""
from __future__ import annotations

import dataclasses
from typing import Dict, FrozenSet, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from pipeline.keypoints import CATEGORY_KEYPOINTS, KEYPOINT_INDEX, NUM_KEYPOINTS
from pipeline.tools.synth import real_model
from pipeline.tools.synth.figure import (
    BEHIND_POSES,
    BodyParts,
    Skeleton,
    body_parts,
    ellipse,
    sample_skeleton,
)
from pipeline.tools.synth.geometry import Garment, make_garment
from pipeline.tools.synth.texture import (
    background,
    colour,
    folds,
    smooth_field,
    texture,
)

#: Shot kinds and their probabilities: a worn garment, flat-lay, on a hanger.
SHOTS = ("worn", "flat", "hanger")
SHOT_P = (0.70, 0.20, 0.10)
JPEG_QUALITY = (60, 95)
#: Figures and garments drawn per image; the one whose keypoints best match the layout is kept.
CANDIDATES = 8

_SHIFT = 4                      # sub-pixel bits for cv2 polygon drawing
_SCALE = float(1 << _SHIFT)
TOPS = ("blouse", "outwear", "dress")

SKIN_TONES = np.array([(185, 205, 235), (160, 185, 225), (125, 160, 205), (95, 130, 180),
                       (70, 100, 145), (50, 70, 105)], np.float64)                      # BGR
HAIR_COLOURS = np.array([(25, 25, 30), (30, 50, 80), (70, 130, 185), (40, 60, 140),
                         (150, 150, 155)], np.float64)


# --------------------------------------------------------------------------- canvas

def apply_homography(hom: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Map (..., 2) points with the 3x3 homography `hom`."""
    pts = np.asarray(pts, dtype=np.float64)
    flat = pts.reshape(-1, 2)
    q = flat @ hom[:2, :2].T + hom[:2, 2]
    z = flat @ hom[2, :2] + hom[2, 2]
    return (q / z[:, None]).reshape(pts.shape)


def similarity(src: np.ndarray, dst: np.ndarray) -> Tuple[np.ndarray, float]:
    """3x3 similarity (rotation, uniform scale, shift; no reflection) taking src (n, 2) closest
    to dst (n, 2) in least squares, and the RMS residual over the RMS spread of dst."""
    ms, md = src.mean(0), dst.mean(0)
    a, b = src - ms, dst - md
    var = float((a ** 2).sum())
    cov = b.T @ a
    u, sv, vt = np.linalg.svd(cov)
    d = np.diag([1.0, np.sign(np.linalg.det(u @ vt)) or 1.0])
    rot = u @ d @ vt
    scale = float(np.trace(np.diag(sv) @ d) / max(var, 1e-12))
    m = np.eye(3)
    m[:2, :2] = scale * rot
    m[:2, 2] = md - scale * rot @ ms
    res = apply_homography(m, src) - dst
    return m, float(np.sqrt((res ** 2).sum() / max((b ** 2).sum(), 1e-12)))


def _tps_kernel(r2: np.ndarray) -> np.ndarray:
    """Thin-plate kernel U = r^2 log r, from squared distances."""
    return 0.5 * r2 * np.log(np.maximum(r2, 1e-20))


class Warp:
    """Canonical frame -> image pixels: a similarity, then a thin-plate spline taking the
    control points (the garment's keypoints) exactly onto their targets (pixels).

    Callable on (..., 2) points; `px` is the similarity's pixels per canonical unit.
    """

    def __init__(self, sim: np.ndarray, src: np.ndarray, dst: np.ndarray):
        self.sim = sim
        self.px = float(np.sqrt(abs(np.linalg.det(sim[:2, :2]))))
        p = apply_homography(sim, src)
        self.c = p.mean(0)
        self.s = max(float(p.std()), 1.0)
        q = (p - self.c) / self.s
        n = len(q)
        k = _tps_kernel(((q[:, None] - q[None]) ** 2).sum(-1)) + 1e-9 * np.eye(n)
        pm = np.concatenate([np.ones((n, 1)), q], 1)
        lhs = np.zeros((n + 3, n + 3))
        lhs[:n, :n], lhs[:n, n:], lhs[n:, :n] = k, pm, pm.T
        rhs = np.zeros((n + 3, 2))
        rhs[:n] = (np.asarray(dst, np.float64) - p) / self.s
        sol = np.linalg.lstsq(lhs, rhs, rcond=None)[0]
        self.q, self.w, self.a = q, sol[:n], sol[n:]

    def __call__(self, pts: np.ndarray) -> np.ndarray:
        pts = np.asarray(pts, np.float64)
        x = apply_homography(self.sim, pts.reshape(-1, 2))
        q = (x - self.c) / self.s
        u = _tps_kernel(((q[:, None] - self.q[None]) ** 2).sum(-1))
        off = u @ self.w + self.a[0] + q @ self.a[1:]
        return (x + self.s * off).reshape(pts.shape)


def to_image(hom, pts: np.ndarray) -> np.ndarray:
    """Map canonical points (..., 2) to image pixels with a `Warp` or a 3x3 homography."""
    return hom(pts) if callable(hom) else apply_homography(hom, pts)


def _fixed(pts: np.ndarray) -> np.ndarray:
    """Image-frame float points -> int32 fixed point for cv2 drawing with `_SHIFT`."""
    return np.round(np.asarray(pts) * _SCALE).astype(np.int32)


@dataclasses.dataclass
class Alpha:
    """Opacity in [0, 1] of a drawn shape: `a` (h, w) float32 over the image box at (x, y)."""

    a: np.ndarray
    x: int
    y: int

    def blurred(self, sigma: float) -> "Alpha":
        """The same shape with its edges blurred by a Gaussian of `sigma` pixels."""
        if sigma <= 0.3 or self.a.size == 0:
            return self
        return Alpha(cv2.GaussianBlur(self.a, (0, 0), sigma), self.x, self.y)

    def full(self, h: int, w: int) -> np.ndarray:
        """(h, w) float32 opacity over the whole image."""
        out = np.zeros((h, w), np.float32)
        out[self.y:self.y + self.a.shape[0], self.x:self.x + self.a.shape[1]] = self.a
        return out


class Canvas:
    """A float32 BGR image (h, w, 3) in image pixels and the homography of the scene.

    It follows the labelled keypoints (`track`): each keeps the opacity of what
    was painted over it after the part of the garment it belongs to
    (`point_cover`, (K,)), so a point is covered by hands, hair, other
    garments and by other parts of its own garment (a sleeve folded over the
    front, a sleeve behind the back), in painting order.
    """

    def __init__(self, image: np.ndarray, hom):
        self.image = image
        self.hom = hom                  # a Warp or a 3x3 homography (canonical -> pixels)
        self.h, self.w = image.shape[:2]
        self.px = hom.px if callable(hom) else float(np.sqrt(abs(np.linalg.det(hom[:2, :2]))))
        self.points = np.zeros((0, 2), np.int64)
        self.owners: List[FrozenSet[int]] = []
        self.point_cover = np.zeros(0, np.float32)
        self.point_drawn = np.zeros(0, bool)

    def track(self, points: np.ndarray, owners: Sequence[FrozenSet[int]]) -> None:
        """Follow image points (K, 2) int whose own garment parts are `owners` (K sets)."""
        self.points = np.asarray(points, np.int64)
        self.owners = list(owners)
        self.point_cover = np.zeros(len(points), np.float32)
        self.point_drawn = np.zeros(len(points), bool)

    def box(self, polys_px: Sequence[np.ndarray], pad: float) -> Tuple[int, int, int, int]:
        """(x0, y0, x1, y1) image box around image-frame polygons, padded, clipped to the image."""
        pts = np.concatenate(polys_px)
        x0, y0 = np.floor(pts.min(0) - pad).astype(int)
        x1, y1 = np.ceil(pts.max(0) + pad).astype(int) + 1
        return max(x0, 0), max(y0, 0), min(max(x1, 0), self.w), min(max(y1, 0), self.h)

    def mask(self, polys: Sequence[np.ndarray], soft: float = 0.0, image_frame: bool = False,
             box: Optional[Tuple[int, int, int, int]] = None) -> Alpha:
        """Opacity of filled polygons (canonical frame, or image pixels with `image_frame`),
        anti-aliased, edges blurred by `soft` px; over `box` when given."""
        px = [np.asarray(p, np.float64) if image_frame else to_image(self.hom, p)
              for p in polys]
        x0, y0, x1, y1 = box or self.box(px, 3 * soft + 2)
        m = np.zeros((max(y1 - y0, 0), max(x1 - x0, 0)), np.uint8)
        if m.size:
            cv2.fillPoly(m, [_fixed(p - (x0, y0)) for p in px], 255, cv2.LINE_AA, _SHIFT)
        return Alpha(m.astype(np.float32) / 255.0, x0, y0).blurred(soft)

    def paint(self, alpha: Alpha, paint, part: Optional[int] = None) -> None:
        """Blend `paint` (BGR (3,), or a callable (x, y, h, w) -> (h, w, 3) for the box) by `alpha`.

        part: index of the labelled garment's part being painted, None for
        anything else. It uncovers the tracked points it owns and covers the
        others that are already drawn.
        """
        h, w = alpha.a.shape
        if h == 0 or w == 0:
            return
        sl = (slice(alpha.y, alpha.y + h), slice(alpha.x, alpha.x + w))
        fill = paint(alpha.x, alpha.y, h, w) if callable(paint) else np.asarray(paint, np.float32)
        region = self.image[sl]
        region += (fill - region) * alpha.a[..., None]
        xs, ys = self.points[:, 0] - alpha.x, self.points[:, 1] - alpha.y
        for k in np.flatnonzero((xs >= 0) & (xs < w) & (ys >= 0) & (ys < h)):
            a = float(alpha.a[ys[k], xs[k]])
            if part is not None and part in self.owners[k]:
                self.point_cover[k] *= 1.0 - a
                self.point_drawn[k] = True
            elif self.point_drawn[k]:
                self.point_cover[k] = max(self.point_cover[k], a)

    def line(self, pts: np.ndarray, col, thickness: float) -> None:
        """Anti-aliased polyline (canonical points) of `thickness` canonical units."""
        cv2.polylines(self.image, [_fixed(to_image(self.hom, pts))], False,
                      tuple(float(c) for c in col), max(1, int(round(thickness * self.px))),
                      cv2.LINE_AA, _SHIFT)


def _shaded(rng: np.random.Generator, base: np.ndarray, pattern: bool, n_folds: int,
            fold_strength: float, pattern_seed: Optional[int] = None, span: float = 512.0):
    """A paint callable: fabric colour (a pattern from `pattern_seed`) x shading x folds."""
    seed = int(rng.integers(2 ** 31))
    pattern_seed = seed if pattern_seed is None else pattern_seed

    def paint(x: int, y: int, h: int, w: int) -> np.ndarray:
        r = np.random.default_rng(seed)
        tex = texture(np.random.default_rng(pattern_seed), h, w, base, 35.0, (x, y), span) \
            if pattern else np.broadcast_to(base.astype(np.float32), (h, w, 3)).copy()
        shade = smooth_field(r, h, w, 0.10)
        if n_folds:
            shade *= folds(r, h, w, n_folds, fold_strength)
        return tex * shade[..., None]
    return paint


# --------------------------------------------------------------------------- scene

@dataclasses.dataclass
class Sample:
    """One drawn image.

    image: (h, w, 3) uint8 BGR. keypoints: (24, 3) int64 x, y, v in image
    pixels (-1, -1, -1 for absent points and other categories' points).
    garment_mask: (h, w) bool, the labelled garment's own pixels (openings
    excluded, before anything drawn over it). meta: shot kind, figure, second
    garment category (or None), JPEG quality, keypoint-box area fraction.
    """

    image: np.ndarray
    keypoints: np.ndarray
    garment_mask: np.ndarray
    meta: Dict


def second_garment(rng: np.random.Generator, category: str, shot: str) -> Tuple[Optional[str], str]:
    """(category of an unlabelled second garment or None, "under"/"over"/"beside")."""
    if shot == "worn":
        if category in ("blouse", "outwear"):        # a blouse may be tucked in
            tucked = category == "blouse" and rng.random() < 0.3
            return str(rng.choice(["skirt", "trousers"])), "over" if tucked else "under"
        if category in ("skirt", "trousers"):        # a jacket, a loose blouse, a tucked blouse
            return [("outwear", "over"), ("blouse", "over"), ("blouse", "under")][
                int(rng.choice(3, p=[0.10, 0.12, 0.78]))]
        return ("outwear", "over") if rng.random() < 0.25 else (None, "")
    if shot == "flat" and rng.random() < 0.35:
        others = [c for c in ("blouse", "outwear", "dress", "skirt", "trousers") if c != category]
        return str(rng.choice(others)), "beside"
    return None, ""


def _inside(xy: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    w, h = size
    return (xy[..., 0] >= 0) & (xy[..., 0] <= w - 1) & (xy[..., 1] >= 0) & (xy[..., 1] <= h - 1)


def _beside(rng: np.random.Generator, g: Garment, other: Garment) -> None:
    """Move `other` (in place) beside `g`: to its left, right or below, touching or overlapping."""
    box = lambda gg: (np.concatenate(gg.parts).min(0), np.concatenate(gg.parts).max(0))
    (lo, hi), (olo, ohi) = box(g), box(other)
    where = rng.integers(3)
    gap = rng.uniform(-0.15, 0.1)
    dy = rng.uniform(*sorted((lo[1] - olo[1], hi[1] - ohi[1])))
    if where == 0:
        shift = np.array([lo[0] - ohi[0] - gap, dy])
    elif where == 1:
        shift = np.array([hi[0] - olo[0] + gap, dy])
    else:
        shift = np.array([rng.uniform(-0.2, 0.2), hi[1] - olo[1] + gap])
    other.parts = [p + shift for p in other.parts]
    other.openings = [p + shift for p in other.openings]
    other.lines = [p + shift for p in other.lines]
    other.dots = [p + shift for p in other.dots]


@dataclasses.dataclass
class Look:
    """How a garment is painted: colour (BGR), patterned or plain (pattern RNG seed), folds,
    a faint outline."""

    base: np.ndarray
    pattern: bool
    pattern_seed: int
    n_folds: int
    fold_strength: float
    outline: bool


def sample_look(rng: np.random.Generator, base: np.ndarray) -> Look:
    """A garment look around colour `base`; about 12 % keep a faint outline."""
    return Look(base, rng.random() < 0.7, int(rng.integers(2 ** 31)), int(rng.integers(2, 9)),
                rng.uniform(0.15, 0.4), rng.random() < 0.12)


def draw_garment(rng: np.random.Generator, canvas: Canvas, g: Garment, look: Look, worn: bool,
                 skin: np.ndarray, soft: float, parts: Sequence[int], label: bool) -> np.ndarray:
    """Draw `parts` (indices into g.parts; openings, seams and buttons with part 0) of `g`.

    label: `g` is the labelled garment (then `parts` is one part, tracked by the canvas).
    Returns the (h, w) float32 opacity of what was drawn, openings excluded, unblurred.
    """
    part = parts[0] if label else None
    polys = [g.parts[i] for i in parts]
    box = canvas.box([to_image(canvas.hom, p) for p in polys], 3 * soft + 2)
    fill = canvas.mask(polys, box=box)
    with_body = 0 in parts
    opening = Alpha(canvas.mask(g.openings, box=box).a * fill.a if g.openings and with_body
                    else np.zeros_like(fill.a), fill.x, fill.y)
    own = Alpha(np.clip(fill.a - opening.a, 0.0, 1.0), fill.x, fill.y)
    drawn = (own if g.opening_kind == "hole" else fill).blurred(soft)
    canvas.paint(drawn, _shaded(rng, look.base, look.pattern, look.n_folds, look.fold_strength,
                                look.pattern_seed, max(canvas.h, canvas.w)), part)
    if with_body and g.openings and g.opening_kind != "hole":
        if g.opening_kind == "inner":
            inner = _shaded(rng, colour(rng, rng.uniform(30, 230)), True, 2, 0.2)
        elif worn:
            inner = _tone(rng, skin, 0.06)
        else:
            inner = _tone(rng, look.base * rng.uniform(0.45, 0.7), 0.1)
        canvas.paint(opening.blurred(soft), inner, part)
    seam = np.clip(look.base * 0.72, 0, 255)
    for line in g.lines if with_body else []:
        canvas.line(line, seam, 0.006)
    for dot in g.dots if with_body else []:
        c = _fixed(to_image(canvas.hom, dot))
        cv2.circle(canvas.image, (int(c[0]), int(c[1])), int(max(1.5, 0.012 * canvas.px) * _SCALE),
                   tuple(float(v) for v in seam), -1, cv2.LINE_AA, _SHIFT)
    if look.outline:
        for poly in polys:
            canvas.line(np.concatenate([poly, poly[:1]]), np.clip(look.base * 0.65, 0, 255), 0.004)
    return own.full(canvas.h, canvas.w)


def draw_body(rng: np.random.Generator, canvas: Canvas, parts: Sequence[Tuple[str, np.ndarray]],
              skin: np.ndarray, hair: np.ndarray, shoe: np.ndarray, sk: Skeleton) -> None:
    """Draw body parts (name, canonical polygon): skin, hair, face (with features), shoe."""
    paints = {"skin": skin, "hand": skin, "face": skin, "hair": hair, "shoe": shoe}
    for name, poly in parts:
        alpha = canvas.mask([poly], rng.uniform(0.6, 1.4))
        if name == "hair":
            canvas.paint(alpha, _shaded(rng, hair, False, 4, 0.35))
        else:
            canvas.paint(alpha, _tone(rng, paints[name], 0.06 if name != "shoe" else 0.15))
        if name == "face":
            head, (rx, ry) = sk.j("head"), sk.head_axes
            dark = np.clip(skin * 0.35, 0, 255)
            for side in (-1, 1):
                eye = ellipse(head + (side * rx * 0.38, -ry * 0.05), (rx * 0.12, ry * 0.06), 0, 10)
                canvas.paint(canvas.mask([eye], 0.5), dark)
            canvas.line(np.array([head + (-rx * 0.25, ry * 0.5), head + (rx * 0.25, ry * 0.5)]),
                        np.clip(skin * np.array([0.6, 0.6, 0.85]), 0, 255), 0.008)


def _tone(rng: np.random.Generator, base: np.ndarray, amplitude: float):
    """Paint callable: a flat colour with gentle low-frequency shading."""
    seed = int(rng.integers(2 ** 31))

    def paint(x: int, y: int, h: int, w: int) -> np.ndarray:
        shade = smooth_field(np.random.default_rng(seed), h, w, amplitude)
        return base.astype(np.float32) * shade[..., None]
    return paint


def draw_props(rng: np.random.Generator, canvas: Canvas, targets: np.ndarray, n: int) -> None:
    """Draw `n` objects (bags, labels, boxes) near random targets (K, 2 image pixels)."""
    m = min(canvas.h, canvas.w)
    for _ in range(n if len(targets) else 0):
        centre = targets[int(rng.integers(len(targets)))] + rng.normal(0, 0.03 * m, 2)
        r = rng.uniform(0.04, 0.10) * m
        angle = rng.uniform(0, np.pi)
        if rng.random() < 0.5:
            poly = ellipse(centre, (r, r * rng.uniform(0.4, 1.0)), angle)
        else:
            poly = cv2.boxPoints(((float(centre[0]), float(centre[1])),
                                  (float(r * 2), float(r * rng.uniform(0.6, 2.0))),
                                  float(np.rad2deg(angle)))).astype(np.float64)
        canvas.paint(canvas.mask([poly], 0.8, image_frame=True),
                     _tone(rng, colour(rng, rng.uniform(20, 235)), 0.1))


def _hanger(sk: Skeleton, top: bool) -> List[np.ndarray]:
    """Hanger polygons (canonical): hook and bar above the shoulders (top) or the waistband."""
    y = sk.shoulder_y - 0.01 if top else sk.waist_y - 0.03
    hw = sk.shoulder_hw * 0.95 if top else sk.hip_hw * 1.1
    bar = np.array([(-hw, y), (0.0, y - 0.10 if top else y - 0.02), (hw, y),
                    (hw, y + 0.02), (0.0, y - 0.08 if top else y), (-hw, y + 0.02)])
    hook_y = y - (0.12 if top else 0.04)
    hook = np.concatenate([ellipse(np.array([0.0, hook_y - 0.05]), (0.045, 0.05), 0.0, 12,
                                   -0.3, np.pi),
                           ellipse(np.array([0.0, hook_y - 0.05]), (0.03, 0.035), 0.0, 12,
                                   np.pi, -0.3)])
    return [bar, hook, np.array([(-0.008, hook_y - 0.01), (0.008, hook_y - 0.01),
                                 (0.008, hook_y + 0.03), (-0.008, hook_y + 0.03)])]


def garment_passes(g: Garment, front_arms: bool) -> List[Optional[List[int]]]:
    """Painting order of a garment's parts; None marks where forearms held in front go.

    Tops: sleeves of arms behind the back (or folded behind), the body, the
    forearms in front, the other sleeves. Other garments: their one part.
    """
    if g.category not in TOPS:
        return [[i] for i in range(len(g.parts))]
    if len(g.parts) < 3:                                   # sleeveless
        return [[0]] + ([None] if front_arms else [])
    behind = [1 + i for i, pose in enumerate(g.pose) if pose in BEHIND_POSES]
    front = [1 + i for i, pose in enumerate(g.pose) if pose not in BEHIND_POSES]
    return [[i] for i in behind] + [[0]] + ([None] if front_arms else []) + [[i] for i in front]


@dataclasses.dataclass
class Scene:
    """What one image shows, in the canonical frame, and how it is framed.

    size: (width, height) pixels; shot: one of SHOTS; skeleton: the figure's
    (drawn only for worn shots, `body` its polygons); garment: the labelled one;
    second / place: an unlabelled garment and where it goes ("under", "over",
    "beside"); hom: canonical -> image pixels (a `Warp`); framing: the keypoint
    box's share of the image area; present: (K,) bool, the labelled keypoints
    annotated (the others are absent, `-1_-1_-1`).
    """

    size: Tuple[int, int]
    shot: str
    skeleton: Skeleton
    body: Optional[BodyParts]
    garment: Garment
    second: Optional[Garment]
    place: str
    hom: "Warp"
    framing: float
    present: np.ndarray


def _sleeveless(category: str, present: np.ndarray) -> bool:
    """A top whose four cuffs are all absent is drawn without sleeves."""
    names = CATEGORY_KEYPOINTS[category]
    cuffs = [i for i, n in enumerate(names) if n.startswith("cuff_")]
    return bool(cuffs) and not present[cuffs].any()


def build_scene(rng: np.random.Generator, category: str) -> Scene:
    """Choose the image size, layout, shot, figure, garments and warp of one image."""
    model = real_model.load()
    size = model.sample_size(rng, category)
    target, present, frac = model.sample_layout(rng, category, size)
    shot = SHOTS[int(rng.choice(len(SHOTS), p=SHOT_P))]
    worn = shot == "worn"
    sleeves = not _sleeveless(category, present)
    best = None
    for _ in range(CANDIDATES):
        sk = sample_skeleton(rng, flat=not worn)
        g = make_garment(rng, category, sk, sleeves=sleeves)
        sim, err = similarity(g.keypoint_array(), target)
        if best is None or err < best[0]:
            best = (err, sk, g, sim)
    _, sk, g, sim = best
    second, place = second_garment(rng, category, shot)
    g2 = None
    if second:
        sk2 = sk if worn else sample_skeleton(rng, flat=True)
        tucked = g.keypoints["waistband_left"][1] + rng.uniform(0.03, 0.15) \
            if place == "under" and worn and second == "blouse" and "waistband_left" in g.keypoints \
            else None
        g2 = make_garment(rng, second, sk2, "hole" if category == "dress" else None, tucked)
        if place == "beside":
            _beside(rng, g, g2)
    hom = Warp(sim, g.keypoint_array(), target)
    body = body_parts(rng, sk) if worn else None
    return Scene(size, shot, sk, body, g, g2, place, hom, frac, present)


def draw_scene(rng: np.random.Generator, scene: Scene) -> Tuple[Canvas, np.ndarray]:
    """Paint a scene: background, body under the garments, garments in wearing order (the
    outer top's body, forearms held in front, its sleeves), hands, head and hair, props.

    Returns the canvas (tracking the labelled keypoints) and the (h, w) float32
    opacity of the labelled garment's own pixels.
    """
    w, h = scene.size
    worn, sk, body = scene.shot == "worn", scene.skeleton, scene.body
    g_lum = rng.uniform(30.0, 225.0)
    gap = rng.uniform(35.0, 100.0)
    b_lum = g_lum + gap if (g_lum + gap <= 240 and (g_lum - gap < 15 or rng.random() < 0.5)) \
        else g_lum - gap
    canvas = Canvas(background(rng, h, w, b_lum, int(rng.integers(0, 4)) if worn
                               else int(rng.integers(0, 10))), scene.hom)
    look = sample_look(rng, colour(rng, g_lum))
    look2 = sample_look(rng, colour(rng, rng.uniform(30, 225)))
    skin = SKIN_TONES[int(rng.integers(len(SKIN_TONES)))] + rng.uniform(-10, 10, 3)
    soft = rng.uniform(0.5, 1.6) * max(w, h) / 512
    hair = HAIR_COLOURS[body.hair_colour_index] + rng.uniform(-10, 10, 3) if body else None
    shoe = colour(rng, rng.uniform(20, 200), rng.uniform(0, 40))

    if worn:
        draw_body(rng, canvas, body.under + body.feet, skin, hair, shoe, sk)
    if scene.shot == "hanger":
        bar = _tone(rng, colour(rng, rng.uniform(40, 200), 30.0), 0.1)
        canvas.paint(canvas.mask(_hanger(sk, scene.garment.category in TOPS), 0.7), bar)
    g, g2 = scene.garment, scene.second
    xy = np.rint(to_image(scene.hom, g.keypoint_array())).astype(np.int64)
    inside = _inside(xy, scene.size)
    canvas.track(np.where(inside[:, None], xy, -1), g.keypoint_parts())
    order = ([(g2, look2, False)] if g2 is not None and scene.place != "over" else []) \
        + [(g, look, True)] + ([(g2, look2, False)] if g2 is not None and scene.place == "over" else [])
    outer_top = [x for x, _, _ in order if x.category in TOPS][-1:] if worn else []
    own = np.zeros((h, w), np.float32)
    for garment, lk, is_label in order:
        front_arms = worn and bool(body.front) and any(garment is t for t in outer_top)
        for parts in garment_passes(garment, front_arms):
            if parts is None:
                draw_body(rng, canvas, body.front, skin, hair, shoe, sk)
                continue
            drawn = draw_garment(rng, canvas, garment, lk, worn, skin, soft, parts, is_label)
            if is_label:
                own = np.maximum(own, drawn)
    if worn:
        draw_body(rng, canvas, body.over, skin, hair, shoe, sk)
    n_props = int(rng.choice(3, p=[0.5, 0.35, 0.15])) if not worn else int(rng.random() < 0.15)
    draw_props(rng, canvas, xy[inside].astype(np.float64), n_props)
    return canvas, own


def finish(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """Camera blur (30 %) and sensor noise (50 %) on a float32 image; returns uint8."""
    if rng.random() < 0.3:
        image = cv2.GaussianBlur(image, (0, 0), rng.uniform(0.4, 1.0))
    if rng.random() < 0.5:                        # cv2's RNG, seeded from ours
        cv2.setRNGSeed(int(rng.integers(2 ** 31)))
        noise = np.empty_like(image)
        cv2.randn(noise, 0.0, float(rng.uniform(1.0, 4.0)))
        image = image + noise
    return np.clip(image + 0.5, 0, 255).astype(np.uint8)


def render_sample(rng: np.random.Generator, category: str) -> Sample:
    """Draw one image of `category` with its keypoints (image pixel frame)."""
    scene = build_scene(rng, category)
    canvas, own = draw_scene(rng, scene)
    image = finish(rng, canvas.image)
    kps = np.full((NUM_KEYPOINTS, 3), -1, dtype=np.int64)
    drawn = canvas.point_cover > 0.5
    extra, uncover = real_model.load().occlusion_flips(category)
    u = rng.random(len(drawn))
    occluded = np.where(drawn, u >= uncover, u < extra)
    present = scene.present & (canvas.points[:, 0] >= 0)
    for j, name in enumerate(CATEGORY_KEYPOINTS[category]):
        if present[j]:
            x, y = canvas.points[j]
            kps[KEYPOINT_INDEX[name]] = (x, y, 0 if occluded[j] else 1)
    meta = {"shot": scene.shot, "figure": scene.shot == "worn",
            "second": scene.second.category if scene.second is not None else None,
            "second_place": scene.place or None,
            "quality": int(rng.integers(JPEG_QUALITY[0], JPEG_QUALITY[1] + 1)),
            "framing_target": scene.framing,
            "present": present.tolist(), "drawn_occluded": drawn.tolist()}
    return Sample(image, kps, own > 0.5, meta)
