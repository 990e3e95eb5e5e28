"""Tests of the bench helpers (pipeline/tools/bench/): no timing, no training; TensorFlow only to count FLOPs."""
from __future__ import annotations

import json
import math

import cv2
import numpy as np

from pipeline import frames
from pipeline.config import load_config
from pipeline.keypoints import CATEGORIES, NUM_KEYPOINTS, category_indices
from pipeline.tools import bench


def test_goals_and_formatting():
    assert bench.passes(0.5, ("<=", 0.6)) is True
    assert bench.passes(0.7, ("<=", 0.6)) is False
    assert bench.passes(2.0, (">=", 2.0)) is True
    assert bench.passes(float("nan"), (">=", 2.0)) is None
    assert bench.passes(None, ("<=", 1.0)) is None
    assert bench.goal_text(("<=", 0.6)) == "≤ 0.6" and bench.goal_text((">=", 2.0)) == "≥ 2"
    assert bench.format_value(0.00367) == "0.00367"
    assert bench.format_value(12345.6) == "12,346"
    assert bench.format_value(None) == "—"


def test_make_entry():
    ok = bench.make_entry("tta_time_ratio", 1.9, n_images=3)
    assert ok["pass"] is True and ok["goal"] == "≤ 2.05" and ok["detail"] == {"n_images": 3}
    failed = bench.make_entry("preprocess_speedup", error="RuntimeError: boom")
    assert failed["value"] is None and failed["pass"] is None and failed["error"].startswith("RuntimeError")
    info = bench.make_entry("matmul_gflops_fp32", 100.0)
    assert info["goal"] is None and info["pass"] is None


def test_replace_between_markers():
    text = f"intro\n{bench.BENCH_START}\nold\n{bench.BENCH_END}\noutro\n"
    new = bench.replace_between_markers(text, "| a | b |\n")
    assert new == f"intro\n{bench.BENCH_START}\n| a | b |\n{bench.BENCH_END}\noutro\n"
    assert bench.replace_between_markers("no markers", "x") is None
    assert bench.replace_between_markers(f"{bench.BENCH_END} then {bench.BENCH_START}", "x") is None


def _results():
    keys = {"decode_floor_ne": bench.make_entry("decode_floor_ne", 0.001),
            "input_overhead": bench.make_entry("input_overhead", 0.2),
            "preprocess_speedup": bench.make_entry("preprocess_speedup", error="ValueError: a|b"),
            "matmul_gflops_bf16": bench.make_entry("matmul_gflops_bf16", 228.5)}
    meta = {"cpu": "Test CPU", "cores": 2, "tf_version": "2.x", "python": "3.11", "dtype": "mixed_bfloat16",
            "mode": "quick", "budget_s_per_model": 15.0, "date": "2026-01-01 00:00 UTC",
            "command": "python -m pipeline.tools.bench --output o --mode quick", "runtime_s": 90.0}
    return {"meta": meta, "keys": keys}


def test_render_table():
    table = bench.render_table(_results())
    assert "Test CPU, 2 core(s)" in table and "mixed_bfloat16" in table and "`python -m pipeline.tools.bench" in table
    rows = {line.split("|")[1].strip(): line for line in table.splitlines() if line.startswith("| `")}
    assert "pass" in rows["`decode_floor_ne`"] and "FAIL" in rows["`input_overhead`"]
    assert "ERROR" in rows["`preprocess_speedup`"] and "a/b" in rows["`preprocess_speedup`"]
    assert "info" in rows["`matmul_gflops_bf16`"]
    assert list(rows)[:3] == ["`input_overhead`", "`preprocess_speedup`", "`decode_floor_ne`"]  # GOALS order


def test_write_tables(tmp_path):
    docs, readme = tmp_path / "docs" / "benchmarks.md", tmp_path / "README.md"
    readme.write_text(f"# R\n\n{bench.BENCH_START}\nold table\n{bench.BENCH_END}\n\nrest\n")
    bench.write_tables(_results(), docs, readme)
    text = docs.read_text()
    assert bench.BENCH_START in text and "`decode_floor_ne`" in text
    new_readme = readme.read_text()
    assert new_readme.startswith("# R\n") and new_readme.endswith("\n\nrest\n") and "old table" not in new_readme
    docs.write_text(f"hand-written\n{bench.BENCH_START}\n{bench.BENCH_END}\n")  # only the block is replaced
    readme.write_text("no markers here\n")
    bench.write_tables(_results(), docs, readme)
    assert docs.read_text().startswith("hand-written\n") and "`input_overhead`" in docs.read_text()
    assert readme.read_text() == "no markers here\n"


