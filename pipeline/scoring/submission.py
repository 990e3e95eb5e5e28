"""Submission writer and validator (Tianchi format).

Rounding and clipping to the image happen only here (`finalize`). The
submission is written to a temporary file, validated by `validate` (strict: no
error and no warning), and only then renamed into place; a file the validator
rejects is never written.

`--validate` reads any file as the competition's platform read it
(`check_submission`): errors are what the platform would refuse (missing, extra or
duplicate ids, a wrong category, a malformed cell, a wrong number of columns), one
line each with row and column, at most a handful per kind; warnings are what it
accepted (no header, another row order, other categories' cells filled, points
outside the image), one summary line per kind on stderr. Exit 1 only on errors.

CLI:
  python -m pipeline.submit --validate FILE --test INPUT/test/test.csv
  python -m pipeline.submit --output DIR [--config C] [--run RUN]   (write OUTPUT/submission.csv)
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from pipeline.fsutil import atomic_path
from pipeline.keypoints import (
    CATEGORY_KEYPOINTS,
    KEYPOINT_INDEX,
    KEYPOINTS,
    NUM_KEYPOINTS,
)
from pipeline.store.layout import run_file
from pipeline.tianchi import HEADER, read_test_list, write_annotations


def finalize(xy: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Float predictions → integer submission coordinates inside their image.

    xy: (N, K, 2) original pixels; sizes: (N, 2) width, height.
    Returns int64 (N, K, 2), rounded and clipped to [0, width-1] × [0, height-1].
    NaN (points of other categories) becomes 0.
    """
    xy = np.nan_to_num(np.asarray(xy, dtype=np.float64))
    hi = (np.asarray(sizes)[:, None, :] - 1).astype(np.float64)
    return np.clip(np.rint(xy), 0, hi).astype(np.int64)


def image_sizes_for(test_csv, image_ids: Sequence[str]) -> Dict[str, Tuple[int, int]]:
    """(width, height) of the test images that can be read, from their headers."""
    from PIL import Image

    base = Path(test_csv).parent
    sizes = {}
    for iid in image_ids:
        try:
            with Image.open(base / iid) as im:
                sizes[iid] = im.size
        except Exception:  # noqa: BLE001 - unreadable images are simply not bounds-checked
            continue
    return sizes


#: lines of one kind the validator prints before "... and N more"
SHOW_FIRST = 5


@dataclasses.dataclass
class SubmissionCheck:
    """What `check_submission` found in a submission file.

    errors: {kind: [line, ...]}: what the competition's platform would refuse (kinds
    `read`, `header`, `columns`, `image_id` (extra), `duplicate`, `missing`, `category`,
    `cell`), one line each naming file, row and column;
    warnings: {kind: [(row, detail), ...]}: what it accepted (rows matched by image_id,
    other categories' cells ignored, coordinates scored as given) but our writer never
    produces: `no-header`, `order`, `other-cells`, `visibility`, `outside`.
    """

    path: str
    errors: Dict[str, List[str]] = dataclasses.field(default_factory=dict)
    warnings: Dict[str, List[Tuple[int, str]]] = dataclasses.field(default_factory=dict)

    def error(self, kind: str, line: str) -> None:
        self.errors.setdefault(kind, []).append(line)

    def warn(self, kind: str, row: int, detail: str = "") -> None:
        self.warnings.setdefault(kind, []).append((row, detail))

    @property
    def error_lines(self) -> List[str]:
        return [line for lines in self.errors.values() for line in lines]

    def warning_lines(self, first: int = SHOW_FIRST) -> List[str]:
        """One summary line per warning kind: its count and the first few rows."""
        out = []
        for kind, items in self.warnings.items():
            rows = list(dict.fromkeys(r for r, _ in items))  # distinct, in file order
            shown = ", ".join(str(r) for r in rows[:first])
            more = f" ... and {len(rows) - first} more" if len(rows) > first else ""
            examples = "; ".join(f"row {r}: {d}" for r, d in items[:min(first, 3)] if d)
            out.append(f"{self.path}: warning: {_WARNING_TEXT[kind].format(n=len(items), rows=len(rows))}: "
                       f"row{'s' if len(rows) > 1 else ''} {shown}{more}" + (f" (e.g. {examples})" if examples else ""))
        return out

    def lines(self, first: int = SHOW_FIRST) -> List[str]:
        """Error lines, at most `first` of each kind followed by a "... and N more" line."""
        out = []
        for kind, lines in self.errors.items():
            out.extend(lines[:first])
            if len(lines) > first:
                out.append(f"{self.path}: ... and {len(lines) - first} more {kind} error(s) like these")
        return out


