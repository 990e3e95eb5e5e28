"""Normalized error (NE), the FashionAI leaderboard metric — pure numpy.

NE = sum over counted points of d_k / s_i / number of counted points, where

* counted points are the keypoints whose ground-truth visibility is 1 (one
  pooled mean over all points of all evaluated images);
* d_k is the Euclidean distance in original-image pixels;
* s_i is the per-image distance between the ground-truth normalizer pair
  (armpits for blouse/outwear/dress, waistband for skirt/trousers). Images
  whose normalizer points are not annotated (v = -1) or coincide are skipped
  and counted in `n_images_skipped`.

CLI: python -m pipeline.metrics --truth T.csv --pred P.csv [--json] [--strict]

The files are read as the competition's platform read them (`match_files`): rows matched
by image_id in any order, a missing header accepted (a note says so), only each image's own
category's cells read, coordinates as given (negative or outside the image). Truth rows
without a prediction are left out, counted (`n_images_missing`) and named on stderr;
`--strict` makes them an error.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from typing import Dict, List, Sequence, Tuple

import numpy as np

from pipeline.keypoints import (
    CATEGORIES,
    CATEGORY_KEYPOINTS,
    KEYPOINT_INDEX,
    KEYPOINTS,
    NORMALIZER,
    NUM_KEYPOINTS,
)


def image_normalizers(truth: np.ndarray, categories: Sequence[str]) -> np.ndarray:
    """Per-image normalizer distance s_i in original pixels.

    truth: (N, 24, 3) ground truth x, y, v. Returns (N,) float64 with NaN where
    the image cannot be normalized (a normalizer point absent, or both equal).
    """
    truth = np.asarray(truth, dtype=np.float64)
    out = np.full(len(truth), np.nan)
    for i, cat in enumerate(categories):
        a, b = (KEYPOINT_INDEX[n] for n in NORMALIZER[cat])
        pa, pb = truth[i, a], truth[i, b]
        if pa[2] < 0 or pb[2] < 0:
            continue
        dist = float(np.hypot(*(pa[:2] - pb[:2])))
        if dist > 0:
            out[i] = dist
    return out


def point_errors(truth: np.ndarray, pred: np.ndarray, categories: Sequence[str]) -> np.ndarray:
    """Normalized distance of every counted point, NaN for points not counted.

    truth: (N, 24, 3) x, y, v; pred: (N, 24, 2) x, y, both in original pixels.
    Returns (N, 24) float64: d_k / s_i where truth v == 1 and s_i is usable.
    """
    truth = np.asarray(truth, dtype=np.float64)
    pred = np.asarray(pred, dtype=np.float64)[..., :2]
    if truth.shape[:2] != pred.shape[:2]:
        raise ValueError(f"truth {truth.shape} and prediction {pred.shape} do not align")
    s = image_normalizers(truth, categories)
    d = np.hypot(*(pred - truth[..., :2]).transpose(2, 0, 1))
    err = d / s[:, None]
    counted = (truth[..., 2] == 1) & np.isfinite(s)[:, None]
    if np.any(counted & ~np.isfinite(err)):
        raise ValueError("prediction holds NaN or inf for a counted point")
    return np.where(counted, err, np.nan)


def _mean(values: np.ndarray) -> float:
    values = values[np.isfinite(values)]
    return float(values.mean()) if values.size else float("nan")


def normalized_error(truth: np.ndarray, pred: np.ndarray, categories: Sequence[str]) -> Dict:
    """NE overall, per category and per keypoint.

    truth: (N, 24, 3); pred: (N, 24, 2) (extra trailing columns ignored);
    categories: (N,) names. Returns a dict with `ne` (fraction), `ne_percent`,
    `n_points`, `n_images`, `n_images_skipped`, `per_category` and
    `per_keypoint` (NaN-free: entries with no counted point are omitted).
    """
    categories = np.asarray(categories, dtype=object)
    err = point_errors(truth, pred, categories)
    s = image_normalizers(truth, categories)
    ne = _mean(err)
    per_category = {}
    for cat in CATEGORIES:
        mask = categories == cat
        if mask.any() and np.isfinite(err[mask]).any():
            per_category[cat] = _mean(err[mask])
    per_keypoint = {}
    for k, name in enumerate(KEYPOINTS):
        if np.isfinite(err[:, k]).any():
            per_keypoint[name] = _mean(err[:, k])
    return {
        "ne": ne,
        "ne_percent": ne * 100.0,
        "n_points": int(np.isfinite(err).sum()),
        "n_images": int(len(categories)),
        "n_images_skipped": int((~np.isfinite(s)).sum()),
        "per_category": per_category,
        "per_keypoint": per_keypoint,
    }


def category_ne(truth: np.ndarray, pred: np.ndarray, category: str) -> float:
    """NE of one category's images from predictions in the category's own keypoint order.

    truth: (N, 24, 3); pred: (N, K, 2) in CATEGORY_KEYPOINTS[category] order.
    """
    full = np.zeros((len(truth), len(KEYPOINTS), 2))
    full[:, [KEYPOINT_INDEX[n] for n in CATEGORY_KEYPOINTS[category]]] = pred
    return normalized_error(truth, full, [category] * len(truth))["ne"]


# --------------------------------------------------------------------------- bootstrap intervals
#
# NE pools points, not images: a resample of images is scored as
# (sum of the resampled images' normalized distances) / (their number of counted points).
# So an image enters through two numbers, its error sum and its point count, and a
# resample is a vector of multiplicities over the images (multinomial, n draws).

BOOTSTRAP_SAMPLES = 1000
BOOTSTRAP_SEED = 0


def image_sums(errors: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Per-image error sums and counted-point counts of point errors.

    errors: (N, K) normalized distances with NaN for points not counted (as
    `point_errors` returns; any K, e.g. one keypoint column (N, 1)).
    Returns sums (N,) float64 and counts (N,) int64.
    """
    errors = np.asarray(errors, dtype=np.float64)
    errors = errors.reshape(len(errors), -1)
    counted = np.isfinite(errors)
    return np.where(counted, errors, 0.0).sum(1), counted.sum(1).astype(np.int64)


