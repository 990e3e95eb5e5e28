"""Tianchi FashionAI CSV formats: `x_y_v` cells, annotation files, test lists.

Coordinates in these files are integer pixels of the original image.
Visibility: 1 visible, 0 occluded (position annotated), -1 absent (-1_-1_-1).
Row numbers reported in errors are 1-based line numbers of the file (the
header is line 1, the first data row line 2).
"""
from __future__ import annotations

import csv
import dataclasses
import functools
import re
from pathlib import Path
from typing import List, Sequence, Tuple

import numpy as np

from pipeline.fsutil import atomic_path
from pipeline.keypoints import (
    CATEGORIES,
    CATEGORY_KEYPOINTS,
    KEYPOINT_INDEX,
    KEYPOINTS,
    NUM_KEYPOINTS,
)

HEADER: Tuple[str, ...] = ("image_id", "image_category") + KEYPOINTS
TEST_HEADER: Tuple[str, ...] = ("image_id", "image_category")
ABSENT_CELL = "-1_-1_-1"
_WANTED = {c: frozenset(CATEGORY_KEYPOINTS[c]) for c in CATEGORIES}


@dataclasses.dataclass(frozen=True)
class Problem:
    """One rejected row or cell: where it is and why."""

    file: str
    row: int
    column: str
    reason: str

    def __str__(self) -> str:
        return f"{self.file}: row {self.row}, column {self.column}: {self.reason}"


@functools.lru_cache(maxsize=1 << 16)  # cells repeat a lot (-1_-1_-1 above all): parse each text once
def parse_cell(text: str, edge: bool = False) -> Tuple[int, int, int]:
    """Parse an `x_y_v` cell into integers; raise ValueError with the reason.

    edge: annotations may place a point one pixel before the image (x or y == -1, not
    both: `-1_-1_v` with v >= 0 is an absent point with a wrong flag); preprocess clips it.
    """
    parts = text.strip().split("_")
    if len(parts) != 3:
        raise ValueError(f"cell {text!r} is not of the form x_y_v")
    try:
        x, y, v = (int(p) for p in parts)
    except ValueError:
        raise ValueError(f"cell {text!r} holds a non-integer value") from None
    if v not in (-1, 0, 1):
        raise ValueError(f"cell {text!r} has visibility {v}, expected -1, 0 or 1")
    if v == -1 and (x, y) != (-1, -1):
        raise ValueError(f"cell {text!r} is absent (v=-1) but has coordinates")
    if v >= 0 and edge and (x, y) == (-1, -1):
        raise ValueError(f"cell {text!r} has no coordinates (-1, -1) but visibility {v}")
    if v >= 0 and (min(x, y) < (-1 if edge else 0)):
        raise ValueError(f"cell {text!r} has negative coordinates")
    return x, y, v


def format_cell(x: float, y: float, v: int) -> str:
    """Format one keypoint as `x_y_v` (coordinates rounded to integers)."""
    if v < 0:
        return ABSENT_CELL
    return f"{int(round(x))}_{int(round(y))}_{int(v)}"


@dataclasses.dataclass
class KeypointTable:
    """Parsed annotation rows.

    image_id: (N,) str; image_category: (N,) str;
    keypoints: (N, 24, 3) int32 — x, y in original pixels and v in {-1, 0, 1};
    rows: (N,) int — line numbers in the source file.
    """

    image_id: np.ndarray
    image_category: np.ndarray
    keypoints: np.ndarray
    rows: np.ndarray

    def __len__(self) -> int:
        return len(self.image_id)

    def subset(self, mask: np.ndarray) -> "KeypointTable":
        return KeypointTable(self.image_id[mask], self.image_category[mask],
                             self.keypoints[mask], self.rows[mask])


def _category(text: str) -> str:
    """A category cell as written, or its lower-case form when that is a known category ("Blouse")."""
    text = text.strip()
    return text.lower() if text not in CATEGORIES and text.lower() in CATEGORIES else text


