"""Procedural synthetic FashionAI dataset, written in the real competition layout.

With no real data in `input/`, this is the default data set and the test bed
of the pipeline. Most images show a drawn figure (head, hair, neck, arms and
hands, legs and feet, in varied poses) wearing the labelled garment, often
with a garment of another category (a top above a skirt, trousers under a
blouse, a jacket open over a dress); the rest are flat-lay and hanger shots.
Garments have soft edges, shading and folds; framings range from close crops
to full-body shots; JPEG quality varies.

Keypoint layouts, absence patterns, occlusion rates, framing and image sizes
follow a model fitted on real annotation rows and photos (`real_model.json`,
small fitted numbers only, written by `fit_real`).

Modules: `figure` (skeleton, poses, body polygons), `geometry` (garment
keypoints and outlines from parameters and a skeleton), `texture` (fabric
patterns, shading, folds, backdrops), `real_model` (the fitted model and its
draws), `fit_real` (fitting it), `render` (scene, layout, warp, drawing,
visibility), `dataset` (files, real-data guard, realism figures and the
comparison with a real CSV), `preview` (contact sheet), `__main__` (CLI).

CLI: python -m pipeline.synth --out DIR --train-per-cat N --test-per-cat M --seed S
     [--warm-per-cat W] [--jobs J] [--real-ann REAL.csv]
"""
from pipeline.tools.synth.cli import main
from pipeline.tools.synth.dataset import (
           GENERATOR_VERSION,
           MARKER,
           REALISM,
           SPLITS,
           TEST_LIST,
           check_not_real,
           compare,
           generate,
           image_name,
           image_rng,
           image_size,
           keypoint_box_fraction,
           real_stats,
           realism_stats,
)
from pipeline.tools.synth.render import Sample, render_sample

__all__ = ["GENERATOR_VERSION", "MARKER", "REALISM", "SPLITS", "TEST_LIST", "Sample",
           "check_not_real", "compare", "generate", "image_name", "image_rng", "image_size",
           "keypoint_box_fraction", "main", "real_stats", "realism_stats", "render_sample"]
