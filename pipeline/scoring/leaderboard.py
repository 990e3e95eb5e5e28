"""Score a run or ensemble: CV NE from OOF, test NE when answers exist; leaderboard.

CV NE pools every training image's OOF prediction (float coordinates); test
NE is computed on exactly what the submission holds (rounded and clipped by
submit.finalize) against INPUT/test/answers.csv. Both cover the run's own
categories only (`data.categories`; the row's `categories` column names them).
One row is put on OUTPUT/leaderboard.csv (replacing an older row of the same
name) and the board is printed sorted by CV NE. Per-keypoint NE and the inputs
the scores were computed from go to OUTPUT/runs/<name>/scores.json; nothing is
recomputed or rewritten when those inputs did not change.

CLI: python -m pipeline.stages.score --output DIR [--config C] [--run NAME] [--stack]
     python -m pipeline.stages.score --output DIR --file PRED.csv --name LABEL --truth ANSWERS.csv
       (`make score-file`: a row for any submission file, test columns only; `score_external`)
"""
from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Dict, Optional, Sequence

import numpy as np
import pandas as pd

from pipeline.keypoints import CATEGORIES
from pipeline.scoring.metrics import (
    bootstrap_ne,
    image_sums,
    normalized_error,
    paired_bootstrap_diff,
    point_errors,
    read_truth,
)
from pipeline.scoring.submission import finalize, gather_test_predictions
from pipeline.store.layout import errors_path, leaderboard_path, run_dir, run_file
from pipeline.store.predictions import read_ensemble
from pipeline.store.records import is_current, write_record
from pipeline.store.rundata import run_data

#: interval columns: 95 % bootstrap interval of the row's NE (images resampled, points pooled), and
#: `*_vs_best`: NE minus that of the best row over the same categories (lowest CV NE), with its paired
#: bootstrap interval (empty when the two rows were not scored on the same images)
INTERVAL_COLUMNS = ["cv_ne_lo", "cv_ne_hi", "test_ne_lo", "test_ne_hi",
                    "cv_vs_best", "cv_vs_best_lo", "cv_vs_best_hi", "test_vs_best", "test_vs_best_lo",
                    "test_vs_best_hi", "best"]
#: `test_ne_<cat>`: test NE per category; `source`: empty for a pipeline run, `file <sha1>` for a row
#: `make score-file` made from any submission file (its CV columns stay empty)
LEADERBOARD_COLUMNS = (["name", "categories", "cv_ne", "test_ne"] + [f"cv_ne_{c}" for c in CATEGORIES]
                       + ["n_points", "n_images_skipped", "created", "config_hash"] + INTERVAL_COLUMNS
                       + [f"test_ne_{c}" for c in CATEGORIES] + ["source", "models"])
SPLITS = ("cv", "test")


def categories_label(categories: Sequence[str]) -> str:
    """Leaderboard label of the categories a row covers: `all` or e.g. `dress+skirt`."""
    return "all" if set(categories) >= set(CATEGORIES) else "+".join(c for c in CATEGORIES if c in categories)


def oof_predictions(output, name: str, train, suffix: str = "", categories: Sequence[str] = None) -> np.ndarray:
    """Ensemble OOF CSVs → (N, 24, 2) aligned with the training index (NaN outside `categories`)."""
    cats = train.category if categories is None else [c for c in set(train.category) if c in categories]
    return read_ensemble(output, name, train.image_id, cats, f"oof{suffix}.csv")


def categories_ne(truth: np.ndarray, pred: np.ndarray, image_category, categories: Sequence[str]) -> Dict:
    """normalized_error over the images of `categories` only (truth (N, 24, 3), pred (N, 24, 2))."""
    rows = np.isin(np.asarray(image_category), list(categories))
    return normalized_error(truth[rows], pred[rows], np.asarray(image_category)[rows])


