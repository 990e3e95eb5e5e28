"""Keypoints of one image with a trained ensemble, printed as JSON.

python -m pipeline.predict_image IMAGE --category dress [--output DIR] [--config C] [--run RUN]
python -m pipeline.predict_image IMAGE --category dress --bundle DIR     (an exported bundle alone)

Every fold model of every member predicts the image with the run's TTA and crop pass; the
predictions are combined as `make ensemble` (and `make stack`, when the run's submission used
the stacker) combine them (pipeline/bundle.py, `Ensemble`), and printed in original pixels,
keypoint name → [x, y, score].
"""
from __future__ import annotations

import json
import sys

from . import hardware
from .bundle import Ensemble
from .config import config_from_args, stage_parser
from .keypoints import CATEGORIES
from .images import ImageError  # stored frame: EXIF orientation ignored


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
