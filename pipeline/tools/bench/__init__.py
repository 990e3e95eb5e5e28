"""Benchmarks (DESIGN §5): `make bench` → OUTPUT/bench/results.json and docs/benchmarks.md.

Every key is a ratio (or a rate) measured inside one run, so that a shared,
noisy machine still gives comparable numbers. Keys with a goal:

* ne_ratio_vs_seed      test NE of configs/demo.yaml ÷ that of configs/seed_cpm.yaml,
                        both trained (fold 0 of every category) for the same
                        wall-clock budget, in the same precision (train.precision
                        auto), on the same synthetic data, each predicted with its
                        own TTA/decoding settings by pipeline.stages.predict. Reported
                        only when the seed's test NE is below the mean shape's
                        (test_ne_meanshape); otherwise an error entry: a baseline
                        that learned nothing makes the ratio meaningless;
* train_peak_fraction   training FLOP/s (3 × counted conv forward FLOPs × img/s on
                        in-memory tensors) ÷ a large matmul's FLOP/s, both in the
                        training dtype;
* input_overhead        1 − steps/s with data.train_dataset ÷ steps/s on in-memory tensors;
* tta_time_ratio        predict_images time with flip TTA ÷ without;
* preprocess_speedup    pipeline.stages.preprocess.preprocess img/s ÷ a plain single-process
                        cv2.imread+resize loop, each in a fresh interpreter (the
                        loop in `python -c`, importing cv2 only);
* preprocess_rss_ratio  peak RSS of the preprocess process tree on a 4× data set ÷ on 1×;
* decode_floor_ne       NE of encode→decode of the ground truth (the codec's floor).

Report-only keys (no goal) are listed in table.INFO_KEYS; among them
ne_ratio_vs_meanshape (test NE of the demo ÷ the mean shape's). The NE-per-compute
table (results["heads"]) trains every head of pipeline.models.MODELS with the demo
config at the demo's budget and lists its test NE, train and inference img/s,
GFLOPs per image and parameters.

Package layout: harness.py (modes, subprocesses, timing, results.json, CLI),
measures.py (one step per group of keys, each calling the pipeline's own
functions), table.py (goals, docs/benchmarks.md and the README table).

Layout under OUTPUT/bench/: data/ (synthetic input), work/ (prep + training
runs), scale1x/ scale4x/ (RSS data sets), logs/ (one log per subprocess),
workers/ (their JSON results), results.json (written after every step;
results_steps.json instead when --steps runs a subset).

TensorFlow measurements run in subprocesses (`--worker NAME`; trainings via
`python -m pipeline.stages.train`), so precision policies and thread settings never
leak between configurations, and a crash costs only its own keys: every
failing measurement records an `error` string instead of stopping the bench.
The generated table replaces the text between BENCH_START and BENCH_END in
docs/benchmarks.md and in README.md (README only when it holds the markers).

CLI: python -m pipeline.tools.bench --output DIR --mode quick|full [--steps a,b]  (--steps: a subset, for development)
"""
from __future__ import annotations

from pipeline.tools.bench.cli import main
from pipeline.tools.bench.harness import (
    DEMO_CONFIG,
    MODES,
    REPO,
    SCALE,
    SEED_CONFIG,
    Bench,
    Mode,
    paired_ratio,
    peak_tree_rss,
    run_logged,
    tree_rss,
)
from pipeline.tools.bench.measures import (
    STEPS,
    WORKERS,
    decode_floor,
    model_flops,
    near_heatmap_border,
    seed_ratio,
)
from pipeline.tools.bench.table import (
    BENCH_END,
    BENCH_START,
    GOALS,
    INFO_KEYS,
    format_value,
    goal_text,
    heads_table,
    make_entry,
    passes,
    render_table,
    replace_between_markers,
    write_tables,
)