_WARNING_TEXT = {
    "no-header": "no header row: row 1 is read as data (the platform accepted files without one)",
    "order": "{n} row(s) not at their test.csv position (the platform matched rows by image_id)",
    "other-cells": "{n} cell(s) of other categories' keypoints in {rows} row(s) are not -1_-1_-1 "
                   "(ignored by the scorer)",
    "visibility": "{n} cell(s) of the category's own keypoints in {rows} row(s) have visibility other than 1 "
                  "(scored at their coordinates)",
    "outside": "{n} point(s) in {rows} row(s) lie outside the image (scored as given)",
}


def check_submission(path, test_csv, sizes: Optional[Dict[str, Tuple[int, int]]] = None) -> SubmissionCheck:
    """Check a submission file for the test set `test_csv`, as the platform read files.

    Rows are matched by image_id (any order); the file may lack its header; other
    categories' cells are ignored. Errors: an unreadable file, a wrong header, a row
    without 26 fields, an id not in test.csv, a duplicate id, a test.csv id without a row
    (named), a category differing from test.csv, a cell that is not `x_y_v` with integer
    parts (any column). Warnings: no header, rows out of test.csv order, other categories'
    cells filled, the category's own cells with visibility other than 1, points outside
    the image (negative always; beyond width/height where `sizes` knows the image; by
    default sizes are read from the test images that exist).
    """
    from pipeline.tianchi import (
        parse_prediction_cell,
        read_submission_rows,
        trim_fields,
    )

    path = Path(path)
    check = SubmissionCheck(str(path))
    test_ids, test_cats = read_test_list(test_csv)
    if sizes is None:
        sizes = image_sizes_for(test_csv, test_ids)
    try:
        has_header, rows = read_submission_rows(path)
    except (OSError, UnicodeDecodeError) as err:
        check.error("read", f"{path}: cannot read: {err}")
        return check
    except ValueError as err:  # a header that is not the Tianchi one
        check.error("header", str(err))
        return check
    if not has_header and rows:
        check.warn("no-header", rows[0][0])
    position = {iid: i for i, iid in enumerate(test_ids)}
    seen: Dict[str, int] = {}
    for n, (row, fields) in enumerate(rows):
        fields = trim_fields(fields)
        at = f"{path}: row {row}"
        iid = fields[0].strip()
        if iid in seen:
            check.error("duplicate", f"{at}, column image_id: duplicate image_id {iid!r} (first at row {seen[iid]})")
            continue
        seen[iid] = row  # a row of the wrong width still names its id: reported once, not also missing
        if len(fields) != len(HEADER):
            check.error("columns", f"{at}: expected {len(HEADER)} fields, found {len(fields)}")
            continue
        cat = fields[1].strip()
        if iid not in position:
            check.error("image_id", f"{at}, column image_id: extra row {iid!r}, not in {test_csv}")
            continue
        if position[iid] != n:
            check.warn("order", row)
        tcat = test_cats[position[iid]]
        if cat != tcat:
            check.error("category", f"{at}, column image_category: {cat!r}, test.csv has {tcat!r}")
            continue
        wanted = set(CATEGORY_KEYPOINTS[tcat])
        size = sizes.get(iid)
        for name, cell in zip(KEYPOINTS, fields[2:]):
            try:
                x, y, v = parse_prediction_cell(cell)
            except ValueError as err:
                check.error("cell", f"{at}, column {name}: {err}")
                continue
            if name not in wanted:
                if (x, y, v) != (-1, -1, -1):
                    check.warn("other-cells", row, f"{name} {cell.strip()!r}")
                continue
            if v != 1:
                check.warn("visibility", row, f"{name} {cell.strip()!r}")
            if v >= 0 and (x < 0 or y < 0 or (size and (x >= size[0] or y >= size[1]))):
                bound = f" {size[0]}x{size[1]}" if size else ""
                check.warn("outside", row, f"{name} ({x}, {y}) outside the{bound} image")
    for i, iid in enumerate(test_ids):
        if iid not in seen:
            check.error("missing", f"{path}: test.csv row {i + 2}, column image_id: missing row for {iid!r} "
                                   f"({len(seen)} ids in the file, test.csv has {len(test_ids)})")
    return check