def test_decode_floor_is_small_for_interior_points():
    cfg = load_config(bench.DEMO_CONFIG)
    rng = np.random.default_rng(0)
    n = 20
    categories = np.array([CATEGORIES[i % len(CATEGORIES)] for i in range(n)], dtype=object)
    keypoints = np.full((n, NUM_KEYPOINTS, 3), -1, np.int64)
    params = np.stack([frames.letterbox_params(512, 400, cfg.model.input_size)] * n)
    for i, cat in enumerate(categories):
        for k in category_indices(cat):
            keypoints[i, k] = (rng.integers(60, 450), rng.integers(60, 340), 1)
    dark = bench.decode_floor(keypoints, params, categories, cfg, refine="dark")
    argmax = bench.decode_floor(keypoints, params, categories, cfg, refine="none")
    assert math.isfinite(dark) and dark < 0.003 < argmax


def test_image_files_plain_loop_and_rss(tmp_path):
    for split in ("train", "test"):
        path = tmp_path / split / "Images" / "blouse" / "a.jpg"
        path.parent.mkdir(parents=True)
        cv2.imwrite(str(path), np.full((40, 30, 3), 128, np.uint8))
    from pipeline.tools.rehearse import image_files, plain_loop_fresh

    files = image_files(tmp_path)
    assert [f.parts[-4] for f in files] == ["test", "train"]
    fresh = plain_loop_fresh(tmp_path, 16)[0]
    assert fresh["n"] == 2 and fresh["seconds"] >= 0
    assert fresh["foreign_modules"] == []  # the baseline loop ran without sklearn/TF/the pipeline loaded
    import psutil

    rss, nonshared = bench.tree_rss(psutil.Process())
    assert rss > 0 and 0 <= nonshared <= rss


