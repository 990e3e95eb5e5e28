"""The drawn figure: a skeleton with proportions and a pose, and its body parts as polygons.

Coordinate frame (*canonical frame*, shared with `geometry`): x to the right,
y down, the base of the neck at the origin, about 0.5 units from the neck to
the waist. Side -1 is the image-left half of the body, +1 the image-right half
(the figure faces the camera; garments' `_left` points lie on side -1, the
convention of the released annotations).

A `Skeleton` is used by every image, worn or not: the garment geometry follows
its arms and legs. Flat-lay and hanger shots use a skeleton with a "flat" pose
and draw none of the body.
"""
from __future__ import annotations

import dataclasses
from typing import Dict, List, Tuple

import numpy as np

SIDES = (-1, 1)

#: Arm poses: (upper arm angle range, elbow bend range) in degrees. The upper arm
#: angle is measured from straight down, positive outwards; the forearm's angle is
#: upper + bend (negative bends swing the forearm in front of the body).
ARM_POSES: Dict[str, Tuple[Tuple[float, float], Tuple[float, float]]] = {
    "down": ((2.0, 12.0), (-4.0, 8.0)),
    "out": ((18.0, 45.0), (-10.0, 20.0)),
    "hip": ((28.0, 45.0), (-95.0, -70.0)),        # hand on the hip
    "bent": ((5.0, 20.0), (-75.0, -45.0)),        # forearm raised in front
    "raised": ((100.0, 160.0), (-30.0, 15.0)),
    "crossed": ((4.0, 14.0), (-125.0, -100.0)),   # forearm across the body
    "behind": ((6.0, 18.0), (-85.0, -55.0)),      # hand behind the back / in a back pocket
    "flat": ((18.0, 70.0), (-4.0, 4.0)),          # laid flat, no body
    "folded": ((10.0, 35.0), (-150.0, -115.0)),   # laid flat, sleeve folded over the front
    "folded_back": ((10.0, 30.0), (-120.0, -90.0)),   # laid flat, sleeve folded behind
}
#: Poses whose forearm lies in front of the body / behind it.
FRONT_POSES = ("hip", "bent", "crossed", "folded")
BEHIND_POSES = ("behind", "folded_back")
#: Worn poses and their probabilities (applied to both arms, or to one arm with "down" on the other).
WORN_POSES = ("down", "out", "hip", "bent", "raised", "crossed", "behind")
WORN_POSE_P = (0.26, 0.12, 0.16, 0.10, 0.09, 0.15, 0.12)
FLAT_POSES = ("flat", "folded", "folded_back")
FLAT_POSE_P = (0.7, 0.15, 0.15)


@dataclasses.dataclass
class Skeleton:
    """Joints and body widths of one figure (canonical frame).

    joints: name -> (2,) point; names `head`, and per side s in (-1, 1):
    `shoulder{s}`, `elbow{s}`, `wrist{s}`, `hip{s}`, `knee{s}`, `ankle{s}`
    (e.g. `wrist-1`). The body outline is given by half-widths at heights:
    `chest` at `chest_y`, `waist` at `waist_y`, `hips` at `hip_y`; the legs
    part at `crotch_y`.
    """

    joints: Dict[str, np.ndarray]
    head_axes: Tuple[float, float]
    neck_hw: float
    shoulder_hw: float
    shoulder_y: float
    chest_hw: float
    chest_y: float
    waist_hw: float
    waist_y: float
    hip_hw: float
    hip_y: float
    crotch_y: float
    arm_hw: float
    leg_hw: float
    pose: Tuple[str, str]

    def j(self, name: str, side: int = 0) -> np.ndarray:
        """Joint `name` on `side` (0 for unpaired joints)."""
        return self.joints[f"{name}{side:+d}" if side else name]

    def torso_hw(self, y: float) -> float:
        """Half-width of the bare torso at height y (linear between chest, waist, hips)."""
        ys = [self.shoulder_y, self.chest_y, self.waist_y, self.hip_y, self.crotch_y]
        ws = [self.shoulder_hw * 0.9, self.chest_hw, self.waist_hw, self.hip_hw, self.hip_hw * 0.95]
        return float(np.interp(y, ys, ws))

    def arm(self, side: int) -> np.ndarray:
        """(3, 2) shoulder, elbow, wrist of one arm."""
        return np.stack([self.j(n, side) for n in ("shoulder", "elbow", "wrist")])

    def leg(self, side: int) -> np.ndarray:
        """(3, 2) hip joint, knee, ankle of one leg."""
        return np.stack([self.j(n, side) for n in ("hip", "knee", "ankle")])


