"""CLI of the synthetic data set (run as `python -m pipeline.synth`):

    python -m pipeline.synth --out DIR --train-per-cat N --test-per-cat M --seed S
        [--warm-per-cat W] [--jobs J] [--no-progress] [--real-ann REAL.csv]

--real-ann: a real annotation CSV (official format); realism.json then also holds its
figures, computed from it now, and the comparison (`vs_real`), printed as a table on stderr.
Prints a JSON summary (parameters, images per split, seconds, realism figures);
exit 2 with a one-line error when the directory holds real data or a count is bad.
"""
from __future__ import annotations

import argparse
import json
import sys


def main(argv=None) -> int:
    from pipeline.tools.synth.dataset import comparison_lines, generate

    parser = argparse.ArgumentParser(prog="python -m pipeline.synth",
                                     description="Write the synthetic FashionAI data set.")
    parser.add_argument("--out", "--output", dest="out", required=True,
                        help="directory the dataset is written into (make's INPUT; --output is the same)")
    parser.add_argument("--train-per-cat", type=int, required=True)
    parser.add_argument("--test-per-cat", type=int, required=True)
    parser.add_argument("--warm-per-cat", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=-1, help="parallel jobs (-1: all cores)")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--real-ann", default=None,
                        help="real annotation CSV to compare realism.json's figures with")
    args = parser.parse_args(argv)
    try:
        summary = generate(args.out, args.train_per_cat, args.test_per_cat, args.seed,
                           args.warm_per_cat, args.jobs, not args.no_progress, args.real_ann)
    except (RuntimeError, ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=1, sort_keys=True))
    if args.real_ann:
        print("\n".join(["synthetic vs real (" + args.real_ann + "):"]
                        + comparison_lines(summary["realism"]["vs_real"])), file=sys.stderr)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
