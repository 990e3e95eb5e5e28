"""`baseline` stage: command line → one library call.

CLI: python -m pipeline.stages.baseline --output DIR [--config C] [--run RUN]   (RUN: whose prep binding to use)
"""
from __future__ import annotations

import sys

from pipeline.combine.mean_shape import run_baseline
from pipeline.config import config_from_args, recording, stage_parser
from pipeline.joint import baseline_name
from pipeline.store.rundata import run_data


def main(argv=None) -> int:
    """Mean-shape baseline of the config's dataset and folds: predictions, ensemble and leaderboard row."""
    from pipeline.combine.average import run_ensemble
    from pipeline.keypoints import CATEGORIES
    from pipeline.scoring.leaderboard import score_and_report

    parser = stage_parser("Mean-shape baseline predictions, ensembled and scored.")
    args = parser.parse_args(argv)
    cfg = config_from_args(args)
    with recording("baseline"):  # every setting read must be one its stamps cover
        name = baseline_name(cfg)
        try:
            prep = run_data(args.output, args.run or cfg.name, cfg)
            summary = run_baseline(args.output, prep, name)
            categories = [c for c in CATEGORIES if any(k.startswith(c + "/") for k in summary)]
            run_ensemble(args.output, name, [name], categories)
            score_and_report(args.output, name, categories, config_hash="meanshape")
        except (FileNotFoundError, ValueError) as err:
            print(f"baseline: error: {err}", file=sys.stderr)
            return 1
        return 0


if __name__ == "__main__":
    sys.exit(main())
