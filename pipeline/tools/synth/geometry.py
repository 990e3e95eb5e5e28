"""Garment geometry: keypoints and outlines computed from garment parameters and a skeleton.

Every garment is built around a `figure.Skeleton` in the canonical frame
(x right, y down, the base of the neck at the origin, about 0.5 units from
neck to waist): tops hang from its shoulders and their sleeves follow its
arms, skirts and trousers sit on its waist and trouser legs follow its legs.
The keypoints are corners of the outline (neckline, shoulders, armpits, cuffs,
hems, waistline, waistband, crotch, trouser bottoms) or the bottom of the
neck opening (`center_front`), so they follow what is drawn.

`_left` keypoints lie on side -1 (the image's left); a cuff's or a trouser
bottom's `in` corner lies on the armpit / crotch side of the sleeve or leg.
"""
from __future__ import annotations

import dataclasses
from typing import Dict, FrozenSet, List, Optional, Tuple

import numpy as np

from pipeline.keypoints import CATEGORY_KEYPOINTS
from pipeline.tools.synth.figure import SIDES, Skeleton, offset_path

NAMES = {-1: "left", 1: "right"}
#: Sleeve length ranges, as a fraction of the arm (shoulder to wrist), per category.
SLEEVE = {"blouse": (0.12, 1.0), "outwear": (0.75, 1.0), "dress": (0.08, 0.95)}


@dataclasses.dataclass(eq=False)
class Garment:
    """One garment in the canonical frame.

    keypoints: name -> (2,) point, exactly CATEGORY_KEYPOINTS[category].
    parts: filled polygons (M_i, 2) whose union is the garment (body first,
    then sleeves or legs, drawn in that order). openings: polygons inside the
    garment showing what is beneath (neck opening: skin when worn; an open
    front). opening_kind: "skin", "inner" (another fabric) or "hole" (not
    drawn at all). lines: seams and creases (open polylines); dots: buttons.
    """

    category: str
    keypoints: Dict[str, np.ndarray]
    parts: List[np.ndarray]
    openings: List[np.ndarray] = dataclasses.field(default_factory=list)
    opening_kind: str = "skin"
    lines: List[np.ndarray] = dataclasses.field(default_factory=list)
    dots: List[np.ndarray] = dataclasses.field(default_factory=list)
    pose: Tuple[str, str] = ("flat", "flat")

    def keypoint_parts(self) -> List[FrozenSet[int]]:
        """Per keypoint (category order), the indices of the parts it is a corner of.

        Tops: part 0 is the body, 1 and 2 the image-left and image-right
        sleeves; cuffs belong to their sleeve, shoulders and armpits to the body
        and their sleeve, the rest to the body.
        """
        out = []
        for name in CATEGORY_KEYPOINTS[self.category]:
            side = 1 if "_left" in name else 2 if "_right" in name else 0
            if name.startswith("cuff_"):
                out.append(frozenset({side}))
            elif name.startswith(("shoulder_", "armpit_")) and len(self.parts) > 2:
                out.append(frozenset({0, side}))
            else:
                out.append(frozenset({0}))
        return out

    def keypoint_array(self) -> np.ndarray:
        """(K, 2) keypoints in CATEGORY_KEYPOINTS[category] order."""
        return np.stack([self.keypoints[n] for n in CATEGORY_KEYPOINTS[self.category]])


def _p(x: float, y: float) -> np.ndarray:
    return np.array([x, y], dtype=np.float64)


def bezier(p0: np.ndarray, ctrl: np.ndarray, p1: np.ndarray, n: int = 8) -> np.ndarray:
    """(n+1, 2) points of the quadratic Bezier p0 -> p1, both ends included."""
    t = np.linspace(0.0, 1.0, n + 1)[:, None]
    return (1 - t) ** 2 * p0 + 2 * (1 - t) * t * ctrl + t ** 2 * p1


def bulge(p0: np.ndarray, p1: np.ndarray, amount: float, n: int = 8) -> np.ndarray:
    """Curve p0 -> p1 bowed `amount` units towards (-dy, dx) of the chord (dx, dy)."""
    d = p1 - p0
    normal = np.array([-d[1], d[0]]) / (np.hypot(*d) + 1e-12)
    return bezier(p0, (p0 + p1) / 2 + normal * amount, p1, n)


