"""`python -m pipeline.tools.bench`: the command line of the benchmarks (and of their worker subprocesses)."""
import argparse
import json
import shlex
from pathlib import Path
from typing import List

from pipeline.fsutil import write_text_atomic
from pipeline.tools.bench.harness import MODES, REPO, Bench
from pipeline.tools.bench.measures import STEPS, WORKERS
from pipeline.tools.bench.table import write_tables


def step_names() -> List[str]:
    return [n for n, _, _ in STEPS]


def run_worker_cli(name: str, args_json: str, out: str) -> int:
    """Subprocess side of Bench.run_worker."""
    result = WORKERS[name](**json.loads(args_json))
    write_text_atomic(out, json.dumps(result, indent=2, default=float))
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Benchmarks → OUTPUT/bench/results.json and OUTPUT/bench/benchmarks.md "
                                                 "(--update-docs: also the tables of docs/benchmarks.md and README.md)")
    parser.add_argument("--output", default="output")
    parser.add_argument("--mode", choices=sorted(MODES), default="full")
    parser.add_argument("--steps", default=None,
                        help=f"comma-separated subset of {','.join(step_names())} "
                             "(development; the tables are then left alone)")
    parser.add_argument("--real", default=None, help="real photos in the competition layout (make bench REAL=DIR): "
                                                     "adds the real-photo NE-per-compute step")
    parser.add_argument("--update-docs", action="store_true",
                        help="write the tables into the tracked docs/benchmarks.md and README.md too")
    parser.add_argument("--docs", default=None, help="benchmarks page to write (default OUTPUT/bench/benchmarks.md)")
    parser.add_argument("--readme", default=None)
    parser.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    parser.add_argument("--worker-args", default="{}", help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return run_worker_cli(args.worker, args.worker_args, args.worker_out)
    shown = ["--output", args.output, "--mode", args.mode] + (["--steps", args.steps] if args.steps else []) \
        + (["--real", args.real] if args.real else [])
    steps = [s.strip() for s in args.steps.split(",")] if args.steps else None
    unknown = set(steps or ()) - set(step_names())
    if unknown:
        parser.error(f"unknown step(s) {sorted(unknown)}")
    if args.real and not any(Path(args.real).glob("*/Annotations/*.csv")):
        parser.error(f"--real {args.real}: no */Annotations/*.csv there (the competition layout)")
    bench = Bench(args.output, args.mode, "python -m pipeline.tools.bench " + shlex.join(shown), args.real)
    results = bench.run(STEPS, steps)
    if steps is None:
        docs = Path(args.docs) if args.docs else (REPO / "docs" / "benchmarks.md" if args.update_docs
                                                  else Path(args.output) / "bench" / "benchmarks.md")
        readme = Path(args.readme) if args.readme else (REPO / "README.md" if args.update_docs else None)
        if not docs.exists():
            docs.parent.mkdir(parents=True, exist_ok=True)
            src = REPO / "docs" / "benchmarks.md"
            docs.write_text(src.read_text() if src.exists() else "# Benchmarks\n")
        write_tables(results, docs, readme)
        print(f"bench: tables in {docs}" + ("" if args.update_docs else " (make bench UPDATE_DOCS=1 writes docs/)"))
    else:
        print("bench: --steps given, docs and README tables left alone")
    failed = [k for k, e in results["keys"].items() if e["pass"] is False]
    errors = [k for k, e in results["keys"].items() if e["error"]]
    print(f"bench: {len(results['keys'])} keys, {len(failed)} below goal {failed}, {len(errors)} error(s) {errors}")
    return 0
