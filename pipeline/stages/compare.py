"""`compare` stage: command line → one library call.

`make compare A=run1 B=run2` (`python -m pipeline.stages.compare --output DIR A B`).
"""
from __future__ import annotations

import argparse
import sys

from pipeline.scoring.compare import compare_runs, format_rows, unpaired


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Where run B wins or loses against run A (paired bootstrap).")
    parser.add_argument("--output", default="output")
    parser.add_argument("a", help="run name A (the reference; `name+stack` for stacked predictions)")
    parser.add_argument("b", help="run name B")
    args = parser.parse_args(argv)
    try:
        result = compare_runs(args.output, args.a, args.b)
    except (FileNotFoundError, ValueError) as err:
        print(f"compare: error: {err}", file=sys.stderr)
        return 1
    if not result:
        print(f"compare: {args.a} and {args.b} share no scored split", file=sys.stderr)
        return 1
    for split, rows in result.items():
        label = "CV (out-of-fold)" if split == "cv" else "test"
        print(f"{label}: B={args.b} vs A={args.a}; B - A < 0 means B is better")
        only_a, only_b = unpaired(args.output, args.a, args.b, split)
        if only_a or only_b:
            print(f"  note: paired over the images both scored; left out: {only_a} scored only in A, "
                  f"{only_b} only in B")
        print(format_rows(rows))
        wins = sum(r["verdict"] == "B better" for r in rows if r["keypoint"] != "all")
        losses = sum(r["verdict"] == "B worse" for r in rows if r["keypoint"] != "all")
        ties = sum(r["verdict"] == "~" for r in rows if r["keypoint"] != "all")
        print(f"  keypoints: B significantly better on {wins}, worse on {losses}, within noise on {ties}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