def split_errors(truth: np.ndarray, pred: np.ndarray, image_id, image_category,
                 categories: Sequence[str]) -> Dict[str, np.ndarray]:
    """Point errors of the images of `categories`: {image_id (M,), category (M,), err (M, 24) NaN = not counted}."""
    rows = np.isin(np.asarray(image_category), list(categories))
    cats = np.asarray(image_category)[rows]
    return {"image_id": np.asarray(image_id)[rows].astype(str), "category": cats.astype(str),
            "err": point_errors(truth[rows], pred[rows], cats).astype(np.float32)}


def load_errors(output, row_name: str) -> Optional[Dict[str, Dict[str, np.ndarray]]]:
    """{split: {image_id, category, err}} of a row (splits it was scored on), or None without a file."""
    path = errors_path(output, row_name)
    if not path.exists():
        return None
    with np.load(path, allow_pickle=False) as z:
        return {split: {k: z[f"{split}_{k}"] for k in ("image_id", "category", "err")}
                for split in SPLITS if f"{split}_err" in z.files}


def aligned_sums(a: Dict[str, np.ndarray], b: Dict[str, np.ndarray], column: Optional[int] = None,
                 common: bool = False):
    """Per-image (sums, counts) of two predictions of the same images, aligned by image_id; None otherwise.

    a, b: {image_id (N,), err (N, 24)}; column: one keypoint column, or all of them.
    common: pair the images both scored (None when they share none) instead of demanding
    the same image set (e.g. a submission file that lacks a row against a full run).
    """
    ids_a, ids_b = np.asarray(a["image_id"]), np.asarray(b["image_id"])
    if common:
        shared = np.intersect1d(ids_a, ids_b)
        if not len(shared):
            return None
    elif len(ids_a) != len(ids_b) or set(ids_a) != set(ids_b):
        return None
    else:
        shared = np.sort(ids_a)
    ia, ib = np.argsort(ids_a), np.argsort(ids_b)
    order = ia[np.searchsorted(ids_a, shared, sorter=ia)]
    pos = ib[np.searchsorted(ids_b, shared, sorter=ib)]
    ea, eb = a["err"][order], b["err"][pos]
    if column is not None:
        ea, eb = ea[:, [column]], eb[:, [column]]
    return image_sums(ea) + image_sums(eb)


def test_answers(input_dir, test) -> Optional[np.ndarray]:
    """answers.csv aligned with the test index → (N, 24, 3), or None when absent."""
    path = Path(input_dir) / "test" / "answers.csv"
    if not path.exists():
        return None
    table = read_truth(path)  # as the NE scorer reads answers (ValueError names the file, row and column)
    pos = {iid: i for i, iid in enumerate(table.image_id)}
    missing = [i for i in test.image_id if i not in pos]
    if missing:
        raise ValueError(f"{path}: no answer for test image {missing[0]}")
    return table.keypoints[[pos[i] for i in test.image_id]]


def score_run(output, name: str, categories: Sequence[str], config_hash: str = "", stacked: bool = False) -> Dict:
    """CV and test NE of a run/ensemble over `categories`; returns {"row": leaderboard row, "details"}."""
    prep = run_data(output, name)
    train = prep.oof_index()  # the images with an OOF prediction (all, unless data.fold_models)
    suffix = "_stack" if stacked else ""
    oof = oof_predictions(output, name, train, suffix, categories)
    cv = categories_ne(train.keypoints, oof, train.category, categories)
    errors = {"cv": split_errors(train.keypoints, oof, train.image_id, train.category, categories)}
    row = {"name": name + ("+stack" if stacked else ""), "categories": categories_label(categories),
           "cv_ne": cv["ne"], "test_ne": np.nan,
           "n_points": cv["n_points"], "n_images_skipped": cv["n_images_skipped"],
           "created": datetime.datetime.now().isoformat(timespec="seconds"), "config_hash": config_hash}
    for c in CATEGORIES:
        row[f"cv_ne_{c}"] = cv["per_category"].get(c, np.nan)
    details = {"cv": cv}
    test = prep.test_index()
    if test is not None:
        answers = test_answers(prep.input, test)
        if answers is not None:
            pred = finalize(gather_test_predictions(output, name, test, stacked, categories), test.sizes)
            result = categories_ne(answers, pred, test.category, categories)
            row["test_ne"] = result["ne"]
            for c in CATEGORIES:
                row[f"test_ne_{c}"] = result["per_category"].get(c, np.nan)
            details["test"] = result
            errors["test"] = split_errors(answers, pred, test.image_id, test.category, categories)
    for split, e in errors.items():
        interval = bootstrap_ne(*image_sums(e["err"]))
        row[f"{split}_ne_lo"], row[f"{split}_ne_hi"] = interval["lo"], interval["hi"]
    return {"row": row, "details": details, "errors": errors}