def _direction(side: int, angle_deg: float) -> np.ndarray:
    """Unit vector `angle_deg` from straight down, towards the outside of `side`."""
    a = np.deg2rad(angle_deg)
    return np.array([side * np.sin(a), np.cos(a)])


def sample_pose(rng: np.random.Generator, flat: bool) -> Tuple[str, str]:
    """Arm pose names for sides (-1, +1)."""
    if flat:
        return tuple(FLAT_POSES[int(rng.choice(len(FLAT_POSES), p=FLAT_POSE_P))] for _ in SIDES)
    pose = WORN_POSES[int(rng.choice(len(WORN_POSES), p=WORN_POSE_P))]
    if pose == "crossed" or rng.random() < 0.6:
        return pose, pose
    return (pose, "down") if rng.random() < 0.5 else ("down", pose)


def sample_skeleton(rng: np.random.Generator, flat: bool = False) -> Skeleton:
    """A figure's proportions and pose (canonical frame); `flat` lays the arms and legs out."""
    u = rng.uniform
    sh_hw, sh_y = u(0.21, 0.27), u(0.04, 0.08)
    chest_y, chest_hw = sh_y + u(0.15, 0.19), sh_hw * u(0.72, 0.82)
    waist_y, waist_hw = u(0.46, 0.54), u(0.12, 0.16)
    hip_y, hip_hw = waist_y + u(0.15, 0.22), u(0.17, 0.22)
    crotch_y = hip_y + u(0.07, 0.11)
    upper, fore = u(0.30, 0.35), u(0.26, 0.31)
    thigh, shin = u(0.45, 0.52), u(0.45, 0.52)
    pose = sample_pose(rng, flat)
    joints = {"head": np.array([u(-0.012, 0.012), -u(0.16, 0.19)])}
    for side, name in zip(SIDES, pose):
        (a_lo, a_hi), (b_lo, b_hi) = ARM_POSES[name]
        a = u(a_lo, a_hi)
        b = u(b_lo, b_hi)
        shoulder = np.array([side * sh_hw * 0.9, sh_y + 0.025])
        elbow = shoulder + upper * _direction(side, a)
        joints[f"shoulder{side:+d}"] = shoulder
        joints[f"elbow{side:+d}"] = elbow
        joints[f"wrist{side:+d}"] = elbow + fore * _direction(side, a + b)
        spread = u(4.0, 14.0) if flat else u(1.0, 8.0)
        hip = np.array([side * hip_hw * 0.5, hip_y + 0.03])
        knee = hip + thigh * _direction(side, spread)
        joints[f"hip{side:+d}"] = hip
        joints[f"knee{side:+d}"] = knee
        joints[f"ankle{side:+d}"] = knee + shin * _direction(side, spread + u(-6.0, 4.0))
    return Skeleton(joints, (u(0.075, 0.09), u(0.10, 0.115)), u(0.04, 0.05), sh_hw, sh_y,
                    chest_hw, chest_y, waist_hw, waist_y, hip_hw, hip_y, crotch_y,
                    arm_hw=u(0.04, 0.05), leg_hw=u(0.065, 0.08), pose=pose)


# --------------------------------------------------------------------------- polygons

