"""Submission writer and validator (Tianchi format).

Rounding and clipping to the image happen only here (`finalize`). The
submission is written to a temporary file, validated by `validate`, and only
then renamed into place; a file the validator rejects is never written.

CLI:
  python -m pipeline.submit --validate FILE --test INPUT/test/test.csv
  python -m pipeline.submit --output DIR [--config C] [--run RUN]   (write OUTPUT/submission.csv)
"""
from __future__ import annotations

import csv
import json
import re
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .config import config_from_args, stage_parser
from .fsutil import atomic_path
from .keypoints import CATEGORY_KEYPOINTS, KEYPOINT_INDEX, KEYPOINTS, NUM_KEYPOINTS
from .tianchi import ABSENT_CELL, HEADER, read_test_list, write_annotations

_INTEGER = re.compile(r"-?[0-9]+")


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


def validate(path, test_csv, sizes: Optional[Dict[str, Tuple[int, int]]] = None) -> List[str]:
    """Problems of a submission file for the test set `test_csv` (empty list: valid).

    Checks the header, the exact rows and order of test.csv, categories, that
    the category's keypoints are `x_y_1` integer cells (inside the image when
    its size is known) and all other cells `-1_-1_-1`.
    """
    path = Path(path)
    test_ids, test_cats = read_test_list(test_csv)
    if sizes is None:
        sizes = image_sizes_for(test_csv, test_ids)
    problems: List[str] = []
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:  # a BOM (Excel's UTF-8) is fine
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError) as err:
        return [f"{path}: cannot read: {err}"]
    header = tuple(h.strip() for h in rows[0]) if rows else ()
    if header != HEADER:
        col = next((j for j, (a, b) in enumerate(zip(header, HEADER)) if a != b), min(len(header), len(HEADER)))
        found = repr(header[col]) if col < len(header) else "nothing"
        expected = repr(HEADER[col]) if col < len(HEADER) else "no column"
        problems.append(f"{path}: row 1, column {col + 1}: header has {found} where {expected} is expected "
                        f"(header must be {','.join(HEADER[:3])},..., 26 columns in CSV order)")
        return problems
    body = rows[1:]
    for i, (fields, tid, tcat) in enumerate(zip(body, test_ids, test_cats)):
        row = i + 2
        if len(fields) != len(HEADER):
            problems.append(f"{path}: row {row}: expected {len(HEADER)} fields, found {len(fields)}")
            continue
        if fields[0] != tid:
            problems.append(f"{path}: row {row}, column image_id: {fields[0]!r} where test.csv has {tid!r}")
            continue
        if fields[1] != tcat:
            problems.append(f"{path}: row {row}, column image_category: {fields[1]!r}, expected {tcat!r}")
            continue
        wanted = set(CATEGORY_KEYPOINTS[tcat])
        size = sizes.get(tid)
        for name, cell in zip(KEYPOINTS, fields[2:]):
            where = f"{path}: row {row}, column {name}"
            if name not in wanted:
                if cell != ABSENT_CELL:
                    problems.append(f"{where}: {cell!r} should be {ABSENT_CELL} (not a {tcat} keypoint)")
                continue
            parts = cell.split("_")
            if len(parts) != 3 or not all(_INTEGER.fullmatch(p) for p in parts):
                problems.append(f"{where}: {cell!r} is not an integer x_y_1 cell")
                continue
            x, y, v = (int(p) for p in parts)
            if v != 1:
                problems.append(f"{where}: {cell!r} must have visibility 1")
            elif x < 0 or y < 0 or (size and (x >= size[0] or y >= size[1])):
                bound = f" {size[0]}x{size[1]}" if size else ""
                problems.append(f"{where}: ({x}, {y}) outside the{bound} image")
    for i in range(len(body), len(test_ids)):
        problems.append(f"{path}: row {i + 2}, column image_id: missing, test.csv row {i + 2} is "
                        f"{test_ids[i]!r} ({len(body)} data rows, test.csv has {len(test_ids)})")
    for i in range(len(test_ids), len(body)):
        extra = body[i][0] if body[i] else ""
        problems.append(f"{path}: row {i + 2}, column image_id: extra row {extra!r}, "
                        f"test.csv has only {len(test_ids)} data rows")
    return problems


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
        problems = validate(tmp, test_csv, size_map)
        if problems:
            raise ValueError(f"refusing to write {path}: {len(problems)} problem(s):\n" + "\n".join(problems[:20]))


def gather_test_predictions(output, name: str, test_index, use_stack: bool = False,
                            categories: Sequence[str] = None) -> np.ndarray:
    """Per-category ensemble test CSVs → (N, 24, 2) in test_index order.

    Only rows of `categories` (default: every category in the test index) are read
    and must be predicted; other rows stay NaN.
    """
    from .predictions import read_ensemble

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
    from .predictions import run_dir

    path = run_dir(output, name) / "stack.json"
    return path.exists() and json.loads(path.read_text()).get("use_stack", False)


