"""`report` stage: command line → one library call.

CLI: python -m pipeline.stages.report --output DIR [--config C] [--run RUN]
"""
from __future__ import annotations

import sys

from pipeline.config import config_from_args, recording, stage_parser
from pipeline.joint import model_names
from pipeline.scoring.plots import run_report
from pipeline.store.locks import stage_lock


def main(argv=None) -> int:
    parser = stage_parser("Plots and an HTML report.")
    args = parser.parse_args(argv)
    cfg = config_from_args(args)
    with stage_lock(args.output, cfg.ensemble_target(args.run or cfg.name)[0], "report"), recording("report"):  # every setting read must be one its stamps cover
        run, _ = cfg.ensemble_target(args.run or cfg.name)
        try:
            path = run_report(args.output, run, cfg.data.folds, cfg.data.categories, model_names(cfg))
        except (FileNotFoundError, ValueError) as err:
            print(f"report: error: {err}", file=sys.stderr)
            return 1
        print(f"report: {path}")
        return 0


if __name__ == "__main__":
    sys.exit(main())
