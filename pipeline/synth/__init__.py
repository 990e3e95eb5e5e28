"""Procedural synthetic FashionAI dataset, written in the real competition layout.

With no real data in `input/`, this is the default data set and the test bed
of the pipeline. Most images show a drawn figure (head, hair, neck, arms and
hands, legs and feet, in varied poses) wearing the labelled garment, often
with a garment of another category (a top above a skirt, trousers under a
blouse, a jacket open over a dress); the rest are flat-lay and hanger shots.
Garments have soft edges, shading and folds; framings range from close crops
to full-body shots; JPEG quality varies.

Modules: `figure` (skeleton, poses, body polygons), `geometry` (garment
keypoints and outlines from parameters and a skeleton), `texture` (fabric
patterns, shading, folds, backdrops), `render` (scene, framing, drawing,
visibility), `dataset` (files, real-data guard, realism
figures), `preview` (contact sheet), `__main__` (CLI).

CLI: python -m pipeline.synth --out DIR --train-per-cat N --test-per-cat M --seed S
     [--warm-per-cat W] [--jobs J]
"""
from .dataset import (GENERATOR_VERSION, MARKER, REALISM, SPLITS, TEST_LIST, check_not_real,
                      generate, image_name, image_rng, image_size, keypoint_box_fraction,
                      realism_stats)
from .render import Sample, render_sample
from .cli import main

__all__ = ["GENERATOR_VERSION", "MARKER", "REALISM", "SPLITS", "TEST_LIST", "Sample",
           "check_not_real", "generate", "image_name", "image_rng", "image_size",
           "keypoint_box_fraction", "main", "realism_stats", "render_sample"]
