"""The fitted model of real annotations that the synthetic generator draws from.

`real_model.json` (beside this module, written by `python -m pipeline.tools.synth.fit_real`) holds
small numbers fitted on real FashionAI annotation rows and photos, never the rows themselves:

- `layouts[cat]`: the category's keypoint layout, normalised per row (centred on the box of
  its annotated points, divided by the square root of that box's area, rotation and pose
  kept), as a probabilistic PCA: `mean` (K, 2), `components` (C, 2K), their `variances` (C,)
  and an isotropic `residual` variance per coordinate (missing points were imputed while
  fitting, by iterated PCA reconstruction); `orientations`: keypoint triples that turn the
  same way in at least 98 % of the real rows (center_front below the necklines' line), kept
  by every drawn layout.
- `absence[cat]`: the joint patterns of absent keypoints (`-1_-1_-1`) and their
  probabilities (a sleeveless dress or blouse lacks its four cuffs together, most outwear
  rows lack the waistline pair).
- `occluded[cat]`: P(v=0 | annotated) per keypoint.
- `framing[cat]`: quantiles of the keypoint-box area over the image area (`levels`,
  `values`) and of the box's position in the free space of the image along x and y
  (0: touching the left/top border, 1: the right/bottom one).
- `sizes`: the image-size mix, [width, height, probability] rows; `sizes_by_category`: the
  same per category (the share of images not 512x512 runs from 0.26 for blouses to 0.38 for
  trousers).
- `render_occluded[cat]`: measured on the generator itself (`fit_real --calibrate`), the
  share of annotated points the drawing already covers (hands, hair, a second garment...),
  so that `occlusion_flips` brings each keypoint to the real `occluded` rate.
- `real`: the real figures the model was fitted to (for reference and tests).
"""
from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from pipeline.keypoints import CATEGORY_KEYPOINTS

MODEL_PATH = Path(__file__).with_name("real_model.json")
#: Latent PCA coordinates are drawn from a normal clipped at this many standard deviations.
Z_CLIP = 3.0
#: Draws of a layout before settling for the one breaking the fewest fitted orientations.
MAX_TRIES = 100
#: Margin (pixels) kept between the keypoints and the image border.
MARGIN = 2.0


