"""Compare two scored runs: where B wins or loses against A, and whether it is more than noise.

`make compare A=run1 B=run2` (`python -m pipeline.stages.compare --output DIR A B`).
For each split (CV from the OOF predictions, test when answers exist), each
category and each keypoint: NE of A, NE of B, B − A with its 95 % paired
bootstrap interval (the same images resampled for both runs, points pooled as
the NE pools them; 1000 seeded resamples), and a verdict: `B better` / `B
worse` when the interval excludes 0, `~` (inside the noise) otherwise.

A run is compared through the per-image errors `make score` stored beside its
scores (OUTPUT/runs/<name>/scores_errors.npz; `name+stack` for the stacked
predictions; `make score-file` stores a submission file's row the same way, test
split only). Only images scored in both runs are paired (a note says how many
each side has that the other lacks, e.g. a submission file missing a row); a
category the two score on no common image (another data set) is reported `n/a`.
"""
from __future__ import annotations

from typing import Dict, List

import numpy as np

from pipeline.keypoints import CATEGORIES, CATEGORY_KEYPOINTS, KEYPOINT_INDEX
from pipeline.scoring.leaderboard import SPLITS, aligned_sums, load_errors
from pipeline.scoring.metrics import paired_bootstrap_diff
from pipeline.store.layout import errors_path


def subset(errors: Dict[str, np.ndarray], category: str) -> Dict[str, np.ndarray]:
    """The images of one category: {image_id (M,), category (M,), err (M, 24)}."""
    rows = errors["category"] == category
    return {k: v[rows] for k, v in errors.items()}


def verdict(d: Dict[str, float]) -> str:
    """'B better' / 'B worse' when the paired interval of B − A excludes 0, else '~'; 'n/a' without a number."""
    if not np.isfinite(d["diff"]):
        return "n/a"
    if not d["significant"]:
        return "~"
    return "B better" if d["diff"] < 0 else "B worse"


def compare_split(a: Dict[str, np.ndarray], b: Dict[str, np.ndarray]) -> List[Dict]:
    """Rows (category, keypoint, ne_a, ne_b, diff, lo, hi, verdict) for one split.

    a, b: {image_id, category, err (N, 24)} of the two runs. keypoint "all" is the
    category's NE; category "all" pools the categories both runs scored (when their images agree).
    """
    rows: List[Dict] = []
    cats = [c for c in CATEGORIES if (a["category"] == c).any() and (b["category"] == c).any()]
    groups = [(c, subset(a, c), subset(b, c), CATEGORY_KEYPOINTS[c]) for c in cats]
    if len(cats) > 1:
        pool = lambda e: {k: v[np.isin(e["category"], cats)] for k, v in e.items()}  # noqa: E731
        groups.insert(0, ("all", pool(a), pool(b), ()))
    for cat, ea, eb, keypoints in groups:
        for kp in ("all",) + tuple(keypoints):
            column = None if kp == "all" else KEYPOINT_INDEX[kp]
            sums = aligned_sums(ea, eb, column, common=True)
            if sums is None:
                d = {"diff": np.nan, "lo": np.nan, "hi": np.nan, "significant": False}
                ne_a = ne_b = np.nan
            else:
                sa, ca, sb, cb = sums
                d = paired_bootstrap_diff(sa, ca, sb, cb)
                ne_a = sa.sum() / ca.sum() if ca.sum() else np.nan
                ne_b = sb.sum() / cb.sum() if cb.sum() else np.nan
            rows.append({"category": cat, "keypoint": kp, "ne_a": ne_a, "ne_b": ne_b, "diff": d["diff"],
                         "lo": d["lo"], "hi": d["hi"], "verdict": verdict(d)})
    return rows


def format_rows(rows: List[Dict]) -> str:
    """Aligned text table of compare_split rows."""
    head = f"{'category':10s} {'keypoint':18s} {'NE A':>8s} {'NE B':>8s} {'B - A':>9s} {'95% CI':>21s}  verdict"
    lines = [head]
    for r in rows:
        num = lambda v, fmt: format(v, fmt) if np.isfinite(v) else "-"  # noqa: E731
        ci = f"[{r['lo']:+.4f}, {r['hi']:+.4f}]" if np.isfinite(r["lo"]) else "-"
        lines.append(f"{r['category']:10s} {r['keypoint']:18s} {num(r['ne_a'], '8.4f'):>8s} "
                     f"{num(r['ne_b'], '8.4f'):>8s} {num(r['diff'], '+9.4f'):>9s} {ci:>21s}  {r['verdict']}")
    return "\n".join(lines)


def compare_runs(output, name_a: str, name_b: str) -> Dict[str, List[Dict]]:
    """{split: rows} for the splits both runs were scored on. FileNotFoundError names a missing run."""
    errors = {}
    for name in (name_a, name_b):
        e = load_errors(output, name)
        if e is None:
            raise FileNotFoundError(f"no scores for run {name!r} ({errors_path(output, name)} missing); "
                                    f"run `make score RUN={name.removesuffix('+stack')}` first")
        errors[name] = e
    return {split: compare_split(errors[name_a][split], errors[name_b][split])
            for split in SPLITS if split in errors[name_a] and split in errors[name_b]}


def unpaired(output, name_a: str, name_b: str, split: str):
    """(images scored only in A, only in B) on `split`: what the pairing leaves out."""
    a, b = load_errors(output, name_a)[split], load_errors(output, name_b)[split]
    ids_a, ids_b = set(a["image_id"]), set(b["image_id"])
    return len(ids_a - ids_b), len(ids_b - ids_a)
