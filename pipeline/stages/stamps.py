"""`stamps` stage: command line → one library call.

The make side (`python -m pipeline.stages.stamps stamps ...`, run while make reads
"""
from __future__ import annotations

import sys

from pipeline.store.layout import stamps_dir
from pipeline.store.records import write_if_changed
from pipeline.store.stamps import make_vars, write_stamps


def main(argv=None) -> int:
    """`stamps`: write the stage stamps and vars.mk of a run (called by make while it reads the Makefile)."""
    import argparse

    from pipeline.config import add_config_args, load_config

    parser = argparse.ArgumentParser(description="Per-stage settings stamps for make.")
    parser.add_argument("command", choices=["stamps"])
    parser.add_argument("--output", default="output")
    parser.add_argument("--input", default=None)
    parser.add_argument("--run", default=None)
    add_config_args(parser)
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
    except (ValueError, FileNotFoundError) as err:
        print(f"config error: {err}", file=sys.stderr)
        return 2
    run = args.run or cfg.name
    write_stamps(args.output, run, cfg, args.input)
    write_if_changed(stamps_dir(args.output, run) / "vars.mk", make_vars(cfg, run))
    return 0


if __name__ == "__main__":
    sys.exit(main())