def _parse_row(fields: Sequence[str], header: Sequence[str],
               allow_unannotated: bool = False) -> Tuple[str, str, np.ndarray]:
    """Parse one annotation row; raise _RowError(column, reason)."""
    if len(fields) > len(header) and not any(f.strip() for f in fields[len(header):]):
        fields = fields[:len(header)]  # trailing separators (a spreadsheet's empty columns)
    if len(fields) != len(header):
        raise _RowError("*", f"expected {len(header)} fields, found {len(fields)}")
    image_id, category = fields[0].strip(), _category(fields[1])
    if not image_id:
        raise _RowError("image_id", "empty image_id")
    if category not in CATEGORIES:
        raise _RowError("image_category", f"unknown category {category!r}")
    cells = [[-1, -1, -1]] * NUM_KEYPOINTS
    wanted = _WANTED[category]
    annotated = False
    for name, text in zip(header[2:], fields[2:]):
        try:
            cell = parse_cell(text, edge=True)
        except ValueError as err:
            raise _RowError(name, str(err)) from None
        if name not in wanted:
            continue  # other categories' points are ignored (they should be -1_-1_-1)
        cells[KEYPOINT_INDEX[name]] = cell
        annotated = annotated or cell[2] >= 0
    kps = np.array(cells, dtype=np.int32)
    if not annotated and not allow_unannotated:
        raise _RowError("*", "no annotated keypoint of the category")
    return image_id, category, kps


class _RowError(Exception):
    def __init__(self, column: str, reason: str):
        super().__init__(reason)
        self.column, self.reason = column, reason


def read_annotations(path, allow_unannotated: bool = False) -> Tuple[KeypointTable, List[Problem]]:
    """Read an annotation CSV (`image_id,image_category,<24 cells>`).

    Every malformed row is returned as a Problem; good rows are kept.
    Duplicate image_ids keep their first occurrence.
    Raises ValueError when the header itself is wrong.
    allow_unannotated: keep a row none of whose category points is annotated (all
    -1_-1_-1) instead of rejecting it; the NE scorer reads ground truth so (such an image
    has no normalizer and is skipped). Preprocessing keeps the default (rejected).
    """
    path = Path(path)
    problems: List[Problem] = []
    ids, cats, kps, rows = [], [], [], []
    seen = set()
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            raise ValueError(f"{path}: empty file, expected header {','.join(HEADER[:3])},...")
        header = [h.strip() for h in header]
        if tuple(header) != HEADER:
            raise ValueError(f"{path}: row 1: header does not match the Tianchi format "
                             f"(image_id,image_category,<24 keypoint columns>)")
        for line_no, fields in enumerate(reader, start=2):
            if not fields or all(not f.strip() for f in fields):
                continue
            try:
                image_id, category, points = _parse_row(fields, header, allow_unannotated)
            except _RowError as err:
                problems.append(Problem(str(path), line_no, err.column, err.reason))
                continue
            if image_id in seen:
                problems.append(Problem(str(path), line_no, "image_id", f"duplicate image_id {image_id!r}"))
                continue
            seen.add(image_id)
            ids.append(image_id)
            cats.append(category)
            kps.append(points)
            rows.append(line_no)
    table = KeypointTable(
        np.array(ids, dtype=object), np.array(cats, dtype=object),
        np.array(kps, dtype=np.int32).reshape(-1, NUM_KEYPOINTS, 3), np.array(rows, dtype=np.int64))
    return table, problems


# --------------------------------------------------------------------------- submission files as found
#
# Competitors' files are read as the platform read them: with or without a header, rows in any
# order (matched by image_id), every cell filled whatever the category, coordinates as given.

_INTEGER = re.compile(r"-?[0-9]+")


def parse_prediction_cell(text: str) -> Tuple[int, int, int]:
    """A submission cell `x_y_v` as written: three integers, v in {-1, 0, 1}; x and y may be
    negative or beyond the image (scored as given). ValueError (the reason) for anything else."""
    parts = text.strip().split("_")
    if len(parts) != 3 or not all(_INTEGER.fullmatch(p) for p in parts):
        raise ValueError(f"{text!r} is not an x_y_v cell of three integers")
    x, y, v = (int(p) for p in parts)
    if v not in (-1, 0, 1):
        raise ValueError(f"{text!r} has visibility {v}, expected -1, 0 or 1")
    return x, y, v


def trim_fields(fields: Sequence[str], n: int = len(HEADER)) -> List[str]:
    """`fields` without empty trailing fields beyond the first `n` (a spreadsheet's empty columns)."""
    fields = list(fields)
    if len(fields) > n and not any(f.strip() for f in fields[n:]):
        fields = fields[:n]
    return fields


