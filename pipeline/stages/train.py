"""`train` stage: command line → one library call.
"""
from __future__ import annotations

import sys

from pipeline import distributed, hardware, joint
from pipeline.config import config_from_args, recording, stage_parser
from pipeline.fit.trainer import train


def main(argv=None) -> int:
    parser = stage_parser("Train one model (config model.name) for one category and fold.")
    parser.add_argument("--category", help="model to train: a category, or `joint` (the default of a joint config)")
    parser.add_argument("--fold", type=int, required=True)
    parser.add_argument("--force", action="store_true", help="discard previous state and retrain")
    args = parser.parse_args(argv)
    cfg = config_from_args(args)
    with recording("train"):  # every setting read must be one its stamps cover
        models = joint.model_names(cfg)
        if args.category is None:
            if len(models) != 1:
                parser.error(f"give the model to train: CAT=<one of {', '.join(models)}>")
            args.category = models[0]
        if args.category not in models:
            hint = " (train.joint: one model for every category)" if cfg.train.joint else ""
            parser.error(f"--category must be one of {', '.join(models)}{hint}")
        if args.fold not in cfg.fold_ids:
            which = "" if cfg.fold_ids == tuple(range(cfg.data.folds)) else \
                f" (data.fold_models={cfg.data.fold_models} of data.folds={cfg.data.folds})"
            parser.error(f"--fold must be in 0..{len(cfg.fold_ids) - 1}{which}")
        try:
            gpu = distributed.claim_gpu(cfg.for_category(args.category).train.distribute, hardware.parallel_jobs())
            if gpu is not None:
                print(f"train: {args.category} fold {args.fold} on GPU {gpu} (CUDA_VISIBLE_DEVICES, make -j slot)")
            train(args.output, cfg, args.run or cfg.name, args.category, args.fold, args.force)
        except FloatingPointError as err:
            print(err, file=sys.stderr)
            return 3
        except (RuntimeError, FileNotFoundError, ValueError) as err:
            print(f"train: error: {err}", file=sys.stderr)
            return 1
        return 0


if __name__ == "__main__":
    sys.exit(main())