def validate(path, test_csv, sizes: Optional[Dict[str, Tuple[int, int]]] = None,
             strict: bool = False) -> List[str]:
    """Problems of a submission file for the test set `test_csv` (empty list: valid).

    Default: what the platform would refuse (`check_submission`'s errors), one line each.
    strict: also one line per warning kind (no header, order, other categories' cells, a
    visibility other than 1, points outside the image): what `write_submission` demands of
    its own files, which have none of those.
    """
    check = check_submission(path, test_csv, sizes)
    return check.error_lines + (check.warning_lines() if strict else [])


def write_submission(path, test_csv, image_id: Sequence[str], category: Sequence[str], xy: np.ndarray,
                     sizes: np.ndarray) -> None:
    """Round, clip, write, validate, then rename into place.

    xy: (N, 24, 2) float original pixels (NaN for other categories' points) in
    test.csv order; sizes: (N, 2). Raises ValueError listing the problems when
    the validator rejects the file (nothing is written then).
    """
    coords = finalize(xy, sizes)
    kps = np.concatenate([coords, np.ones((len(coords), NUM_KEYPOINTS, 1), np.int64)], -1)
    with atomic_path(path) as tmp:
        write_annotations(tmp, image_id, category, kps)
        size_map = {i: (int(w), int(h)) for i, (w, h) in zip(image_id, sizes)}
        problems = validate(tmp, test_csv, size_map, strict=True)  # our own files: no warning either
        if problems:
            raise ValueError(f"refusing to write {path}: {len(problems)} problem(s):\n" + "\n".join(problems[:20]))


def gather_test_predictions(output, name: str, test_index, use_stack: bool = False,
                            categories: Sequence[str] = None) -> np.ndarray:
    """Per-category ensemble test CSVs → (N, 24, 2) in test_index order.

    Only rows of `categories` (default: every category in the test index) are read
    and must be predicted; other rows stay NaN.
    """
    from pipeline.store.predictions import read_ensemble

    wanted = sorted(set(test_index.category)) if categories is None \
        else [c for c in sorted(set(test_index.category)) if c in categories]
    xy = read_ensemble(output, name, test_index.image_id, wanted, "test_stack.csv" if use_stack else "test.csv")
    missing = [iid for iid, c, p in zip(test_index.image_id, test_index.category, xy)
               if c in wanted and np.isnan(p[[KEYPOINT_INDEX[n] for n in CATEGORY_KEYPOINTS[c]]]).any()]
    if missing:
        raise ValueError(f"no prediction for {len(missing)} test image(s) of {name}, e.g. {missing[0]}")
    return xy


def stack_choice(output, name: str) -> bool:
    """Whether the stacker's output should be submitted (decided by `make stack`)."""

    path = run_file(output, name, "stack")
    return path.exists() and json.loads(path.read_text()).get("use_stack", False)


