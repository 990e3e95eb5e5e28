"""`submit` stage: command line → one library call.

CLI:
  python -m pipeline.submit --validate FILE --test INPUT/test/test.csv
  python -m pipeline.submit --output DIR [--config C] [--run RUN]   (write OUTPUT/submission.csv)
"""
from __future__ import annotations

import sys

from pipeline.config import config_from_args, recording, stage_parser
from pipeline.scoring.submission import check_submission, publish, submit_run
from pipeline.store.layout import run_file, submission_path
from pipeline.store.locks import stage_lock


def main(argv=None) -> int:
    parser = stage_parser("Write or validate a Tianchi submission.")
    parser.add_argument("--validate", metavar="FILE", help="validate FILE and exit")
    parser.add_argument("--test", metavar="TEST_CSV", help="test.csv the submission answers")
    args = parser.parse_args(argv)
    if args.validate:
        if not args.test:
            parser.error("--validate needs --test INPUT/test/test.csv")
        check = check_submission(args.validate, args.test)
        for line in check.lines():  # errors: stdout, at most SHOW_FIRST of each kind
            print(line)
        for line in check.warning_lines():  # warnings: stderr, one summary line per kind
            print(line, file=sys.stderr)
        n_err, n_warn = len(check.error_lines), len(check.warnings)
        verdict = f"{n_err} error(s): the platform would refuse it" if n_err else "valid"
        print(f"{args.validate}: {verdict}" + (f" ({n_warn} kind(s) of warning)" if n_warn else ""),
              file=sys.stderr)
        return 1 if n_err else 0

    from pipeline.joint import baseline_name
    from pipeline.store.layout import run_dir

    cfg = config_from_args(args)
    with stage_lock(args.output, cfg.ensemble_target(args.run or cfg.name)[0], "submit"), recording("submit"):  # every setting read must be one its stamps cover
        name, _ = cfg.ensemble_target(args.run or cfg.name)
        fallback = cfg.submit.fallback or baseline_name(cfg)
        try:
            record = submit_run(args.output, name, cfg.data.categories, fallback, cfg.submit.max_models)
        except (ValueError, FileNotFoundError) as err:
            print(f"submit: error: {err}", file=sys.stderr)
            return 1
        source = run_file(args.output, name, "submission")
        out = submission_path(args.output)
        publish(source, out)
        plan = record["plan"]
        parts = [f"{run}{' + stacker' if record['inputs']['runs'][run]['use_stack'] else ''}: {', '.join(cats)}"
                 for run, cats in plan.items() if cats]
        print(f"submit: {out} = {source} ({record['n_rows']} rows, validated, {record['models']} trained "
              f"network(s)); predictions of " + "; ".join(parts))
        if len(plan) > 1:
            print(f"submit: run {name!r} covers only {', '.join(plan[name])}; the other categories come from "
                  f"the fallback run {list(plan)[1]!r} (recorded in {run_dir(args.output, name) / 'submit.json'})")
        return 0


if __name__ == "__main__":
    sys.exit(main())
