"""`export` stage: command line → one library call.

CLI: python -m pipeline.stages.export --output DIR --run RUN          (make export RUN=<run>)
     python -m pipeline.stages.export --images DIR [--bundle DIR | --output DIR --run RUN] [--category C]
                                      [--out CSV]                       (make predict-dir)
"""
from __future__ import annotations

import sys

from pipeline.keypoints import CATEGORIES
from pipeline.release.bundle import Ensemble, export_run, predict_folder
from pipeline.store.layout import export_dir, predict_dir_csv


def main(argv=None) -> int:
    import argparse

    from pipeline import hardware

    parser = argparse.ArgumentParser(description="Export a run as a bundle, or predict a folder from one.")
    parser.add_argument("--output", default="output")
    parser.add_argument("--run", help="run (or ensemble) to export")
    parser.add_argument("--keras-only", action="store_true", help="skip the TFLite and ONNX files")
    parser.add_argument("--bundle", help="predict with this bundle directory (default: RUN's export)")
    parser.add_argument("--images", help="folder of images to predict with the bundle")
    parser.add_argument("--category", choices=CATEGORIES, help="category of every image of --images")
    parser.add_argument("--out", help="CSV to write (default OUTPUT/predict_dir/<bundle>.csv)")
    args = parser.parse_args(argv)
    from pipeline.prep.images import ImageError

    try:
        if args.images or args.bundle:
            if not args.images or not (args.bundle or args.run):
                parser.error("predicting needs --images DIR and --bundle DIR (or --run RUN: its export)")
            bundle = args.bundle or export_dir(args.output, args.run)
            args.out = args.out or predict_dir_csv(args.output, bundle)
            ensemble = Ensemble.load(bundle)
            hardware.setup_inference(ensemble.members[0].cfg)
            n = predict_folder(ensemble, args.images, args.out, args.category)
            print(f"predict-dir: {n} image(s) → {args.out} ({ensemble.network_count()} network(s) of "
                  f"bundle {ensemble.name!r})")
            return 0
        if not args.run:
            parser.error("give --run RUN to export, or --bundle DIR to predict")
        directory = export_run(args.output, args.run, other_runtimes=not args.keras_only)
        size = sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())
        print(f"export: {directory} ({size / 1e6:.1f} MB) and {directory}.tar.gz; "
              f"MODEL_CARD.md says what it is")
        return 0
    except (FileNotFoundError, ValueError, ImageError) as err:
        print(f"bundle: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
