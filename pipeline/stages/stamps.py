"""`stamps`: the make side of the run store, run while make reads the Makefile.

    python -m pipeline.stages.stamps stamps --output DIR --input DIR --run RUN [--config C] [--set ...]
    python -m pipeline.stages.stamps where --output DIR --run RUN [--config C]   (the demo's last line)

`stamps` writes the run's stage stamps and vars.mk (pipeline/store/stamps.py) and prints vars.mk's
path, which the Makefile includes; a config error is one line on stderr and exit status 2.
"""
from __future__ import annotations

import argparse
import sys

from pipeline.config import add_config_args, config_from_args
from pipeline.store import layout
from pipeline.store.stamps import write_make_files


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Per-stage settings stamps and vars.mk for make.")
    parser.add_argument("command", choices=["stamps", "where"])
    parser.add_argument("--output", default="output")
    parser.add_argument("--input", default=None)
    parser.add_argument("--run", default=None)
    add_config_args(parser)
    args = parser.parse_args(argv)
    try:
        cfg = config_from_args(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"config error: {err}", file=sys.stderr)
        return 2
    run = args.run or cfg.name
    if args.command == "where":
        ens, _ = cfg.ensemble_target(run)
        print(f"demo done: submission {layout.submission_path(args.output)}, leaderboard "
              f"{layout.leaderboard_path(args.output)}, report {layout.run_file(args.output, ens, 'report')}")
        return 0
    print(write_make_files(args.output, run, cfg, args.input))
    return 0


if __name__ == "__main__":
    sys.exit(main())
