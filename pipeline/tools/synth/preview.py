"""Contact sheet of a data set: images with their labelled keypoints drawn.

Reads the training annotations of any data set in the competition layout
(synthetic or real) and writes one PNG: `n` images (the same number per
category, first in file order), each letterboxed into a tile, with every
annotated keypoint drawn in its own colour: a filled dot for `v=1`, a ring
for `v=0`; `_left` points carry an "L", `_right` points an "R"; the tile
caption gives the category and the counts of visible / occluded / absent
points.

With `--real-ann REAL.csv` a second panel below the images gives, per statistic
(rows) and category (columns), the figure of the data set beside the one of the real
annotation file, computed now from it (green: within the tolerance of issue 21, red:
outside); the same table is printed.

CLI: python -m pipeline.tools.synth.preview --input DIR (--out FILE.png | --output DIR) [--n 20] [--tile 256]
     [--real-ann REAL.csv]
"""
from __future__ import annotations

import argparse
import colorsys
import sys
from pathlib import Path
from typing import List, Tuple

import cv2
import numpy as np

from pipeline.fsutil import atomic_path
from pipeline.keypoints import CATEGORIES, CATEGORY_KEYPOINTS, KEYPOINT_INDEX, KEYPOINTS
from pipeline.tianchi import read_annotations

TRAIN_CSV = "train/Annotations/train.csv"


def keypoint_colours() -> np.ndarray:
    """(24, 3) uint8 BGR colour per keypoint (CSV order), evenly spaced hues."""
    rgb = [colorsys.hsv_to_rgb(i / len(KEYPOINTS), 0.9, 1.0) for i in range(len(KEYPOINTS))]
    return (np.array(rgb)[:, ::-1] * 255).astype(np.uint8)


