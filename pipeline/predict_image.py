"""Keypoints of one image with the trained fold ensemble, printed as JSON.

python -m pipeline.predict_image IMAGE --category dress [--output DIR] [--config C] [--run RUN]

Every fold model of the run predicts the image with flip TTA; the fold
predictions are averaged (as `make ensemble` does) and printed in original
pixels, keypoint name → [x, y, score].
"""
from __future__ import annotations

import json
import sys

import numpy as np

from . import hardware
from .config import config_from_args, stage_parser
from . import joint
from .keypoints import CATEGORIES, CATEGORY_KEYPOINTS
from .predict import load_model, predict_category
from .predictions import fold_dir
from .images import ImageError, load_letterboxed  # stored frame: EXIF orientation ignored


def predict_one(image_path, category: str, output, cfg, run: str) -> dict:
    """{keypoint name: [x, y, score]} in original pixels, averaged over the run's folds."""
    cfg = cfg.for_category(category)
    image, width, height, params = load_letterboxed(image_path, cfg.cache_size, cfg.model.margin)
    xys, scores = [], []
    for f in range(cfg.data.folds):
        name = joint.model_for(cfg, category)
        model = load_model(fold_dir(output, run, name, f) / "model.keras")
        pred = predict_category(model, name, category, image[None], params[None], np.array([[width, height]]), cfg)
        xys.append(pred["xy"][0])
        scores.append(pred["score"][0])
    xy, score = np.mean(xys, 0), np.mean(scores, 0)
    xy[:, 0] = np.clip(xy[:, 0], 0, width - 1)
    xy[:, 1] = np.clip(xy[:, 1], 0, height - 1)
    return {"image": str(image_path), "category": category, "width": width, "height": height,
            "keypoints": {n: [round(float(p[0]), 2), round(float(p[1]), 2), round(float(s), 4)]
                          for n, p, s in zip(CATEGORY_KEYPOINTS[category], xy, score)}}


def main(argv=None) -> int:
    parser = stage_parser("Predict the keypoints of one image.")
    parser.add_argument("image")
    parser.add_argument("--category", required=True, choices=CATEGORIES)
    args = parser.parse_args(argv)
    cfg = config_from_args(args)
    hardware.setup_inference(cfg)
    try:
        result = predict_one(args.image, args.category, args.output, cfg, args.run or cfg.name)
    except (ImageError, FileNotFoundError) as err:
        print(f"predict_image: error: {args.image}: {err}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
