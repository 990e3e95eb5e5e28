"""`predict` stage: command line → one library call.

CLI: python -m pipeline.stages.predict --output DIR [--config C] [--run RUN]
"""
from __future__ import annotations

import sys

from pipeline import hardware
from pipeline.config import config_from_args, recording, stage_parser
from pipeline.heatmap.oof import run_predict
from pipeline.store.locks import stage_lock


def main(argv=None) -> int:
    parser = stage_parser("OOF and test predictions with flip TTA.")
    parser.add_argument("--force", action="store_true")
    args = parser.parse_args(argv)
    cfg = config_from_args(args)
    with stage_lock(args.output, args.run or cfg.name, "predict"), recording("predict"):  # every setting read must be one its stamps cover
        hardware.setup_inference(cfg)
        try:
            table = run_predict(args.output, cfg, args.run or cfg.name, args.force)
        except (FileNotFoundError, ValueError) as err:
            print(f"predict: error: {err}", file=sys.stderr)
            return 1
        ne_cols = [c for c in table.columns if c.startswith("ne_")]
        print("predict: mean OOF NE over folds — TTA variants (plain, mirror only, heatmap avg, coord avg) and "
              "sub-pixel decodings of the merged maps (refine none / quarter / dark):")
        summary = table.groupby("category")[ne_cols].mean()
        summary.loc["mean"] = summary.mean()
        print(summary.to_string(float_format=lambda v: f"{v:.4f}"))
        return 0


if __name__ == "__main__":
    sys.exit(main())
