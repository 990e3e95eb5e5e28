"""Score a run or ensemble: CV NE from OOF, test NE when answers exist; leaderboard.

CV NE pools every training image's OOF prediction (float coordinates); test
NE is computed on exactly what the submission holds (rounded and clipped by
submit.finalize) against INPUT/test/answers.csv. One row is appended to
OUTPUT/leaderboard.csv (replacing an older row of the same name) and the
board is printed sorted by CV NE. Per-keypoint NE goes to
OUTPUT/runs/<name>/scores.json.

CLI: python -m pipeline.score --output DIR [--config C] [--run NAME] [--stack]
"""
from __future__ import annotations

import datetime
import json
import sys
from pathlib import Path
from typing import Dict, Optional

import numpy as np
import pandas as pd

from .config import config_from_args, stage_parser
from .fsutil import atomic_path, write_text_atomic
from .keypoints import CATEGORIES
from .metrics import normalized_error
from .predictions import read_ensemble, run_dir
from .preprocess import load_index
from .submit import finalize, gather_test_predictions
from .tianchi import read_annotations

LEADERBOARD_COLUMNS = (["name", "cv_ne", "test_ne"] + [f"cv_ne_{c}" for c in CATEGORIES]
                       + ["n_points", "n_images_skipped", "created", "config_hash"])


def oof_predictions(output, name: str, train, suffix: str = "") -> np.ndarray:
    """Ensemble OOF CSVs → (N, 24, 2) aligned with the training index."""
    return read_ensemble(output, name, train.image_id, train.category, f"oof{suffix}.csv")


def test_answers(input_dir, test) -> Optional[np.ndarray]:
    """answers.csv aligned with the test index → (N, 24, 3), or None when absent."""
    path = Path(input_dir) / "test" / "answers.csv"
    if not path.exists():
        return None
    table, problems = read_annotations(path)
    if problems:
        raise ValueError(f"{path}: {problems[0]}")
    pos = {iid: i for i, iid in enumerate(table.image_id)}
    missing = [i for i in test.image_id if i not in pos]
    if missing:
        raise ValueError(f"{path}: no answer for test image {missing[0]}")
    return table.keypoints[[pos[i] for i in test.image_id]]


def score_run(output, name: str, config_hash: str = "", stacked: bool = False) -> Dict:
    """CV and test NE of a run/ensemble; returns the leaderboard row plus details."""
    prep = Path(output) / "prep"
    train = load_index(prep, "train")
    suffix = "_stack" if stacked else ""
    cv = normalized_error(train.keypoints, oof_predictions(output, name, train, suffix), train.category)
    row = {"name": name + ("+stack" if stacked else ""), "cv_ne": cv["ne"], "test_ne": np.nan,
           "n_points": cv["n_points"], "n_images_skipped": cv["n_images_skipped"],
           "created": datetime.datetime.now().isoformat(timespec="seconds"), "config_hash": config_hash}
    for c in CATEGORIES:
        row[f"cv_ne_{c}"] = cv["per_category"].get(c, np.nan)
    details = {"cv": cv}
    if (prep / "test_index.csv").exists():
        test = load_index(prep, "test")
        input_dir = json.loads((prep / "manifest.json").read_text())["input"]
        answers = test_answers(input_dir, test)
        if answers is not None:
            pred = finalize(gather_test_predictions(output, name, test, stacked), test.sizes)
            result = normalized_error(answers, pred, test.category)
            row["test_ne"] = result["ne"]
            details["test"] = result
    write_text_atomic(run_dir(output, name) / f"scores{suffix}.json", json.dumps(details, indent=2))
    return row


def update_leaderboard(output, row: Dict) -> pd.DataFrame:
    """Append (or replace by name) a row in OUTPUT/leaderboard.csv; return the sorted board."""
    path = Path(output) / "leaderboard.csv"
    board = pd.read_csv(path) if path.exists() else pd.DataFrame(columns=LEADERBOARD_COLUMNS)
    board = board[board["name"] != row["name"]]
    new = pd.DataFrame([row], columns=LEADERBOARD_COLUMNS)
    board = new if board.empty else pd.concat([board, new], ignore_index=True)
    board = board.sort_values("cv_ne", kind="stable").reset_index(drop=True)
    with atomic_path(path) as tmp:
        board.to_csv(tmp, index=False, float_format="%.6f")
    return board


def format_board(board: pd.DataFrame) -> str:
    cols = ["name", "cv_ne", "test_ne"] + [f"cv_ne_{c}" for c in CATEGORIES] + ["n_points"]
    shown = board[cols].copy()
    return shown.to_string(index=False, float_format=lambda v: f"{v:.4f}", na_rep="-")


def main(argv=None) -> int:
    parser = stage_parser("Score a run and update the leaderboard.")
    parser.add_argument("--stack", action="store_true",
                        help="score only the stacked predictions (by default they are scored beside "
                             "the plain ones whenever `make stack` produced them)")
    args = parser.parse_args(argv)
    cfg = config_from_args(args)
    name, _ = cfg.ensemble_target(args.run or cfg.name)
    stack_json = run_dir(args.output, name) / "stack.json"
    with_stack = args.stack or (stack_json.exists() and "cv_ne_stack" in json.loads(stack_json.read_text()))
    try:
        rows = [score_run(args.output, name, cfg.digest(), False)] if not args.stack else []
        if with_stack:
            rows.append(score_run(args.output, name, cfg.digest(), True))
    except (FileNotFoundError, ValueError) as err:
        print(f"score: error: {err}", file=sys.stderr)
        return 1
    for row in rows:
        board = update_leaderboard(args.output, row)
        print(f"score: {row['name']}: CV NE {row['cv_ne']:.4f}" +
              (f", test NE {row['test_ne']:.4f}" if np.isfinite(row["test_ne"]) else ""))
    submitted = name
    if with_stack and json.loads(stack_json.read_text()).get("use_stack"):
        submitted = f"{name}+stack"
    print(f"score: {Path(args.output) / 'submission.csv'} holds the predictions of row {submitted!r}")
    print(f"leaderboard ({Path(args.output) / 'leaderboard.csv'}):")
    print(format_board(board))
    return 0


if __name__ == "__main__":
    sys.exit(main())
