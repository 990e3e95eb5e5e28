"""`ensemble` stage: command line → one library call.

CLI: python -m pipeline.stages.ensemble --output DIR [--config C] [--run RUN]
"""
from __future__ import annotations

import sys

from pipeline.combine.average import run_ensemble
from pipeline.config import config_from_args, recording, save_config, stage_parser
from pipeline.store.layout import run_file
from pipeline.store.locks import stage_lock


def main(argv=None) -> int:
    parser = stage_parser("Average fold/member predictions.")
    args = parser.parse_args(argv)
    cfg = config_from_args(args)
    with stage_lock(args.output, cfg.ensemble_target(args.run or cfg.name)[0], "ensemble"), recording("ensemble"):  # every setting read must be one its stamps cover
        name, members = cfg.ensemble_target(args.run or cfg.name)
        try:
            run_ensemble(args.output, name, members, cfg.data.categories, cfg.stage_settings("ensemble"))
            save_config(cfg, run_file(args.output, name, "config"))
        except (FileNotFoundError, ValueError) as err:
            print(f"ensemble: error: {err}", file=sys.stderr)
            return 1
        return 0


if __name__ == "__main__":
    sys.exit(main())