def _run_inputs(output, name: str) -> Dict:
    """A run's ensemble (and stacker) identity, as submit and score record it."""
    from pipeline.store.layout import run_dir
    from pipeline.store.records import digest, read_record

    ens = read_record(run_file(output, name, "ensemble"))
    if ens is None:
        raise FileNotFoundError(f"{run_dir(output, name) / 'ensemble.json'} missing: run `make ensemble` "
                                f"for run {name!r} first")
    stack = read_record(run_file(output, name, "stack"))
    use = bool(stack and stack.get("use_stack"))
    return {"ensemble": digest(ens["inputs"]), "categories": ens["categories"], "use_stack": use,
            "stack": digest(stack["inputs"]) if use else None}


def plan_submission(output, name: str, categories: Sequence[str], fallback: str, test_categories) -> Dict:
    """Which run predicts which test categories: {run: categories}; ValueError when some have none.

    `name` predicts its own `categories`; the test categories it lacks come from `fallback`
    (which must cover them and share the dataset).
    """
    from pipeline.store.rundata import run_data

    own = [c for c in sorted(set(test_categories)) if c in categories]
    rest = [c for c in sorted(set(test_categories)) if c not in categories]
    plan = {name: own}
    if rest:
        try:
            fb = _run_inputs(output, fallback)
        except FileNotFoundError:
            raise ValueError(f"run {name!r} covers only {', '.join(categories)}; the test set also holds "
                             f"{', '.join(rest)}, which need a fallback run, but {fallback!r} has no ensemble "
                             f"(run `make baseline` for the default mean-shape fallback, or set "
                             f"submit.fallback to a run that covers them)") from None
        lacking = [c for c in rest if c not in fb["categories"]]
        if lacking:
            raise ValueError(f"fallback run {fallback!r} does not cover {', '.join(lacking)}")
        a, b = run_data(output, name), run_data(output, fallback)
        if a.dataset != b.dataset:
            raise ValueError(f"fallback run {fallback!r} was built on dataset {b.dataset}, run {name!r} on "
                             f"{a.dataset}: they answer different test sets")
        plan[fallback] = rest
    return plan


def submit_run(output, name: str, categories: Sequence[str], fallback: str, max_models: int = 0) -> Dict:
    """Write runs/<name>/submission.csv (validated) unless submit.json records the same inputs.

    ValueError (nothing written) when its plan needs more than `max_models` (> 0) trained
    networks (pipeline/store/networks.py). Returns the submit record (inputs, plan: run → categories,
    n_rows, models).
    """
    from pipeline.store.records import file_id, is_current, write_record
    from pipeline.store.rundata import run_data

    prep = run_data(output, name)
    test = prep.test_index()
    if test is None:
        raise FileNotFoundError(f"no test set in {prep.ds_dir} (INPUT has no test/test.csv)")
    plan = plan_submission(output, name, categories, fallback, test.category)
    from pipeline.store.networks import check_limit, submission_networks

    n_models = submission_networks(output, plan)
    check_limit(n_models, max_models, f"submission of run {name!r}")
    inputs = {"plan": plan, "runs": {run: _run_inputs(output, run) for run in plan},
              "test_csv": file_id(prep.test_csv)}
    path = run_file(output, name, "submission")
    record = run_file(output, name, "submit")
    if is_current(record, inputs, [path]):
        return dict(json.loads(record.read_text()), models=n_models)
    xy = np.full((len(test.image_id), NUM_KEYPOINTS, 2), np.nan)
    for run, cats in plan.items():
        if cats:
            part = gather_test_predictions(output, run, test, stack_choice(output, run), cats)
            rows = np.isin(test.category, cats)
            xy[rows] = part[rows]
    write_submission(path, prep.test_csv, test.image_id, test.category, xy, test.sizes)
    return dict(write_record(record, inputs, [path], plan=plan, n_rows=int(len(test.image_id))), models=n_models)


def publish(source: Path, target: Path) -> bool:
    """Copy `source` to `target` atomically unless it already holds the same bytes; True if copied."""
    import shutil

    if target.exists() and target.read_bytes() == source.read_bytes():
        return False
    with atomic_path(target) as tmp:
        shutil.copyfile(source, tmp)
    return True