def trim_path(path: np.ndarray, widths: np.ndarray, length: float) -> Tuple[np.ndarray, np.ndarray]:
    """Cut a polyline (n, 2) with per-vertex widths (n,) at arc length `length` (clamped)."""
    seg = np.linalg.norm(np.diff(path, axis=0), axis=1)
    arc = np.concatenate([[0.0], np.cumsum(seg)])
    length = float(np.clip(length, 1e-3, arc[-1]))
    keep = int(np.searchsorted(arc, length, side="right"))
    end = np.array([np.interp(length, arc, path[:, 0]), np.interp(length, arc, path[:, 1])])
    w_end = float(np.interp(length, arc, widths))
    pts = np.concatenate([path[:keep], end[None]])
    ws = np.concatenate([widths[:keep], [w_end]])
    if len(pts) > 2 and np.linalg.norm(pts[-1] - pts[-2]) < 1e-6:
        pts, ws = np.delete(pts, -2, 0), np.delete(ws, -2)
    return pts, ws


def tube(start_out: np.ndarray, start_in: np.ndarray, path: np.ndarray, widths: np.ndarray,
         side: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A sleeve or trouser leg: polygon, end corner `in`, end corner `out`.

    The tube starts at the cross-section start_out-start_in and follows `path`
    (n, 2) (its first point is replaced by that cross-section) with half-widths
    `widths` (n,). `in` is the edge towards the body's centre line / armpit on
    `side` (-1 image-left, +1 image-right). Polygon order: start_out, outer
    edge, end out, end in, inner edge back, start_in.
    """
    left, right = offset_path(path, widths)
    inner, outer = (left, right) if side > 0 else (right, left)
    poly = np.concatenate([start_out[None], outer[1:], inner[1:][::-1], start_in[None]])
    return poly, inner[-1], outer[-1]


def _sleeve(rng: np.random.Generator, sk: Skeleton, side: int, shoulder: np.ndarray,
            armpit: np.ndarray, fraction: float) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sleeve covering `fraction` of the arm from the armhole shoulder-armpit: (polygon, in, out)."""
    arm = sk.arm(side)
    start = (shoulder + armpit) / 2
    path = np.concatenate([start[None], arm[1:]])
    hw0 = np.linalg.norm(shoulder - armpit) / 2
    cuff_hw = max(hw0 * rng.uniform(0.45, 0.85), sk.arm_hw * 1.25)
    widths = np.array([hw0, max(hw0 * 0.85, cuff_hw), cuff_hw])
    arm_len = float(np.sum(np.linalg.norm(np.diff(path, axis=0), axis=1)))
    path, widths = trim_path(path, widths, max(fraction * arm_len, hw0 * 1.2))
    if len(path) == 2 and fraction < 0.35:        # short sleeve: flares a little
        widths = widths * np.array([1.0, rng.uniform(1.0, 1.2)])
    return tube(shoulder, armpit, path, widths, side)


def top(rng: np.random.Generator, category: str, sk: Skeleton,
        open_front: Optional[str] = None, hem_y: Optional[float] = None,
        sleeves: bool = True) -> Garment:
    """Blouse, outwear or dress on the skeleton (`open_front`: None, "inner" or "hole").

    hem_y: the hem's height for a blouse (e.g. just below the waistband of a
    skirt it is tucked into); drawn at random when None. sleeves=False: a
    sleeveless top (the armhole runs from shoulder to armpit; the cuff
    keypoints are still computed, where sleeves would end, but nothing is drawn
    there).
    """
    u = rng.uniform
    nw, neck_y = u(0.055, 0.10), u(-0.015, 0.01)
    ease = u(0.01, 0.05) + (0.025 if category == "outwear" else 0.0)
    k: Dict[str, np.ndarray] = {"neckline_left": _p(-nw, neck_y), "neckline_right": _p(nw, neck_y)}
    fraction = u(*SLEEVE[category])
    if category == "blouse" and rng.random() < 0.35:
        fraction = u(0.85, 1.0)
    armpit_y = sk.chest_y + u(-0.02, 0.05)
    sleeve_parts = []
    for side in SIDES:
        name = NAMES[side]
        shoulder = _p(side * (sk.shoulder_hw + u(-0.01, 0.03)), sk.shoulder_y + u(-0.025, 0.005))
        armpit = _p(side * (sk.torso_hw(armpit_y) + ease), armpit_y)
        poly, cin, cout = _sleeve(rng, sk, side, shoulder, armpit, fraction * u(0.96, 1.04))
        k[f"shoulder_{name}"], k[f"armpit_{name}"] = shoulder, armpit
        k[f"cuff_{name}_in"], k[f"cuff_{name}_out"] = cin, cout
        sleeve_parts.append(poly)

    max_hem = min(sk.j("ankle", -1)[1], sk.j("ankle", 1)[1]) - 0.08
    sides: List[Tuple[Optional[str], float, float]] = []        # (keypoint stem, y, half-width)
    if category == "blouse":
        hem_y = sk.waist_y + u(-0.10, 0.30) if hem_y is None else hem_y
        if hem_y > sk.waist_y + 0.03:
            sides.append((None, sk.waist_y, sk.torso_hw(sk.waist_y) + ease))
        sides.append(("top_hem", hem_y, sk.torso_hw(hem_y) + ease * u(1.0, 1.8) + u(0.0, 0.04)))
    else:
        waist_y = sk.waist_y + u(-0.05, 0.04)
        sides.append(("waistline", waist_y, sk.torso_hw(waist_y) + ease * u(0.6, 1.1)))
        if category == "outwear":
            hem_y = min(waist_y + u(0.12, 0.8), max_hem)
            flare = u(0.0, 0.10)
            stem = "top_hem"
        else:
            hem_y = min(sk.hip_y + u(0.12, 1.0), max_hem)
            flare = u(0.02, 0.45) * (hem_y - sk.hip_y)
            stem = "hemline"
        if hem_y > sk.hip_y + 0.04:
            sides.append((None, sk.hip_y, sk.hip_hw + ease))
            hem_hw = sk.hip_hw + ease + flare
        else:
            hem_hw = sk.torso_hw(hem_y) + ease + flare * 0.5
        sides.append((stem, hem_y, hem_hw))
    for stem, y, hw in sides:
        if stem:
            k[f"{stem}_left"], k[f"{stem}_right"] = _p(-hw, y), _p(hw, y)
    left = [_p(-hw, y) for _, y, hw in sides]
    right = [_p(hw, y) for _, y, hw in reversed(sides)]
    back_neck = bezier(k["neckline_right"], _p(0.0, neck_y - u(0.01, 0.05)), k["neckline_left"])
    body = np.concatenate([np.array([k["neckline_left"], k["shoulder_left"], k["armpit_left"]]),
                           np.array(left[:-1]).reshape(-1, 2), bulge(left[-1], right[0], u(0.0, 0.05)),
                           np.array(right[1:]).reshape(-1, 2),
                           np.array([k["armpit_right"], k["shoulder_right"], k["neckline_right"]]),
                           back_neck[1:-1]])

    hem_y = sides[-1][1]
    depth = u(0.05, 0.22) if category != "outwear" else u(0.12, 0.35)
    if category == "outwear" or rng.random() < 0.5:                 # V neck
        cf = _p(u(-0.008, 0.008), neck_y + depth)
        front = np.array([k["neckline_left"], cf, k["neckline_right"]])
    else:                                                          # round neck
        cf = _p(0.0, neck_y + depth)
        front = np.concatenate([bezier(k["neckline_left"], _p(-nw, neck_y + depth), cf, 6),
                                bezier(cf, _p(nw, neck_y + depth), k["neckline_right"], 6)[1:]])
    if "center_front" in CATEGORY_KEYPOINTS[category]:
        k["center_front"] = cf
    opening = np.concatenate([front, back_neck[1:-1]])
    kind = "skin"
    lines, dots = [], []
    if open_front:
        gap = u(0.02, 0.08)
        opening = np.concatenate([np.array([k["neckline_left"], _p(-gap * 0.6, cf[1]),
                                            _p(-gap, hem_y + 0.02), _p(gap, hem_y + 0.02),
                                            _p(gap * 0.6, cf[1]), k["neckline_right"]]),
                                  back_neck[1:-1]])
        kind = open_front
    elif category == "outwear":
        lines.append(np.array([cf, _p(cf[0], hem_y)]))
        for t in np.linspace(0.12, 0.85, int(rng.integers(0, 6))):
            dots.append(_p(cf[0] + 0.025, cf[1] + t * (hem_y - cf[1])))
    if "waistline_left" in k and rng.random() < 0.6:
        lines.append(np.array([k["waistline_left"], k["waistline_right"]]))
    return Garment(category, k, [body] + (sleeve_parts if sleeves else []), [opening], kind,
                   lines, dots)


def skirt(rng: np.random.Generator, sk: Skeleton) -> Garment:
    """Skirt on the skeleton's waist: waistband corners on top, hemline corners below."""
    u = rng.uniform
    ease = u(0.01, 0.04)
    top_y = sk.waist_y + u(-0.03, 0.10)
    ww = sk.torso_hw(top_y) + ease
    max_hem = min(sk.j("ankle", -1)[1], sk.j("ankle", 1)[1]) - 0.06
    hem_y = min(top_y + u(0.25, 1.15), max_hem)
    below_hip = max(hem_y - sk.hip_y, 0.0)
    hem_hw = max(sk.hip_hw + ease, ww) + u(0.0, 0.5) * below_hip + u(0.0, 0.03)
    k = {"waistband_left": _p(-ww, top_y), "waistband_right": _p(ww, top_y),
         "hemline_left": _p(-hem_hw, hem_y), "hemline_right": _p(hem_hw, hem_y)}
    hip = [_p(s * (sk.hip_hw + ease + u(0.0, 0.02)), sk.hip_y) for s in SIDES] \
        if sk.hip_y > top_y + 0.05 and sk.hip_y < hem_y - 0.05 else []
    left = [k["waistband_left"]] + hip[:1] + [k["hemline_left"]]
    right = [k["hemline_right"]] + hip[1:] + [k["waistband_right"]]
    outline = np.concatenate([np.array(left), bulge(k["hemline_left"], k["hemline_right"],
                                                    u(0.0, 0.06))[1:-1], np.array(right)])
    band_h = u(0.03, 0.06)
    lines = [np.array([_p(-ww, top_y + band_h), _p(ww, top_y + band_h)])]
    for t in np.linspace(-0.7, 0.7, int(rng.integers(0, 6))):
        lines.append(np.array([_p(t * ww, top_y + band_h), _p(t * hem_hw, hem_y - 0.02)]))
    return Garment("skirt", k, [outline], lines=lines)


def trousers(rng: np.random.Generator, sk: Skeleton) -> Garment:
    """Trousers or shorts on the skeleton: waistband, crotch, legs following its legs."""
    u = rng.uniform
    ease = u(0.01, 0.04)
    top_y = sk.waist_y + u(-0.03, 0.10)
    ww = sk.torso_hw(top_y) + ease
    crotch = _p(u(-0.008, 0.008), sk.crotch_y + u(0.0, 0.04))
    k = {"waistband_left": _p(-ww, top_y), "waistband_right": _p(ww, top_y), "crotch": crotch}
    fraction = u(0.15, 0.45) if rng.random() < 0.25 else u(0.75, 1.0)
    wide = u(1.0, 1.9)
    legs = {}
    for side in SIDES:
        hip_out = _p(side * (sk.hip_hw + ease), max(sk.hip_y, top_y + 0.05))
        leg = sk.leg(side)
        start = (hip_out + crotch) / 2
        path = np.concatenate([start[None], leg[1:]])
        hw0 = np.linalg.norm(hip_out - crotch) / 2
        widths = np.array([hw0, sk.leg_hw * 0.72 * max(wide, 1.25), sk.leg_hw * 0.5 * wide * 1.3])
        # the legs stay apart below the crotch, so that it remains a corner of the outline
        widths[1:] = np.minimum(widths[1:], np.maximum(np.abs(leg[1:, 0]) - 0.05, sk.leg_hw * 0.6))
        total = float(np.sum(np.linalg.norm(np.diff(path, axis=0), axis=1)))
        path, widths = trim_path(path, widths, max(fraction * u(0.97, 1.03) * total, hw0 * 1.5))
        poly, b_in, b_out = tube(hip_out, crotch, path, widths, side)
        k[f"bottom_{NAMES[side]}_in"], k[f"bottom_{NAMES[side]}_out"] = b_in, b_out
        legs[side] = poly
    # one outline: waistband, left leg (down the outside, up the inside), crotch, right leg
    left_leg = legs[-1][:-1]                   # hip_out ... inner edge, without the crotch
    right_leg = legs[1][::-1][1:]              # crotch excluded, inner edge down, ..., hip_out
    outline = np.concatenate([np.array([k["waistband_right"], k["waistband_left"]]),
                              left_leg, crotch[None], right_leg])
    band_h = u(0.03, 0.05)
    lines = [np.array([_p(-ww, top_y + band_h), _p(ww, top_y + band_h)]),
             np.array([_p(crotch[0], top_y + band_h), crotch - _p(0.0, 0.04)])]
    return Garment("trousers", k, [outline], lines=lines)


def _distinct(g: Garment, min_dist: float = 0.03) -> bool:
    pts = g.keypoint_array()
    d = np.linalg.norm(pts[:, None] - pts[None], axis=-1)
    np.fill_diagonal(d, np.inf)
    return bool(d.min() >= min_dist)


def make_garment(rng: np.random.Generator, category: str, sk: Skeleton,
                 open_front: Optional[str] = None, hem_y: Optional[float] = None,
                 sleeves: bool = True) -> Garment:
    """A garment of `category` on skeleton `sk`, its keypoints at least 0.03 units apart
    (open_front, hem_y, sleeves: see `top`)."""
    for _ in range(20):
        if category == "skirt":
            g = skirt(rng, sk)
        elif category == "trousers":
            g = trousers(rng, sk)
        else:
            g = top(rng, category, sk, open_front, hem_y, sleeves)
        g.pose = sk.pose
        if _distinct(g):
            break
    return g