def score_inputs(output, name: str, categories: Sequence[str], stacked: bool) -> Dict:
    """What a run's scores depend on: its ensemble (and stacker) inputs, the categories, the answers."""
    from pipeline.store.records import digest, file_id, read_record

    ens = read_record(run_file(output, name, "ensemble"))
    if ens is None:
        raise FileNotFoundError(f"{run_dir(output, name) / 'ensemble.json'} missing: run `make ensemble` first")
    # "errors": the per-image errors file (scores*_errors.npz) and the intervals are part of the scores
    inputs = {"categories": list(categories), "ensemble": digest(ens["inputs"]), "stacked": stacked, "errors": 1}
    if stacked:
        inputs["stack"] = digest(read_record(run_file(output, name, "stack"))["inputs"])
    prep = run_data(output, name)
    answers = Path(prep.input) / "test" / "answers.csv"
    inputs["answers"] = file_id(answers) if answers.exists() else None
    return inputs


def score_and_report(output, name: str, categories: Sequence[str], config_hash: str = "",
                     stacked: bool = False) -> Dict:
    """Score `name` unless its scores file records the same inputs; put the row on the leaderboard.

    Returns the leaderboard row. Nothing is rewritten when nothing changed.
    """
    suffix = "_stack" if stacked else ""
    record = run_dir(output, name) / f"scores{suffix}.json"
    inputs = score_inputs(output, name, categories, stacked)
    if is_current(record, inputs) and errors_path(output, name + ("+stack" if stacked else "")).exists():
        row = json.loads(record.read_text())["row"]
    else:
        from pipeline.store.predictions import save_npz

        result = score_run(output, name, categories, config_hash, stacked)
        row = result["row"]
        save_npz(errors_path(output, row["name"]),
                 **{f"{split}_{k}": v for split, e in result["errors"].items() for k, v in e.items()})
        write_record(record, inputs, row=row, **result["details"])
    from pipeline.store.networks import run_networks

    row = dict(row, models=len(run_networks(output, name, categories)))  # of the files used now
    update_leaderboard(output, row)
    return row


# --------------------------------------------------------------------------- external rows

#: bump when what an external row stores changes (its rows are then rescored)
EXTERNAL_VERSION = 1


def external_inputs(pred_csv, truth_csv) -> Dict:
    """What an external row depends on: the content hashes of the submission and answers files."""
    from pipeline.store.records import file_id

    return {"kind": "file", "file": file_id(pred_csv), "truth": file_id(truth_csv), "version": EXTERNAL_VERSION}


def _check_external_name(output, name: str) -> Path:
    """runs/<name>/ for an external row; ValueError for a bad name or one a pipeline run uses."""
    from pipeline.store.records import read_record

    if not name or name != name.strip() or "/" in name or name.startswith(".") or name.endswith("+stack"):
        raise ValueError(f"NAME {name!r}: give a plain label (no '/', no leading '.', no '+stack' suffix)")
    directory = run_dir(output, name)
    record = read_record(directory / "scores.json")
    pipeline_run = (directory / "ensemble.json").exists() or (directory / "prep.json").exists() or \
        (record is not None and record.get("inputs", {}).get("kind") != "file")
    if pipeline_run:
        raise ValueError(f"{directory} belongs to a pipeline run; give the file another NAME")
    return directory


