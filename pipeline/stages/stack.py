"""`stack` stage: command line → one library call.

CLI: python -m pipeline.stages.stack --output DIR [--config C] [--run RUN]
"""
from __future__ import annotations

import sys

from pipeline.combine.stacker import run_stack
from pipeline.config import config_from_args, recording, stage_parser
from pipeline.store.locks import stage_lock


def main(argv=None) -> int:
    parser = stage_parser("LightGBM level-2 stacker on OOF predictions.")
    args = parser.parse_args(argv)
    cfg = config_from_args(args)
    with stage_lock(args.output, cfg.ensemble_target(args.run or cfg.name)[0], "stack"), recording("stack"):  # every setting read must be one its stamps cover
        name, members = cfg.ensemble_target(args.run or cfg.name)
        try:
            r = run_stack(args.output, cfg, name, members)
        except (FileNotFoundError, ValueError) as err:
            print(f"stack: error: {err}", file=sys.stderr)
            return 1
        if r["mode"] == "off":
            print("stack: off (stack.mode=off); the submission uses plain averaging")
            return 0
        print(f"stack: CV NE plain {r['cv_ne_plain']:.4f} → stacked {r['cv_ne_stack']:.4f} "
              f"(relative gain {100 * r['relative_gain']:+.1f} %); submission uses "
              f"{'the stacker' if r['use_stack'] else 'plain averaging'} (stack.mode={r['mode']})")
        return 0


if __name__ == "__main__":
    sys.exit(main())