def offset_path(path: np.ndarray, half_widths: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Both edges of a band of half-width `half_widths` (n,) around the polyline `path` (n, 2).

    Returns (left, right), each (n, 2): left = path + normal * w with normal
    (-dy, dx) of the local direction (mitred at joints, mitre length capped at 2 w).
    """
    path = np.asarray(path, np.float64)
    seg = np.diff(path, axis=0)
    seg /= np.linalg.norm(seg, axis=1, keepdims=True) + 1e-12
    normals = np.stack([-seg[:, 1], seg[:, 0]], 1)
    vert = np.concatenate([normals[:1], normals[:-1] + normals[1:], normals[-1:]])
    vert /= np.linalg.norm(vert, axis=1, keepdims=True) + 1e-12
    cos = np.ones(len(path))
    if len(path) > 2:
        cos[1:-1] = np.clip(np.sum(vert[1:-1] * normals[:-1], 1), 0.5, 1.0)
    off = vert * (np.asarray(half_widths) / cos)[:, None]
    return path + off, path - off


def band(path: np.ndarray, half_widths) -> np.ndarray:
    """Closed polygon (2n, 2) of a band around a polyline (n, 2)."""
    hw = np.broadcast_to(np.asarray(half_widths, np.float64), (len(path),))
    left, right = offset_path(path, hw)
    return np.concatenate([left, right[::-1]])


def ellipse(centre: np.ndarray, axes: Tuple[float, float], angle: float = 0.0,
            n: int = 24, start: float = 0.0, stop: float = 2 * np.pi) -> np.ndarray:
    """(n, 2) points on an ellipse (angle in radians, rotation of the x axis)."""
    t = np.linspace(start, stop, n, endpoint=stop - start < 2 * np.pi - 1e-9)
    pts = np.stack([axes[0] * np.cos(t), axes[1] * np.sin(t)], 1)
    c, s = np.cos(angle), np.sin(angle)
    return pts @ np.array([[c, s], [-s, c]]) + centre


@dataclasses.dataclass
class BodyParts:
    """Polygons (canonical frame) of one figure, grouped by drawing layer.

    under: drawn before any garment (legs, torso, neck, arms, back hair);
    feet: shoes; front: forearms held in front of the body (drawn over the
    outer top's body, under its sleeves); over: drawn after every garment
    (hands, head and face, front hair). Each entry is (name, polygon (M, 2)).
    """

    under: List[Tuple[str, np.ndarray]]
    feet: List[Tuple[str, np.ndarray]]
    front: List[Tuple[str, np.ndarray]]
    over: List[Tuple[str, np.ndarray]]
    hair_colour_index: int


def body_parts(rng: np.random.Generator, sk: Skeleton) -> BodyParts:
    """The figure's polygons: skin, hair and shoes (canonical frame)."""
    u = rng.uniform
    under, feet, front, over = [], [], [], []
    head = sk.j("head")
    rx, ry = sk.head_axes
    style = int(rng.choice(3, p=[0.25, 0.25, 0.5]))       # short, bob, long
    if style == 2:                                         # long hair behind the shoulders
        length = u(0.15, 0.55)
        back = np.array([head + (-rx * 1.15, 0.0), head + (rx * 1.15, 0.0),
                         (rx * 1.6, length), (-rx * 1.6, length)])
        under.append(("hair", back))
    for side in SIDES:
        leg = sk.leg(side)
        under.append(("skin", band(leg, [sk.leg_hw, sk.leg_hw * 0.72, sk.leg_hw * 0.5])))
        ankle, knee = leg[2], leg[1]
        d = (ankle - knee) / (np.linalg.norm(ankle - knee) + 1e-12)
        toe = ankle + d * 0.05 + np.array([side * 0.04, 0.0])
        feet.append(("shoe", ellipse((ankle + toe) / 2 + (0, 0.01), (0.065, 0.035),
                                     np.arctan2(*(toe - ankle)[::-1]))))
    ys = np.array([sk.shoulder_y, sk.chest_y, sk.waist_y, sk.hip_y, sk.crotch_y + 0.04])
    hws = np.array([sk.torso_hw(y) for y in ys])
    torso = np.concatenate([np.stack([-hws, ys], 1), np.stack([hws, ys], 1)[::-1]])
    neck = np.array([(-sk.neck_hw, head[1] + ry * 0.6), (sk.neck_hw, head[1] + ry * 0.6),
                     (sk.neck_hw * 1.3, sk.shoulder_y), (-sk.neck_hw * 1.3, sk.shoulder_y)])
    under += [("skin", torso), ("skin", neck)]
    for side, pose in zip(SIDES, sk.pose):
        arm = sk.arm(side)
        widths = [sk.arm_hw * 1.15, sk.arm_hw * 0.85, sk.arm_hw * 0.62]
        if pose in FRONT_POSES:
            under.append(("skin", band(arm[:2], widths[:2])))
            front.append(("skin", band(arm[1:], widths[1:])))
        else:
            under.append(("skin", band(arm, widths)))
        d = arm[2] - arm[1]
        d /= np.linalg.norm(d) + 1e-12
        hand_len = u(0.085, 0.11)
        (under if pose in BEHIND_POSES else over).append(("hand", ellipse(arm[2] + d * hand_len * 0.45, (hand_len * 0.6, sk.arm_hw * 0.8),
                                     np.arctan2(d[1], d[0]))))
    if style >= 1:                                         # hair framing the face
        over.append(("hair", ellipse(head + (0, ry * 0.2), (rx * 1.22, ry * 1.05))))
    over.append(("face", ellipse(head, (rx, ry))))
    over.append(("hair", ellipse(head - (0, ry * 0.25), (rx * 1.08, ry * 0.85), 0.0, 20,
                                 np.pi * 1.02, np.pi * 1.98)))
    if style == 2 and rng.random() < 0.7:                 # strands over one or both shoulders
        for side in SIDES:
            if rng.random() < 0.6:
                top = head + (side * rx * 0.95, -ry * 0.2)
                end = np.array([side * u(0.05, sk.shoulder_hw * 1.1), u(0.08, 0.45)])
                w = u(0.035, 0.06)
                over.append(("hair", band(np.array([top, (top + end) / 2 + (side * 0.02, 0), end]),
                                          [w, w, w * 0.5])))
    return BodyParts(under, feet, front, over, int(rng.integers(5)))