def read_submission_rows(path) -> Tuple[bool, List[Tuple[int, List[str]]]]:
    """The rows of a submission-style CSV as written, with or without its header.

    Returns (has_header, [(row, fields), ...]): `row` is the 1-based line of the file
    (the header, when present, is row 1), blank lines left out. A file has a header when
    its first cell is `image_id`; that header must then be HEADER, else ValueError naming
    row 1 and the first column that differs. Any other first row is data.
    """
    path = Path(path)
    rows: List[Tuple[int, List[str]]] = []
    with open(path, newline="", encoding="utf-8-sig") as f:  # a BOM (Excel's UTF-8) is fine
        reader = csv.reader(f)
        for fields in reader:
            if fields and any(x.strip() for x in fields):
                rows.append((reader.line_num, fields))
    has_header = bool(rows) and rows[0][1][0].strip() == HEADER[0]
    if has_header:
        header = tuple(h.strip() for h in trim_fields(rows[0][1]))
        if header != HEADER:
            col = next((j for j, (a, b) in enumerate(zip(header, HEADER)) if a != b),
                       min(len(header), len(HEADER)))
            found = repr(header[col]) if col < len(header) else "nothing"
            expected = repr(HEADER[col]) if col < len(HEADER) else "no column"
            raise ValueError(f"{path}: row {rows[0][0]}, column {col + 1}: header has {found} where {expected} "
                             f"is expected (header must be {','.join(HEADER[:3])},..., 26 columns in CSV order)")
        rows = rows[1:]
    return has_header, rows


def write_annotations(path, image_id: Sequence[str], image_category: Sequence[str],
                      keypoints: np.ndarray) -> None:
    """Write rows in the Tianchi annotation/submission format, atomically.

    keypoints: (N, 24, 3) — x, y (original pixels, rounded here) and v.
    Points of other categories are written as -1_-1_-1 whatever the array holds.
    """
    keypoints = np.asarray(keypoints)
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as f:
            w = csv.writer(f, lineterminator="\n")
            w.writerow(HEADER)
            for iid, cat, pts in zip(image_id, image_category, keypoints):
                wanted = set(CATEGORY_KEYPOINTS[cat])
                cells = [format_cell(*pts[k]) if name in wanted else ABSENT_CELL
                         for k, name in enumerate(KEYPOINTS)]
                w.writerow([iid, cat, *cells])


def read_test_list(path) -> Tuple[List[str], List[str]]:
    """Read `test.csv` (image_id,image_category); return the two columns in file order."""
    path = Path(path)
    ids, cats = [], []
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = [h.strip() for h in next(reader, [])]
        if tuple(header[:2]) != TEST_HEADER:
            raise ValueError(f"{path}: row 1: header must start with image_id,image_category")
        for line_no, fields in enumerate(reader, start=2):
            if not fields:
                continue
            if len(fields) < 2 or _category(fields[1]) not in CATEGORIES:
                raise ValueError(f"{path}: row {line_no}: column image_category: "
                                 f"unknown or missing category")
            ids.append(fields[0].strip())
            cats.append(_category(fields[1]))
    return ids, cats


def write_test_list(path, image_id: Sequence[str], image_category: Sequence[str]) -> None:
    """Write `test.csv` atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as f:
            w = csv.writer(f, lineterminator="\n")
            w.writerow(TEST_HEADER)
            w.writerows(zip(image_id, image_category))


def discover_train_sources(input_dir) -> List[Tuple[str, Path, Path]]:
    """Every training directory under `input_dir` holding `Annotations/*.csv`.

    Returns (source name, split directory, csv path) sorted by source name, e.g.
    ("train", input/train, input/train/Annotations/train.csv). The test split
    is never a training source.
    """
    input_dir = Path(input_dir)
    found = []
    for csv_path in sorted(input_dir.glob("*/Annotations/*.csv")):
        split_dir = csv_path.parent.parent
        if split_dir.name == "test":
            continue
        name = split_dir.name if len(list(csv_path.parent.glob("*.csv"))) == 1 \
            else f"{split_dir.name}/{csv_path.stem}"
        found.append((name, split_dir, csv_path))
    return found
