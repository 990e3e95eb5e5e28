"""`score` stage: command line → one library call.

CLI: python -m pipeline.stages.score --output DIR [--config C] [--run NAME] [--stack]
     python -m pipeline.stages.score --output DIR --file PRED.csv --name LABEL --truth ANSWERS.csv
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from pipeline.config import config_from_args, recording, stage_parser
from pipeline.scoring.leaderboard import (
    format_board,
    interval_text,
    read_board,
    score_and_report,
    score_external,
)
from pipeline.store.layout import leaderboard_path, run_dir, run_file
from pipeline.store.locks import stage_lock


def main(argv=None) -> int:
    parser = stage_parser("Score a run and update the leaderboard.")
    parser.add_argument("--stack", action="store_true",
                        help="score only the stacked predictions (by default they are scored beside "
                             "the plain ones whenever `make stack` produced them)")
    parser.add_argument("--show", action="store_true", help="only print OUTPUT/leaderboard.csv")
    parser.add_argument("--file", metavar="PRED", help="score this submission file (any source) as row --name")
    parser.add_argument("--name", help="leaderboard label of --file")
    parser.add_argument("--truth", metavar="ANSWERS", help="answers of --file's test set (INPUT/test/answers.csv)")
    parser.add_argument("--strict", action="store_true", help="--file: a missing test row is an error")
    args = parser.parse_args(argv)
    board_path = leaderboard_path(args.output)
    if args.file:
        return _main_external(args, board_path)
    if args.show:
        if not board_path.exists():
            print(f"score: no leaderboard yet ({board_path}); run `make score`", file=sys.stderr)
            return 1
        print(f"leaderboard ({board_path}):")
        print(format_board(read_board(board_path)))
        return 0
    cfg = config_from_args(args)
    with stage_lock(args.output, cfg.ensemble_target(args.run or cfg.name)[0], "score"), recording("score"):  # every setting read must be one its stamps cover
        name, _ = cfg.ensemble_target(args.run or cfg.name)
        stack_json = run_file(args.output, name, "stack")
        with_stack = args.stack or (stack_json.exists() and "cv_ne_stack" in json.loads(stack_json.read_text()))
        try:
            rows = [score_and_report(args.output, name, cfg.data.categories, cfg.digest(), False)] \
                if not args.stack else []
            if with_stack:
                rows.append(score_and_report(args.output, name, cfg.data.categories, cfg.digest(), True))
        except (FileNotFoundError, ValueError) as err:
            print(f"score: error: {err}", file=sys.stderr)
            return 1
        for row in rows:
            print(f"score: {row['name']} ({row['categories']}): CV NE {row['cv_ne']:.4f}" +
                  (f", test NE {row['test_ne']:.4f}" if row["test_ne"] is not None and np.isfinite(row["test_ne"])
                   else ""))
        submitted = name
        if with_stack and json.loads(stack_json.read_text()).get("use_stack"):
            submitted = f"{name}+stack"
        print(f"score: {run_dir(args.output, name) / 'submission.csv'} holds the predictions of row {submitted!r}")
        print(f"leaderboard ({board_path}):")
        print(format_board(read_board(board_path)))
        return 0


def _main_external(args, board_path: Path) -> int:
    """`make score-file PRED=... NAME=... [TRUTH=...]`: score one file, put its row on the board."""
    if not args.name or not args.truth:
        print("score: error: --file needs --name LABEL and --truth ANSWERS.csv", file=sys.stderr)
        return 2
    if not Path(args.truth).is_file():
        print(f"score: error: no answers at {args.truth}: a submission file can be scored only against its "
              f"test set's answers (INPUT/test/answers.csv, or TRUTH=path)", file=sys.stderr)
        return 1
    try:
        out = score_external(args.output, args.file, args.name, args.truth, args.strict)
    except (FileNotFoundError, ValueError, OSError) as err:
        print(f"score: error: {err}", file=sys.stderr)
        return 1
    row, result = out["row"], out["result"]
    for note in result.get("notes", []):
        print(f"score: {'warning' if 'no prediction' in note else 'note'}: {note}", file=sys.stderr)
    per_cat = ", ".join(f"{c} {v:.4f}" for c, v in result["per_category"].items())
    print(f"score: {row['name']} = {args.file} ({row['source']}): test NE "
          f"{interval_text(row['test_ne'], row['test_ne_lo'], row['test_ne_hi'])} over {row['n_points']} points "
          f"of {result['n_images']} images ({row['n_images_skipped']} without a usable normalizer"
          + (f"; {result['n_images_missing']} test row(s) without a prediction not counted"
             if result.get("n_images_missing") else "") + f"); per category: {per_cat}")
    print(f"leaderboard ({board_path}):")
    print(format_board(read_board(board_path)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
