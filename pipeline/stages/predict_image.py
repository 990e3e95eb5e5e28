"""`predict_image` stage: command line → one library call.

python -m pipeline.stages.predict_image IMAGE --category dress [--output DIR] [--config C] [--run RUN]
python -m pipeline.stages.predict_image IMAGE --category dress --bundle DIR     (an exported bundle alone)
"""
from __future__ import annotations

import json
import sys

from pipeline import hardware
from pipeline.config import config_from_args, stage_parser
from pipeline.keypoints import CATEGORIES
from pipeline.prep.images import ImageError  # stored frame: EXIF orientation ignored
from pipeline.release.bundle import Ensemble


def main(argv=None) -> int:
    parser = stage_parser("Predict the keypoints of one image.")
    parser.add_argument("image")
    parser.add_argument("--category", required=True, choices=CATEGORIES)
    parser.add_argument("--bundle", help="an exported bundle (make export): OUTPUT and --config are not read")
    args = parser.parse_args(argv)
    try:
        if args.bundle:
            ensemble = Ensemble.load(args.bundle)
            hardware.setup_inference(ensemble.members[0].cfg)
        else:
            cfg = config_from_args(args)
            hardware.setup_inference(cfg)
            ensemble = Ensemble.from_output(args.output, args.run or cfg.name, cfg)
        result = ensemble.predict_image(args.image, args.category)
    except (ImageError, FileNotFoundError, ValueError) as err:
        print(f"predict_image: error: {args.image}: {err}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
