"""`baseline` stage: command line → one library call.

CLI: python -m pipeline.stages.baseline --output DIR [--config C] [--run RUN]   (RUN: whose prep binding to use)
"""
from __future__ import annotations

import sys

from pipeline.combine.mean_shape import baseline_run
from pipeline.config import config_from_args, recording, stage_parser
from pipeline.joint import baseline_name
from pipeline.store.rundata import run_data


def main(argv=None) -> int:
    """Mean-shape baseline of the config's dataset and folds: predictions, ensemble and leaderboard row."""
    parser = stage_parser("Mean-shape baseline predictions, ensembled and scored.")
    args = parser.parse_args(argv)
    cfg = config_from_args(args)
    with recording("baseline"):  # every setting read must be one its stamps cover
        name = baseline_name(cfg)
        try:
            prep = run_data(args.output, args.run or cfg.name, cfg)
            baseline_run(args.output, prep, name)
        except (FileNotFoundError, ValueError) as err:
            print(f"baseline: error: {err}", file=sys.stderr)
            return 1
        return 0


if __name__ == "__main__":
    sys.exit(main())