def score_external(output, pred_csv, name: str, truth_csv, strict: bool = False) -> Dict:
    """Put a row for any submission file on the leaderboard: test NE with its bootstrap interval and
    per category, against the answers `truth_csv`; returns {"row", "result"}.

    The file is read as the platform read it (pipeline.metrics.match_files: any row order, no
    header, other categories' cells ignored, coordinates as given); truth rows it lacks are
    left out and counted (`n_images_missing` in the record; an error with `strict`). Stored like
    a run's scores: runs/<name>/scores.json (inputs: the two files' content hashes; the row,
    the test result, the file's path) and scores_errors.npz (test split), so `make compare`
    and the leaderboard's paired differences take the row. The CV columns stay empty.
    Nothing is recomputed or rewritten when the same two files were scored before.
    """
    from pipeline.scoring.metrics import match_files
    from pipeline.store.predictions import save_npz

    pred_csv, truth_csv = Path(pred_csv), Path(truth_csv)
    for label, path in (("PRED", pred_csv), ("TRUTH", truth_csv)):
        if not path.is_file():
            raise FileNotFoundError(f"{label}: no such file {path}")
    directory = _check_external_name(output, name)
    record_path = directory / "scores.json"
    inputs = dict(external_inputs(pred_csv, truth_csv), strict=bool(strict))
    if is_current(record_path, inputs) and errors_path(output, name).exists():
        record = json.loads(record_path.read_text())
        row, result = record["row"], record["test"]
    else:
        m = match_files(truth_csv, pred_csv, strict)
        cats = m.truth.image_category
        scored = sorted(set(cats), key=CATEGORIES.index)
        result = normalized_error(m.truth.keypoints, m.pred, cats)
        result.update(n_images_missing=len(m.missing), missing_image_ids=[iid for _, iid in m.missing[:5]],
                      n_images_truth=m.n_truth, notes=m.notes)
        errors = split_errors(m.truth.keypoints, m.pred, m.truth.image_id, cats, scored)
        interval = bootstrap_ne(*image_sums(errors["err"]))
        row = {"name": name, "categories": categories_label(scored), "cv_ne": np.nan, "test_ne": result["ne"],
               "n_points": result["n_points"], "n_images_skipped": result["n_images_skipped"],
               "created": datetime.datetime.now().isoformat(timespec="seconds"), "config_hash": "",
               "test_ne_lo": interval["lo"], "test_ne_hi": interval["hi"], "source": f"file {inputs['file']}"}
        for c in CATEGORIES:
            row[f"cv_ne_{c}"] = np.nan
            row[f"test_ne_{c}"] = result["per_category"].get(c, np.nan)
        save_npz(errors_path(output, name), **{f"test_{k}": v for k, v in errors.items()})
        write_record(record_path, inputs, row=row, test=result,
                     source={"file": str(pred_csv), "truth": str(truth_csv)})
        row = json.loads(record_path.read_text())["row"]  # as it reads back (NaN kept), the same both ways
    update_leaderboard(output, row)
    return {"row": row, "result": result}


def update_leaderboard(output, row: Dict) -> pd.DataFrame:
    """Put `row` on OUTPUT/leaderboard.csv (replacing a row of the same name); return the sorted board.

    The file is rewritten only when its content changes.
    """
    from pipeline.fsutil import file_lock
    from pipeline.store.records import write_if_changed

    path = leaderboard_path(output)
    with file_lock(path.parent / ".leaderboard.lock"):  # parallel scorers: no lost update
        board = read_board(path) if path.exists() else pd.DataFrame(columns=LEADERBOARD_COLUMNS)
        board = board.reindex(columns=LEADERBOARD_COLUMNS)
        board = board[board["name"] != row["name"]]
        new = pd.DataFrame([row], columns=LEADERBOARD_COLUMNS)
        board = new if board.empty else pd.concat([board, new], ignore_index=True)
        board = board.sort_values(["cv_ne", "name"], kind="stable").reset_index(drop=True)
        board = with_paired_differences(output, board)
        write_if_changed(path, board.to_csv(index=False, float_format="%.6f"))
    return board


