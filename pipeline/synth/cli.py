"""CLI of the synthetic data set (run as `python -m pipeline.synth`):

    python -m pipeline.synth --out DIR --train-per-cat N --test-per-cat M --seed S
        [--warm-per-cat W] [--jobs J] [--no-progress]

Prints a JSON summary (parameters, images per split, seconds, realism figures);
exit 2 with a one-line error when the directory holds real data or a count is bad.
"""
from __future__ import annotations

import argparse
import json
import sys


def main(argv=None) -> int:
    from .dataset import generate

    parser = argparse.ArgumentParser(prog="python -m pipeline.synth",
                                     description="Write the synthetic FashionAI data set.")
    parser.add_argument("--out", required=True, help="output directory (e.g. input)")
    parser.add_argument("--train-per-cat", type=int, required=True)
    parser.add_argument("--test-per-cat", type=int, required=True)
    parser.add_argument("--warm-per-cat", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=-1, help="parallel jobs (-1: all cores)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    try:
        summary = generate(args.out, args.train_per_cat, args.test_per_cat, args.seed,
                           args.warm_per_cat, args.jobs, not args.no_progress)
    except (RuntimeError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=1, sort_keys=True))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