def resample_weights(n: int, n_boot: int = BOOTSTRAP_SAMPLES, seed: int = BOOTSTRAP_SEED) -> np.ndarray:
    """(n_boot, n) int32 multiplicities: each row draws n images with replacement (seeded)."""
    return np.concatenate(list(_weight_blocks(n, n_boot, seed)) or [np.zeros((0, n), np.int32)])


def _weight_blocks(n: int, n_boot: int, seed: int, max_cells: int = 4_000_000):
    """resample_weights in blocks of rows (bounded memory on large sets); same rows for the same seed."""
    rng = np.random.default_rng(seed)
    block = max(1, min(n_boot, max_cells // max(n, 1)))
    for start in range(0, n_boot, block):
        rows = min(block, n_boot - start)
        if n == 0:
            yield np.zeros((rows, 0), np.int32)
        else:
            yield rng.multinomial(n, np.full(n, 1.0 / n), size=rows).astype(np.int32)


def resampled_ne(sums: np.ndarray, counts: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """NE of every resample: (B,) = weights @ sums / weights @ counts (NaN where nothing is counted).

    sums, counts: (N,) per image; weights: (B, N) multiplicities.
    """
    num = weights @ np.asarray(sums, dtype=np.float64)
    den = weights @ np.asarray(counts, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def bootstrap_samples(sets: Sequence[Tuple[np.ndarray, np.ndarray]], n_boot: int = BOOTSTRAP_SAMPLES,
                      seed: int = BOOTSTRAP_SEED) -> np.ndarray:
    """(n_boot, len(sets)) resampled NEs of several predictions of the SAME images.

    sets: [(sums (N,), counts (N,)), ...] aligned on the images; every resample
    draws the same images for every set (the pairing of paired differences).
    """
    n = len(sets[0][0])
    if any(len(s) != n or len(c) != n for s, c in sets):
        raise ValueError("paired bootstrap needs aligned arrays, got lengths "
                         + ", ".join(f"{len(s)}/{len(c)}" for s, c in sets))
    out = [np.stack([resampled_ne(s, c, w) for s, c in sets], axis=1) for w in _weight_blocks(n, n_boot, seed)]
    return np.concatenate(out) if out else np.zeros((0, len(sets)))


def _percentiles(values: np.ndarray, level: float) -> Tuple[float, float]:
    values = values[np.isfinite(values)]
    if not values.size:
        return float("nan"), float("nan")
    tail = (1.0 - level) / 2.0 * 100.0
    lo, hi = np.percentile(values, [tail, 100.0 - tail])
    return float(lo), float(hi)


def bootstrap_ne(sums: np.ndarray, counts: np.ndarray, n_boot: int = BOOTSTRAP_SAMPLES,
                 seed: int = BOOTSTRAP_SEED, level: float = 0.95) -> Dict[str, float]:
    """NE and its percentile bootstrap interval, images resampled with replacement.

    sums, counts: (N,) per-image error sums and counted points (`image_sums`).
    Returns {"ne", "lo", "hi"}; NaN when no point is counted.
    """
    sums, counts = np.asarray(sums, np.float64), np.asarray(counts, np.int64)
    total = counts.sum()
    ne = float(sums.sum() / total) if total else float("nan")
    lo, hi = _percentiles(bootstrap_samples([(sums, counts)], n_boot, seed)[:, 0], level)
    return {"ne": ne, "lo": lo, "hi": hi}


def paired_bootstrap_diff(sums_a: np.ndarray, counts_a: np.ndarray, sums_b: np.ndarray, counts_b: np.ndarray,
                          n_boot: int = BOOTSTRAP_SAMPLES, seed: int = BOOTSTRAP_SEED,
                          level: float = 0.95) -> Dict[str, float]:
    """NE(B) − NE(A) over the same images, with a paired bootstrap interval.

    The four arrays are (N,) and aligned: image i is the same image in A and B.
    Every resample draws the same images for both, so what the two predictions
    share (hard images, few points) cancels. Returns {"diff", "lo", "hi",
    "significant"} (significant: the interval excludes 0); NaN when either
    side counts no point.
    """
    sums_a, sums_b = np.asarray(sums_a, np.float64), np.asarray(sums_b, np.float64)
    counts_a, counts_b = np.asarray(counts_a, np.int64), np.asarray(counts_b, np.int64)
    samples = bootstrap_samples([(sums_a, counts_a), (sums_b, counts_b)], n_boot, seed)
    if not counts_a.sum() or not counts_b.sum():
        return {"diff": float("nan"), "lo": float("nan"), "hi": float("nan"), "significant": False}
    diff = float(sums_b.sum() / counts_b.sum() - sums_a.sum() / counts_a.sum())
    lo, hi = _percentiles(samples[:, 1] - samples[:, 0], level)
    return {"diff": diff, "lo": lo, "hi": hi, "significant": bool(lo > 0 or hi < 0)}


#: how many ids a message names before "... and N more"
SHOW_FIRST = 5


@dataclasses.dataclass
class MatchedFiles:
    """A prediction file matched to its ground truth by image_id.

    truth: the truth rows that have a prediction (KeypointTable, truth-file order);
    pred: (M, 24, 2) float predicted x, y in original pixels for those rows (NaN in the
    other categories' columns, which are never read); missing: [(truth row, image_id)] of
    truth rows without a prediction; n_truth: truth rows in all; notes: what a reader
    should know (no header, rows not covered).
    """

    truth: "object"
    pred: np.ndarray
    missing: List[Tuple[int, str]]
    n_truth: int
    notes: List[str]


def _first(items, n: int = SHOW_FIRST) -> str:
    items = list(items)
    return ", ".join(items[:n]) + (f" ... and {len(items) - n} more" if len(items) > n else "")


def read_truth(truth_csv):
    """Ground truth as the scorer reads it: read_annotations, rows without an annotated point
    kept (no normalizer: skipped and counted). ValueError naming file, row and column otherwise."""
    from pipeline.tianchi import read_annotations

    truth, problems = read_annotations(truth_csv, allow_unannotated=True)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise ValueError(f"{problems[0]}{more}")
    return truth


def match_files(truth_csv, pred_csv, strict: bool = False) -> MatchedFiles:
    """Read a prediction file as the platform did and match its rows to the truth by image_id.

    The prediction may lack its header (first cell not `image_id`), list rows in any order,
    fill every cell whatever the category, and hold coordinates outside the image: only the
    truth category's own columns are read, as given (`-1_-1_-1` there is the point (-1, -1)).
    Errors (ValueError naming file, row and column): a wrong header, a wrong number of
    columns, a duplicate id, an id the truth does not hold, a category differing from the
    truth's, a malformed cell in the category's own columns. Truth rows without a prediction
    are left out and listed in `missing`; with `strict` they are an error.
    """
    from pipeline.tianchi import (
        parse_prediction_cell,
        read_submission_rows,
        trim_fields,
    )

    truth = read_truth(truth_csv)
    where = {iid: i for i, iid in enumerate(truth.image_id)}
    has_header, rows = read_submission_rows(pred_csv)
    notes = [] if has_header else [f"{pred_csv}: no header row; row 1 read as data"]
    pred = np.full((len(truth), NUM_KEYPOINTS, 2), np.nan)
    seen: Dict[str, int] = {}
    problems: List[str] = []
    for row, fields in rows:
        fields = trim_fields(fields)
        at = f"{pred_csv}: row {row}"
        if len(fields) != 2 + NUM_KEYPOINTS:
            problems.append(f"{at}: expected {2 + NUM_KEYPOINTS} fields, found {len(fields)}")
            continue
        iid, cat = fields[0].strip(), fields[1].strip()
        if iid in seen:
            problems.append(f"{at}, column image_id: duplicate image_id {iid!r} (first at row {seen[iid]})")
            continue
        seen[iid] = row
        i = where.get(iid)
        if i is None:
            problems.append(f"{at}, column image_id: {iid!r} is not in the truth file {truth_csv}")
            continue
        tcat = truth.image_category[i]
        if cat != tcat and cat.lower() != tcat:
            problems.append(f"{at}, column image_category: {cat!r}, the truth says {tcat!r}")
            continue
        for name in CATEGORY_KEYPOINTS[tcat]:  # other categories' cells are never read
            k = KEYPOINT_INDEX[name]
            try:
                x, y, _ = parse_prediction_cell(fields[2 + k])
            except ValueError as err:
                problems.append(f"{at}, column {name}: {err}")
                continue
            pred[i, k] = (x, y)
    if problems:
        more = f"\n... and {len(problems) - 20} more problem(s)" if len(problems) > 20 else ""
        raise ValueError(f"{len(problems)} problem(s):\n" + "\n".join(problems[:20]) + more)
    present = np.array([iid in seen for iid in truth.image_id], dtype=bool)
    missing = [(int(r), str(iid)) for r, iid, p in zip(truth.rows, truth.image_id, present) if not p]
    if missing:
        text = (f"{pred_csv}: no prediction for {len(missing)} of {len(truth)} truth row(s): "
                + _first(f"{iid} (truth row {r})" for r, iid in missing))
        if strict:
            raise ValueError(text)
        notes.append(text + f"; the NE covers only the {int(present.sum())} row(s) with a prediction")
    return MatchedFiles(truth.subset(present), pred[present], missing, len(truth), notes)


def score_files(truth_csv, pred_csv, strict: bool = False) -> Dict:
    """NE of a prediction CSV against a truth CSV (Tianchi format), rows matched by image_id.

    Read as `match_files` reads them. Returns normalized_error's dict over the truth rows
    that have a prediction, plus `n_images_missing` (truth rows without one; an error with
    `strict`), `missing_image_ids` (the first few), `n_images_truth` and `notes`.
    """
    m = match_files(truth_csv, pred_csv, strict)
    result = normalized_error(m.truth.keypoints, m.pred, m.truth.image_category)
    result.update(n_images_missing=len(m.missing), missing_image_ids=[iid for _, iid in m.missing[:SHOW_FIRST]],
                  n_images_truth=m.n_truth, notes=m.notes)
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--truth", required=True, help="ground truth CSV (Tianchi format)")
    parser.add_argument("--pred", required=True, help="prediction CSV (Tianchi format)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--strict", action="store_true",
                        help="a truth row without a prediction is an error (as the submission validator has it)")
    args = parser.parse_args(argv)
    try:
        result = score_files(args.truth, args.pred, strict=args.strict)
    except (ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for note in result["notes"]:
        print(("warning: " if "no prediction" in note else "note: ") + note, file=sys.stderr)
    if args.json:
        # NaN (nothing could be scored) is not JSON: print null instead
        plain = {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in result.items()}
        print(json.dumps(plain, sort_keys=True, allow_nan=False))
    else:
        covered = (f" (only the {result['n_images']} of {result['n_images_truth']} truth rows with a prediction)"
                   if result["n_images_missing"] else "")
        print(f"NE {result['ne']:.5f} ({result['ne_percent']:.3f} %) over {result['n_points']} points of "
              f"{result['n_images']} images{covered}, {result['n_images_skipped']} image(s) skipped "
              f"(no usable normalizer)")
        for cat, v in result["per_category"].items():
            print(f"  {cat:10s} {v:.5f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