def with_paired_differences(output, board: pd.DataFrame) -> pd.DataFrame:
    """The board with `*_vs_best` columns: each row's NE minus the best row's, paired bootstrap interval.

    The best row of a group of rows over the same categories is the one with the lowest
    CV NE (never chosen on test answers); the difference is computed on CV and on test,
    resampling the same images for both rows. Rows scored on other images (another data
    set) or without an errors file get empty cells.
    """
    board = board.copy()
    for col in INTERVAL_COLUMNS[4:]:
        board[col] = np.nan if col != "best" else ""
    board["best"] = board["best"].astype(object)
    for _, group in board.groupby("categories", sort=False):
        finite = group[np.isfinite(group["cv_ne"].astype(float))]
        if finite.empty:
            continue
        best_name = finite.sort_values(["cv_ne", "name"], kind="stable")["name"].iloc[0]
        best = load_errors(output, best_name)
        for idx, row in group.iterrows():
            board.at[idx, "best"] = best_name
            mine = load_errors(output, row["name"])
            if best is None or mine is None:
                continue
            for split in SPLITS:
                if split not in best or split not in mine:
                    continue
                sums = aligned_sums(best[split], mine[split])
                if sums is None:
                    continue
                d = paired_bootstrap_diff(*sums)
                board.at[idx, f"{split}_vs_best"] = d["diff"]
                board.at[idx, f"{split}_vs_best_lo"] = d["lo"]
                board.at[idx, f"{split}_vs_best_hi"] = d["hi"]
    return board


def read_board(path) -> pd.DataFrame:
    """OUTPUT/leaderboard.csv as a frame (`categories` stays text)."""
    return pd.read_csv(path, dtype={"name": str, "categories": str, "created": str, "config_hash": str,
                                    "best": str, "source": str})


def interval_text(value, lo, hi) -> str:
    """'0.0812 [0.0754, 0.0870]' (NE with its interval); '-' when the value is missing."""
    value, lo, hi = (float(v) if v is not None and v != "" else np.nan for v in (value, lo, hi))
    if not np.isfinite(value):
        return "-"
    return f"{value:.4f}" + (f" [{lo:.4f}, {hi:.4f}]" if np.isfinite(lo) and np.isfinite(hi) else "")


def difference_text(diff, lo, hi, is_best: bool) -> str:
    """'+0.0123 [+0.0040, +0.0205] *' (significant: the interval excludes 0); 'best'; 'n/a' (not paired)."""
    if is_best:
        return "best"
    diff, lo, hi = (float(v) if v is not None and v != "" else np.nan for v in (diff, lo, hi))
    if not np.isfinite(diff):
        return "n/a"
    mark = " *" if (lo > 0 or hi < 0) else ""
    return f"{diff:+.4f} [{lo:+.4f}, {hi:+.4f}]{mark}"


def format_board(board: pd.DataFrame) -> str:
    """The board as text: NE with 95 % bootstrap intervals and the paired difference to the best row."""
    board = board.reindex(columns=LEADERBOARD_COLUMNS)
    shown = pd.DataFrame({"name": board["name"], "categories": board["categories"]})
    for split in SPLITS:
        shown[f"{split}_ne [95% CI]"] = [interval_text(r[f"{split}_ne"], r[f"{split}_ne_lo"], r[f"{split}_ne_hi"])
                                         for _, r in board.iterrows()]
        shown[f"{split} vs best"] = [
            difference_text(r[f"{split}_vs_best"], r[f"{split}_vs_best_lo"], r[f"{split}_vs_best_hi"],
                            r["name"] == r["best"]) if np.isfinite(float(r[f"{split}_ne"])) else "-"
            for _, r in board.iterrows()]
    for c in CATEGORIES:
        shown[f"cv_ne_{c}"] = board[f"cv_ne_{c}"]
    shown["n_points"] = board["n_points"]
    shown["models"] = board["models"]
    text = shown.to_string(index=False, float_format=lambda v: f"{v:.4f}", na_rep="-")
    return text + ("\n[..]: 95 % bootstrap interval over images (1000 resamples); vs best: NE minus that of the"
                   " lowest-CV row over the same categories, paired over the same images; * = interval excludes 0")