def draw_tile(image: np.ndarray, keypoints: np.ndarray, category: str, tile: int) -> np.ndarray:
    """One (tile + 18, tile, 3) uint8 tile: the image letterboxed, its keypoints, a caption.

    image: (h, w, 3) BGR; keypoints: (24, 3) x, y, v in the image's pixels.
    """
    h, w = image.shape[:2]
    s = tile / max(h, w)
    ox, oy = (tile - w * s) / 2, (tile - h * s) / 2
    out = np.full((tile + 18, tile, 3), 40, np.uint8)
    out[18 + int(oy):18 + int(oy) + int(round(h * s)), int(ox):int(ox) + int(round(w * s))] = \
        cv2.resize(image, (int(round(w * s)), int(round(h * s))), interpolation=cv2.INTER_AREA)
    colours = keypoint_colours()
    for name in CATEGORY_KEYPOINTS[category]:
        k = KEYPOINT_INDEX[name]
        x, y, v = keypoints[k]
        if v < 0:
            continue
        c = (int(x * s + ox), int(y * s + oy) + 18)
        col = tuple(int(v_) for v_ in colours[k])
        cv2.circle(out, c, 5, (0, 0, 0), -1 if v == 1 else 3, cv2.LINE_AA)
        cv2.circle(out, c, 4, col, -1 if v == 1 else 2, cv2.LINE_AA)
        side = "L" if "_left" in name else "R" if "_right" in name else ""
        if side:
            cv2.putText(out, side, (c[0] + 5, c[1] - 3), cv2.FONT_HERSHEY_PLAIN, 0.8, (0, 0, 0), 2)
            cv2.putText(out, side, (c[0] + 5, c[1] - 3), cv2.FONT_HERSHEY_PLAIN, 0.8, col, 1)
    v = keypoints[[KEYPOINT_INDEX[n] for n in CATEGORY_KEYPOINTS[category]], 2]
    caption = f"{category} {w}x{h} v1:{(v == 1).sum()} v0:{(v == 0).sum()} abs:{(v < 0).sum()}"
    cv2.putText(out, caption, (3, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def pick_rows(categories: np.ndarray, n: int) -> List[int]:
    """Row indices: about n / (number of categories present) per category, first in file order."""
    present = [c for c in CATEGORIES if (categories == c).any()]
    per = int(np.ceil(n / max(len(present), 1)))
    rows = [i for c in present for i in np.flatnonzero(categories == c)[:per]]
    return sorted(rows)[:n] if len(rows) > n else rows


def comparison_panel(rows, width: int) -> np.ndarray:
    """(h, width, 3) uint8 table: statistics (rows) x categories (columns), "synthetic / real"
    per cell, green within the tolerance, red outside, grey where a side lacks the figure."""
    stats = list(dict.fromkeys(r["statistic"] for r in rows))
    cats = list(dict.fromkeys(r["category"] for r in rows))
    cell = {(r["statistic"], r["category"]): r for r in rows}
    row_h, label_w = 22, 170
    col_w = max((width - label_w) // max(len(cats), 1), 60)
    out = np.full(((len(stats) + 2) * row_h + 6, width, 3), 30, np.uint8)
    font, scale = cv2.FONT_HERSHEY_SIMPLEX, 0.42
    cv2.putText(out, "synthetic / real (green: within tolerance)", (6, 16), font, scale,
                (255, 255, 255), 1, cv2.LINE_AA)
    for j, cat in enumerate(cats):
        cv2.putText(out, cat, (label_w + j * col_w + 4, 2 * row_h - 4), font, scale,
                    (255, 255, 255), 1, cv2.LINE_AA)
    fmt = lambda x: "-" if x is None else f"{x:.3f}"
    for i, stat in enumerate(stats):
        y = (i + 3) * row_h - 4
        tol = cell[(stat, cats[0])]["tolerance"] if (stat, cats[0]) in cell else ""
        cv2.putText(out, f"{stat} {tol.replace(chr(177), '+-')}", (6, y), font, scale,
                    (255, 255, 255), 1, cv2.LINE_AA)
        for j, cat in enumerate(cats):
            r = cell.get((stat, cat))
            if r is None:
                continue
            col = {True: (120, 230, 120), False: (110, 110, 255), None: (180, 180, 180)}[r["within"]]
            cv2.putText(out, f"{fmt(r['synthetic'])} / {fmt(r['real'])}",
                        (label_w + j * col_w + 4, y), font, scale, col, 1, cv2.LINE_AA)
    return out


def contact_sheet(input_dir, out_png, n: int = 20, tile: int = 256, columns: int = 5,
                  comparison=None) -> Tuple[int, Path]:
    """Write the contact sheet of INPUT/train as `out_png` (atomically); return (images, path).

    comparison: rows of `real_comparison`, drawn as a panel below the images."""
    input_dir, out_png = Path(input_dir), Path(out_png)
    table, problems = read_annotations(input_dir / TRAIN_CSV)
    if problems:
        raise ValueError(f"{input_dir / TRAIN_CSV}: {problems[0]}")
    tiles = []
    for i in pick_rows(np.asarray(table.image_category), n):
        path = input_dir / "train" / table.image_id[i]
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise ValueError(f"{path}: cannot read the image")
        tiles.append(draw_tile(image, table.keypoints[i], table.image_category[i], tile))
    if not tiles:
        raise ValueError(f"{input_dir / TRAIN_CSV}: no rows")
    blank = np.zeros_like(tiles[0])
    rows = [np.hstack((tiles[r:r + columns] + [blank] * columns)[:columns])
            for r in range(0, len(tiles), columns)]
    if comparison:
        rows.append(comparison_panel(comparison, rows[0].shape[1]))
    with atomic_path(out_png) as tmp:
        if not cv2.imwrite(str(tmp), np.vstack(rows)):
            raise OSError(f"could not write {out_png}")
    return len(tiles), out_png


def real_comparison(input_dir, real_ann):
    """Comparison rows (pipeline.tools.synth.dataset.compare) of INPUT's files against `real_ann`."""
    from pipeline.tools.synth.dataset import compare, real_stats, realism_stats

    return compare(realism_stats(input_dir)["per_category"], real_stats(real_ann))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.tools.synth.preview",
                                     description="Contact sheet of INPUT/train with keypoints drawn.")
    parser.add_argument("--input", required=True, help="data set directory (competition layout)")
    parser.add_argument("--out", help="PNG file to write")
    parser.add_argument("--output", help="or: OUTPUT directory (writes its data_preview.png)")
    parser.add_argument("--n", type=int, default=20, help="number of images")
    parser.add_argument("--tile", type=int, default=256, help="tile side in pixels")
    parser.add_argument("--real-ann", default=None,
                        help="real annotation CSV: add a synthetic-vs-real table panel")
    args = parser.parse_args(argv)
    if not args.out and not args.output:
        parser.error("give --out FILE.png or --output DIR")
    if not args.out:
        from pipeline.store.layout import data_preview_path

        args.out = data_preview_path(args.output)
    try:
        comparison = real_comparison(args.input, args.real_ann) if args.real_ann else None
        count, path = contact_sheet(args.input, args.out, args.n, args.tile, comparison=comparison)
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"contact sheet of {count} images: {path}")
    if args.real_ann:
        from pipeline.tools.synth.dataset import comparison_lines

        print("\n".join(comparison_lines(comparison)))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
