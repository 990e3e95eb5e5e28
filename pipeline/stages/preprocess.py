"""`preprocess` stage: command line → one library call.

CLI: python -m pipeline.stages.preprocess --input DIR --output DIR [--config C] [--run RUN] [--force]
"""
from __future__ import annotations

import sys
from pathlib import Path

from pipeline.config import config_from_args, recording, save_config, stage_parser
from pipeline.prep.preprocess import preprocess


def main(argv=None) -> int:
    parser = stage_parser("Parse, validate, split folds and cache images; bind them to a run.")
    parser.add_argument("--input", default="input")
    parser.add_argument("--force", action="store_true", help="rebuild the dataset even when up to date")
    args = parser.parse_args(argv)
    cfg = config_from_args(args)
    with recording("prep"):  # every setting read must be one its stamps cover
        run = args.run or cfg.name
        try:
            summary = preprocess(args.input, args.output, cfg.cache_size, cfg.data.folds, cfg.data.fold_seed,
                                 cfg.data.jobs, cfg.data.categories, args.force, cfg.model.margin, run=run,
                                 models=cfg.data.fold_models)
        except AssertionError as err:
            print(f"preprocess: error: {err}", file=sys.stderr)
            return 1
        save_config(cfg, Path(summary["dataset_dir"]) / f"config_{run}.yaml")
        return 0


if __name__ == "__main__":
    sys.exit(main())