def _run_inputs(output, name: str) -> Dict:
    """A run's ensemble (and stacker) identity, as submit and score record it."""
    from .artifacts import digest, read_record
    from .predictions import run_dir

    ens = read_record(run_dir(output, name) / "ensemble.json")
    if ens is None:
        raise FileNotFoundError(f"{run_dir(output, name) / 'ensemble.json'} missing: run `make ensemble` "
                                f"for run {name!r} first")
    stack = read_record(run_dir(output, name) / "stack.json")
    use = bool(stack and stack.get("use_stack"))
    return {"ensemble": digest(ens["inputs"]), "categories": ens["categories"], "use_stack": use,
            "stack": digest(stack["inputs"]) if use else None}


def plan_submission(output, name: str, categories: Sequence[str], fallback: str, test_categories) -> Dict:
    """Which run predicts which test categories: {run: categories}; ValueError when some have none.

    `name` predicts its own `categories`; the test categories it lacks come from `fallback`
    (which must cover them and share the dataset).
    """
    from .preprocess import run_data

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


def submit_run(output, name: str, categories: Sequence[str], fallback: str) -> Dict:
    """Write runs/<name>/submission.csv (validated) unless submit.json records the same inputs.

    Returns the submit record (inputs, plan: run → categories, n_rows).
    """
    from .artifacts import file_id, is_current, write_record
    from .predictions import run_dir
    from .preprocess import run_data

    prep = run_data(output, name)
    test = prep.test_index()
    if test is None:
        raise FileNotFoundError(f"no test set in {prep.ds_dir} (INPUT has no test/test.csv)")
    plan = plan_submission(output, name, categories, fallback, test.category)
    inputs = {"plan": plan, "runs": {run: _run_inputs(output, run) for run in plan},
              "test_csv": file_id(prep.test_csv)}
    path = run_dir(output, name) / "submission.csv"
    record = run_dir(output, name) / "submit.json"
    if is_current(record, inputs, [path]):
        return json.loads(record.read_text())
    xy = np.full((len(test.image_id), NUM_KEYPOINTS, 2), np.nan)
    for run, cats in plan.items():
        if cats:
            part = gather_test_predictions(output, run, test, stack_choice(output, run), cats)
            rows = np.isin(test.category, cats)
            xy[rows] = part[rows]
    write_submission(path, prep.test_csv, test.image_id, test.category, xy, test.sizes)
    return write_record(record, inputs, plan=plan, n_rows=int(len(test.image_id)))


def publish(source: Path, target: Path) -> bool:
    """Copy `source` to `target` atomically unless it already holds the same bytes; True if copied."""
    import shutil

    if target.exists() and target.read_bytes() == source.read_bytes():
        return False
    with atomic_path(target) as tmp:
        shutil.copyfile(source, tmp)
    return True


def main(argv=None) -> int:
    parser = stage_parser("Write or validate a Tianchi submission.")
    parser.add_argument("--validate", metavar="FILE", help="validate FILE and exit")
    parser.add_argument("--test", metavar="TEST_CSV", help="test.csv the submission answers")
    args = parser.parse_args(argv)
    if args.validate:
        if not args.test:
            parser.error("--validate needs --test INPUT/test/test.csv")
        problems = validate(args.validate, args.test)
        for p in problems:
            print(p)
        print(f"{args.validate}: {'valid' if not problems else f'{len(problems)} problem(s)'}",
              file=sys.stderr)
        return 1 if problems else 0

    from .baseline import baseline_name
    from .predictions import run_dir

    cfg = config_from_args(args)
    name, _ = cfg.ensemble_target(args.run or cfg.name)
    fallback = cfg.submit.fallback or baseline_name(cfg)
    try:
        record = submit_run(args.output, name, cfg.data.categories, fallback)
    except (ValueError, FileNotFoundError) as err:
        print(f"submit: error: {err}", file=sys.stderr)
        return 1
    source = run_dir(args.output, name) / "submission.csv"
    out = Path(args.output) / "submission.csv"
    publish(source, out)
    plan = record["plan"]
    parts = [f"{run}{' + stacker' if record['inputs']['runs'][run]['use_stack'] else ''}: {', '.join(cats)}"
             for run, cats in plan.items() if cats]
    print(f"submit: {out} = {source} ({record['n_rows']} rows, validated); predictions of " + "; ".join(parts))
    if len(plan) > 1:
        print(f"submit: run {name!r} covers only {', '.join(plan[name])}; the other categories come from "
              f"the fallback run {list(plan)[1]!r} (recorded in {run_dir(args.output, name) / 'submit.json'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