class RealModel:
    """Sampling from a fitted model (see the module docstring for the fields)."""

    def __init__(self, data: Dict):
        self.data = data
        mixes = {None: data["sizes"], **data.get("sizes_by_category", {})}
        self.size_mix = {}
        for key, rows in mixes.items():
            p = np.array([q for _, _, q in rows], np.float64)
            self.size_mix[key] = (np.array([(w, h) for w, h, _ in rows], np.int64), p / p.sum())

    # ----------------------------------------------------------------- draws
    def sample_size(self, rng: np.random.Generator,
                    category: Optional[str] = None) -> Tuple[int, int]:
        """(width, height) from the real image-size mix (of `category` where fitted)."""
        sizes, p = self.size_mix.get(category, self.size_mix[None])
        w, h = sizes[int(rng.choice(len(sizes), p=p))]
        return int(w), int(h)

    def sample_shape(self, rng: np.random.Generator, category: str) -> np.ndarray:
        """(K, 2) normalised layout of `category` (CATEGORY_KEYPOINTS order): a PCA draw that
        keeps every fitted orientation (up to MAX_TRIES draws; else the one breaking fewest)."""
        m = self.data["layouts"][category]
        mean = np.asarray(m["mean"], np.float64)
        comps = np.asarray(m["components"], np.float64).reshape(-1, mean.size)
        sd = np.sqrt(np.asarray(m["variances"], np.float64))
        names = CATEGORY_KEYPOINTS[category]
        cons = [(names.index(a), names.index(b), names.index(c), s)
                for a, b, c, s in m.get("orientations", [])]
        best = None
        for _ in range(MAX_TRIES):
            z = np.clip(rng.standard_normal(len(sd)), -Z_CLIP, Z_CLIP)
            noise = rng.standard_normal(mean.size) * np.sqrt(m["residual"])
            x = mean + ((z * sd) @ comps + noise).reshape(mean.shape)
            broken = sum(turn(x, i, j, k) * s <= 0 for i, j, k, s in cons)
            if best is None or broken < best[0]:
                best = (broken, x)
            if broken == 0:
                break
        return best[1]

    def sample_absent(self, rng: np.random.Generator, category: str) -> np.ndarray:
        """(K,) bool: the keypoints absent from this image, one of the fitted joint patterns."""
        patterns = self.data["absence"][category]
        p = np.array([q for _, q in patterns], np.float64)
        names = patterns[int(rng.choice(len(patterns), p=p / p.sum()))][0]
        return np.array([n in names for n in CATEGORY_KEYPOINTS[category]])

    def _quantile_draw(self, rng: np.random.Generator, levels, values) -> float:
        levels = np.asarray(levels, np.float64)
        return float(np.interp(rng.uniform(levels[0], levels[-1]), levels, values))

    def sample_layout(self, rng: np.random.Generator, category: str,
                      size: Tuple[int, int]) -> Tuple[np.ndarray, np.ndarray, float]:
        """A layout placed in an image of `size`: (points (K, 2) pixels, present (K,) bool,
        box fraction).

        The box of the present points covers a fraction of the image area drawn from the
        real quantiles (less when its aspect does not fit the image), at a position in
        the free space drawn from the real quantiles; every present point lies inside
        the image.
        """
        w, h = size
        shape = self.sample_shape(rng, category)
        absent = self.sample_absent(rng, category)
        present = ~absent
        fr = self.data["framing"][category]
        frac = self._quantile_draw(rng, fr["levels"], fr["area"])
        ox = self._quantile_draw(rng, fr["levels"], fr["pos_x"])
        oy = self._quantile_draw(rng, fr["levels"], fr["pos_y"])
        pts = shape[present]
        lo, hi = pts.min(0), pts.max(0)
        box = np.maximum(hi - lo, 1e-3)
        scale = np.sqrt(frac * w * h / (box[0] * box[1]))
        room = np.array([w - 1.0, h - 1.0]) - 2 * MARGIN
        scale = min(scale, float(np.min(room / box)))
        size_px = box * scale
        corner = MARGIN + np.array([ox, oy]) * np.maximum(room - size_px, 0.0)
        xy = (shape - lo) * scale + corner
        got = float(np.prod(size_px) / (w * h))
        return xy, present, got

    def occlusion_flips(self, category: str) -> Tuple[np.ndarray, np.ndarray]:
        """(K,) probabilities (extra, uncover) that bring P(v=0 | annotated) to the real rate t
        given the rate r at which the drawing itself covers each keypoint (`render_occluded`):
        a point the drawing leaves visible is marked v=0 with probability extra = (t - r) /
        (1 - r) where t > r; a covered point is marked v=1 with probability uncover =
        (r - t) / r where r > t (a cuff under the edge of a hand, a waistline under an open
        jacket's edge, whose place the annotators still see). Either way r (1 - uncover) +
        (1 - r) extra = t."""
        names = CATEGORY_KEYPOINTS[category]
        t = np.array([self.data["occluded"][category][n] for n in names], np.float64)
        r = np.array([self.data.get("render_occluded", {}).get(category, {}).get(n, 0.0)
                      for n in names], np.float64)
        extra = np.clip((t - r) / np.maximum(1.0 - r, 1e-6), 0.0, 1.0)
        uncover = np.clip((r - t) / np.maximum(r, 1e-6), 0.0, 1.0)
        return extra, uncover


def turn(x: np.ndarray, i: int, j: int, k: int) -> float:
    """Sign-carrying area of the turn x[i] -> x[j] -> x[k] (> 0: clockwise on screen)."""
    a, b, c = x[i], x[j], x[k]
    return float((b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0]))


@functools.lru_cache(maxsize=4)
def _load(path: str, mtime_ns: int) -> RealModel:
    return RealModel(json.loads(Path(path).read_text()))


def load(path: Optional[Path] = None) -> RealModel:
    """The fitted model (cached per file and modification time)."""
    path = Path(path or MODEL_PATH)
    return _load(str(path), path.stat().st_mtime_ns)


def pattern_names(category: str, absent: np.ndarray) -> List[str]:
    """Keypoint names of a (K,) absent mask of `category`."""
    return [n for n, a in zip(CATEGORY_KEYPOINTS[category], absent) if a]
