"""The preprocessing report: what was rejected, fixed, kept, and which images repeat.

Built once per parsed dataset by `preprocess.build_dataset`, stored under
`report` in `prep/<dataset>/manifest.json`, written as `prep/<dataset>/report.md`
and printed as a table by `make preprocess` when the dataset is built.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import pandas as pd

_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")
_NUMBER = re.compile(r"-?\d+")


def reason_kind(reason: str) -> str:
    """A reject reason without its particulars (file name, quoted values, numbers): the count key.

    "input/train/Images/a.jpg: truncated JPEG (...)" → "truncated JPEG (...)";
    "cell '12_13' is not of the form x_y_v" → "cell … is not of the form x_y_v".
    """
    head, sep, tail = reason.partition(": ")
    if sep and ("/" in head or "\\" in head) and " " not in head:
        reason = tail
    reason = _QUOTED.sub("…", reason)
    return _NUMBER.sub("N", reason)


def _counts(values) -> Dict[str, int]:
    series = pd.Series(list(values), dtype=object)
    return {str(k): int(v) for k, v in series.value_counts().sort_index().items()} if len(series) else {}


def build(problems: Sequence, fixes: Dict[str, int], train: pd.DataFrame, test: Optional[pd.DataFrame],
          duplicate_summary: Dict, n_csv_problems: int = 0) -> Dict:
    """The report as a JSON-able dict.

    problems: the rejects (tianchi.Problem); fixes: {what was fixed: count}; train: index.csv
    frame of the kept rows; test: test_index.csv frame or None; duplicate_summary:
    duplicates.summary(...). Image sizes are counted as "WxH" (stored frame).
    """
    def sizes(frame):
        return _counts(f"{w}x{h}" for w, h in zip(frame["width"], frame["height"])) if frame is not None else {}

    test_bad = [p for p in problems if "(kept;" in p.reason]
    return {
        "rejects_per_reason": _counts(reason_kind(p.reason) for p in problems if "(kept;" not in p.reason),
        "test_images_unreadable": len(test_bad),
        "csv_problems": int(n_csv_problems),
        "fixes": dict(sorted(fixes.items())),
        "train_per_image_size": sizes(train),
        "test_per_image_size": sizes(test),
        "train_per_category": _counts(train["image_category"]),
        "train_per_source_and_category": {f"{s}/{c}": int(n) for (s, c), n in
                                          train.groupby(["source", "image_category"]).size().items()},
        "test_per_category": _counts(test["image_category"]) if test is not None else {},
        "duplicates": duplicate_summary,
    }


def tables(report: Dict) -> List[str]:
    """The report as plain-text table lines (for the terminal)."""
    lines: List[str] = []
    width = max((len(str(k)) for key in ("rejects_per_reason", "fixes", "train_per_category")
                 for k in report[key]), default=10)

    def block(title: str, counts: Dict, limit: int = 12):
        if not counts:
            return
        lines.append(f"  {title}:")
        items = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        for k, v in items[:limit]:
            lines.append(f"    {str(k):<{width}}  {v:>7}")
        if len(items) > limit:
            lines.append(f"    ... {len(items) - limit} more (see report.md)")

    block("rejected rows per reason", report["rejects_per_reason"])
    block("fixed", report["fixes"])
    block("training images per category", report["train_per_category"])
    block("training images per size", report["train_per_image_size"], 6)
    block("test images per size", report["test_per_image_size"], 6)
    d = report["duplicates"]
    lines.append(f"  duplicates: {d['groups']} group(s) ({d['identical']} byte-identical, {d['near']} near copies); "
                 f"{d['train_images']} training and {d['test_images']} test images in groups; "
                 f"{d['cross_source_groups']} group(s) across training sources (kept in one fold); "
                 f"{d['test_images_seen_in_training']} test image(s) also in training "
                 f"({d['train_test_groups']} group(s); reported, not used)")
    return lines


def markdown(report: Dict, ds_dir) -> str:
    """report.md: one table per count, and the duplicate summary."""
    ds_dir = Path(ds_dir)
    out = [f"# Preprocessing report: {ds_dir.name}", "",
           "Rejected rows are listed in `rejects.csv`, clipped border points in `clipped.csv`, "
           "duplicate groups in `duplicates.csv`.", ""]

    def table(title: str, counts: Dict, key: str):
        out.extend([f"## {title}", ""])
        if not counts:
            out.extend(["none", ""])
            return
        out.extend([f"| {key} | count |", "|---|---:|"])
        out.extend(f"| {str(k).replace('|', '/')} | {v} |" for k, v in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
        out.append("")

    table("Rejected rows per reason", report["rejects_per_reason"], "reason")
    out.extend([f"Unreadable test images (kept, predicted on a blank image): {report['test_images_unreadable']}", ""])
    table("Fixes", report["fixes"], "fix")
    table("Training images per category (after filtering)", report["train_per_category"], "category")
    table("Training images per source and category", report["train_per_source_and_category"], "source/category")
    table("Test images per category", report["test_per_category"], "category")
    table("Training images per size (stored frame)", report["train_per_image_size"], "width x height")
    table("Test images per size (stored frame)", report["test_per_image_size"], "width x height")
    table("Duplicates", report["duplicates"], "what")
    return "\n".join(out) + "\n"