def test_near_heatmap_border():
    cfg = load_config(bench.DEMO_CONFIG)
    size = cfg.model.input_size
    params = frames.letterbox_params(size, size, size)[None]  # identity: original = input pixels
    kps = np.full((1, NUM_KEYPOINTS, 3), -1, np.int64)
    kps[0, 0] = (0, size // 2, 1)            # at the left edge
    kps[0, 1] = (size // 2, size // 2, 1)    # centre
    kps[0, 2] = (size // 2, size - 1, 1)     # at the bottom edge
    near = bench.near_heatmap_border(kps, params, cfg)
    assert near.shape == (1, NUM_KEYPOINTS) and near[0, :3].tolist() == [True, False, True]


def test_failing_step_records_errors_and_saves(tmp_path):
    b = bench.Bench(tmp_path, "quick", "python -m pipeline.tools.bench --output x --mode quick")

    def broken():
        b.record("tta_time_ratio", 1.5)
        raise RuntimeError("worker died")

    b.run_step(1, 1, "tta", ("tta_time_ratio", "inference_img_per_s_plain"), broken)
    keys = json.loads((tmp_path / "bench" / "results.json").read_text())["keys"]
    assert keys["tta_time_ratio"]["pass"] is True
    assert keys["inference_img_per_s_plain"]["error"] == "RuntimeError: worker died"


def test_paired_ratio():
    assert bench.paired_ratio([2.0, 4.0, 100.0], [1.0, 2.0, 10.0]) == 2.0  # median of 2, 2, 10
    assert bench.paired_ratio([3.0, None], [1.0, 2.0]) == 3.0
    try:
        bench.paired_ratio([None], [1.0])
    except ValueError:
        pass
    else:
        raise AssertionError("no pair must raise")


def test_seed_ratio_only_when_the_seed_beats_the_mean_shape():
    ratio, error = bench.seed_ratio(0.05, 0.10, 0.50)
    assert ratio == 0.5 and error is None
    ratio, error = bench.seed_ratio(0.05, 0.88, 0.53)
    assert ratio is None and "0.8800" in error and "0.5300" in error and "mean shape" in error
    assert bench.seed_ratio(0.05, float("nan"), 0.5)[0] is None
    entry = bench.make_entry("ne_ratio_vs_seed", None, error=error)
    assert entry["value"] is None and entry["pass"] is None and entry["error"].startswith("void")


def test_heads_table_lists_every_head_and_errors():
    results = _results()
    results["heads"] = {"cpm": {"test_ne": 0.1, "train_img_per_s": 50.0, "inference_img_per_s": 300.0,
                                "gflops_per_image": 1.25, "params": 300000, "budget": "60 s"},
                        "broken": {"error": "ValueError: a|b"}}
    table = bench.render_table(results)
    rows = [line for line in table.splitlines() if line.startswith("| `cpm`") or line.startswith("| `broken`")]
    assert len(rows) == 2 and "1.25" in rows[0] and "300,000" in rows[0] and "a/b" in rows[1]


def test_model_flops_counts_conv_transpose_and_dense():
    import keras

    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same")(inputs)                   # 2·9·3·4·64 = 13824
    x = keras.layers.Conv2DTranspose(2, 2, strides=2)(x)                    # 2·4·4·2·64 = 4096
    x = keras.layers.Dense(5)(x)                                            # 2·2·5·256 = 5120
    model = keras.Model(inputs, x)
    assert bench.model_flops(model) == 13824 + 4096 + 5120


def test_every_registered_head_gets_a_row(monkeypatch, tmp_path):
    """The heads step iterates over the registry: a head added later appears without editing the bench."""
    from pipeline import models
    from pipeline.tools.bench import measures

    monkeypatch.setitem(models.MODELS, "fake_head", models.MODELS["cpm"])
    b = bench.Bench(tmp_path, "quick", "cmd")
    trained = []
    monkeypatch.setattr(b, "train_one", lambda config, run, cat, extra=(), **kw: trained.append(extra) or
                        {"img_per_s": 10.0, "epochs": 1, "precision": "float32"})
    monkeypatch.setattr(measures, "evaluate", lambda *a, **kw: {
        "ne": 0.2, "per_category": {}, "inference_img_per_s": 5.0, "gflops_per_image": 1.0, "params": 7,
        "flip_tta": True})
    measures.step_heads(b)
    assert set(b.results["heads"]) == set(models.MODELS) and ["model.name=fake_head"] in trained
    assert b.results["heads"]["fake_head"]["test_ne"] == 0.2
    assert b.results["keys"]["heads_measured"]["value"] == len(models.MODELS)


def test_input_step_records_full_config_throughput(tmp_path):
    """The input step measures the full config's input pipeline (host and device targets) through
    pipeline.tools.throughput, and records per-core and all-core img/s."""
    b = bench.Bench(tmp_path, "quick", "test")
    calls = []

    def fake_worker(name, timeout, tag="", **kwargs):
        calls.append((name, tag, kwargs["targets"]))
        from pipeline.tools.bench.measures import worker_input
        return worker_input(kwargs["config"], kwargs["targets"], seconds=0.2)

    b.run_worker = fake_worker
    from pipeline.tools.bench import measures
    measures.step_input(b)
    assert [c[1] for c in calls] == ["device", "host"]
    entries = b.results["keys"]
    for key in ("input_img_per_s_per_core", "input_img_per_s_all_cores"):
        assert entries[key]["value"] > 0 and entries[key]["detail"]["input_size"] == 384
    assert entries["input_img_per_s_per_core_host_targets"]["detail"]["targets"] == "host"


def test_real_photo_step_runs_only_with_real_data_and_trains_the_real_config(monkeypatch, tmp_path):
    """Without REAL= the step records nothing; with it every head trains configs/real_cpu.yaml's
    models (one joint model) on that directory and gets a row of the real-photo table."""
    from pipeline import models
    from pipeline.tools.bench import measures

    b = bench.Bench(tmp_path, "quick", "cmd")
    measures.step_real_heads(b)
    assert b.results["real_heads"] == {} and b.results["keys"] == {}
    real = tmp_path / "real"
    (real / "test").mkdir(parents=True)
    (real / "test" / "answers.csv").write_text("image_id\n")
    b = bench.Bench(tmp_path, "quick", "cmd", real=real)
    calls = []
    monkeypatch.setattr(b, "train_one", lambda config, run, model, extra=(), **kw: calls.append(
        (config.name, model, kw["input_dir"], kw["budget"])) or {"img_per_s": 3.0, "epochs": 2})
    monkeypatch.setattr(measures, "evaluate", lambda *a, **kw: {
        "ne": 0.3, "per_category": {}, "inference_img_per_s": 5.0, "gflops_per_image": 1.0, "params": 7})
    measures.step_real_heads(b)
    assert set(b.results["real_heads"]) == set(models.MODELS)
    assert {c[0] for c in calls} == {"real_cpu.yaml"} and {c[1] for c in calls} == {"joint"}
    assert {c[2] for c in calls} == {real} and {c[3] for c in calls} == {b.mode.real_budget_s}
    table = bench.render_table({**_results(), "real_heads": b.results["real_heads"]})
    assert "Real photos" in table and table.count("| 0.3 |") == len(models.MODELS)
