"""The competitor's loop through make, on tiny data: a second config beside the first, an edit,
a kill, a rerun — nothing stale is used, nothing current is redone or rewritten.

Config A covers dress and skirt at 64 px with 2 folds; config B covers skirt at 96 px with
3 folds; config A2 is A's skirt at 96 px (same folds), ensembled with A across input sizes.
"""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import REPO

from pipeline.config import load_config
from pipeline.tools import synth

DEMO_MARGIN = load_config(REPO / "configs" / "demo.yaml").model.margin  # the caches' names carry it

COMMON = """
train: {batch_size: 4, epochs: 1, steps_per_epoch: 2, threads: 1, time_budget_s: 0}
predict: {batch_size: 8}
stack: {mode: "off"}
"""
CONFIGS = {
    "a": "data: {folds: 2, categories: [dress, skirt]}\nmodel: {input_size: 64, width: 16, stages: 2}\n",
    "b": "data: {folds: 3, categories: [skirt]}\nmodel: {input_size: 96, width: 16, stages: 2}\n",
    "a2": "data: {folds: 2, categories: [skirt]}\nmodel: {input_size: 96, width: 16, stages: 2}\n",
    "blend": "data: {folds: 2, categories: [skirt]}\nmodel: {input_size: 64, width: 16, stages: 2}\n"
             "ensemble: {name: blend, members: [a, a2]}\n",
}


def make(env, config: str, *targets: str, extra=()):
    cmd = ["make", "-j2", "--no-print-directory", "-o", ".venv/.installed", f"INPUT={env['input']}",
           f"OUTPUT={env['output']}", f"CONFIG={env['configs'][config]}", *extra, *targets]
    res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True,
                         env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return res.stdout + res.stderr


def snapshot(root: Path):
    """{path: (mtime_ns, sha1)} of every file under root."""
    return {p: (p.stat().st_mtime_ns, hashlib.sha1(p.read_bytes()).hexdigest())
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def loop(tmp_path_factory):
    root = tmp_path_factory.mktemp("loop")
    synth.generate(root / "input", train_per_cat=6, test_per_cat=2, seed=5, jobs=1, progress=False)
    configs = {}
    for name, body in CONFIGS.items():
        path = root / f"{name}.yaml"
        path.write_text(f"base: {REPO / 'configs' / 'demo.yaml'}\n{body}{COMMON}")
        configs[name] = path
    env = {"input": root / "input", "output": root / "output", "configs": configs}
    make(env, "a", "_baseline")
    make(env, "a", "_submit", "_score")
    out = env["output"]
    env["a_submission"] = (out / "runs/a/submission.csv").read_bytes()
    env["a_board"] = pd.read_csv(out / "leaderboard.csv").set_index("name").loc["a"]
    env["a_files"] = snapshot(out / "runs" / "a")
    make(env, "b", "_baseline")
    make(env, "b", "_submit", "_score")
    env["after_b_published"] = (out / "submission.csv").read_bytes()
    env["a_again_log"] = make(env, "a", "_submit", "_score")
    return env


def test_second_config_leaves_the_first_intact(loop):
    out = loop["output"]
    assert loop["after_b_published"] == (out / "runs/b/submission.csv").read_bytes()
    assert loop["after_b_published"] != loop["a_submission"]
    # A again: its submission is byte-identical and published again; nothing of A retrained or rewritten
    assert (out / "runs/a/submission.csv").read_bytes() == loop["a_submission"]
    assert (out / "submission.csv").read_bytes() == loop["a_submission"]
    assert "pipeline.stages.train" not in loop["a_again_log"] and "pipeline.stages.predict" not in loop["a_again_log"]
    assert snapshot(out / "runs" / "a") == loop["a_files"]
    board = pd.read_csv(out / "leaderboard.csv").set_index("name")
    assert board.loc["a", "test_ne"] == loop["a_board"]["test_ne"] and board.loc["a", "cv_ne"] == loop["a_board"]["cv_ne"]
    assert board.loc["a", "categories"] == "dress+skirt" and board.loc["b", "categories"] == "skirt"
    # B's 3 folds and 96 px sit beside A's 2 folds and 64 px in one dataset directory
    (ds,) = (out / "prep").glob("ds-*")
    assert {p.name for p in (ds / "folds").iterdir()} == {"k2_seed42.csv", "k3_seed42.csv"}
    assert {p.name for p in (ds / "cache").iterdir()} == {f"s64_m{DEMO_MARGIN}", f"s96_m{DEMO_MARGIN}"}


def test_subset_submission_takes_the_other_categories_from_the_fallback(loop):
    out = loop["output"]
    record = json.loads((out / "runs/a/submit.json").read_text())
    assert record["plan"] == {"a": ["dress", "skirt"], "meanshape_k2_seed42": ["blouse", "outwear", "trousers"]}
    sub = pd.read_csv(out / "runs/a/submission.csv")
    test = pd.read_csv(loop["input"] / "test" / "test.csv")
    assert list(sub["image_id"]) == list(test["image_id"])  # every row of test.csv
    fallback = pd.read_csv(out / "runs/meanshape_k2_seed42/blouse/test.csv").set_index("image_id")
    row = sub[sub.image_category == "blouse"].iloc[0]
    x, y, v = map(int, row["neckline_left"].split("_"))
    assert (x, y) == tuple(np.rint(fallback.loc[row["image_id"], ["neckline_left_x", "neckline_left_y"]]).astype(int))


def test_noop_submit_rewrites_nothing_and_plans_nothing(loop):
    out = loop["output"]
    before = snapshot(out)
    log = make(loop, "a", "_submit", "_score")
    assert "pipeline." not in log
    assert snapshot(out) == before
    plan = make(loop, "a", "_submit", extra=["-n"])
    assert "pipeline." not in plan and "Nothing to be done" in plan


def test_decoding_edit_repredicts_without_retraining(loop):
    out = loop["output"]
    models = {p: p.stat().st_mtime_ns for p in (out / "runs/a").glob("*/fold*/model.keras")}
    plan = make(loop, "a", "_score", extra=["-n", "SET=codec.refine=none"])
    assert "pipeline.stages.predict" in plan and "pipeline.stages.train" not in plan and "pipeline.stages.score" in plan
    before = pd.read_csv(out / "runs/a/dress/oof.csv")
    log = make(loop, "a", "_submit", "_score", extra=["SET=codec.refine=none"])
    assert "pipeline.stages.train" not in log
    assert {p: p.stat().st_mtime_ns for p in models} == models
    after = pd.read_csv(out / "runs/a/dress/oof.csv")
    assert not np.allclose(before.filter(like="_x").to_numpy(), after.filter(like="_x").to_numpy())
    inputs = json.loads((out / "runs/a/dress/fold0/predict.json").read_text())["inputs"]
    assert inputs["settings"]["codec"]["refine"] == "none"
    # a setting no stage depends on changes nothing
    before = snapshot(out / "runs" / "a")
    log = make(loop, "a", "_submit", extra=["SET=codec.refine=none predict.batch_size=4 train.threads=2"])
    assert "pipeline." not in log and snapshot(out / "runs" / "a") == before


def test_ensemble_across_input_sizes(loop):
    out = loop["output"]
    make(loop, "a2", "_predict")
    make(loop, "blend", "_ensemble")
    ids, parts = None, []
    for run in ("a", "a2"):
        frames = [np.load(out / f"runs/{run}/skirt/fold{f}/oof.npz", allow_pickle=True) for f in (0, 1)]
        xy = pd.Series(list(np.concatenate([f["xy"] for f in frames])),
                       index=np.concatenate([f["image_id"] for f in frames]))
        parts.append(xy)
    blend = pd.read_csv(out / "runs/blend/skirt/oof.csv").set_index("image_id")
    expected = np.stack([(parts[0][i] + parts[1][i]) / 2 for i in blend.index])
    got = np.stack([blend[[c for c in blend.columns if c.endswith(s)]].to_numpy() for s in ("_x", "_y")], -1)
    np.testing.assert_allclose(got, expected, atol=2e-3)  # CSVs hold 3 decimals
    # members with other fold assignments are refused, naming both
    from pipeline.combine.average import run_ensemble

    with pytest.raises(ValueError, match="folds k=3.*folds k=2|folds k=2.*folds k=3"):
        run_ensemble(out, "mixed", ["a", "b"], ["skirt"])


def _kill_when(cmd, env, ready, timeout=120):
    """Start cmd, SIGKILL it once ready() is true; returns whether it was killed before finishing."""
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    start = time.time()
    while proc.poll() is None and time.time() - start < timeout:
        if ready():
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.01)
    proc.wait()
    return False


def test_killed_preprocess_reruns_to_identical_outputs(loop, tmp_path):
    args = [sys.executable, "-m", "pipeline.stages.preprocess", "--input", str(loop["input"]), "--config",
            str(loop["configs"]["a"]), "--set", "data.jobs=1", "--run", "a"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    subprocess.run(args + ["--output", str(tmp_path / "calm")], cwd=REPO, env=env, check=True, capture_output=True)
    killed = tmp_path / "killed"
    hit = _kill_when(args + ["--output", str(killed)], env,
                     lambda: any(killed.glob(f"prep/ds-*/cache/s64_m{DEMO_MARGIN}/.*.tmp*")))
    assert hit, "preprocess finished before it could be killed"
    subprocess.run(args + ["--output", str(killed)], cwd=REPO, env=env, check=True, capture_output=True)
    (calm_ds,), (killed_ds,) = (tmp_path / "calm" / "prep").glob("ds-*"), (killed / "prep").glob("ds-*")
    calm = {p.relative_to(calm_ds): p.read_bytes() for p in calm_ds.rglob("*") if p.is_file()}
    again = {p.relative_to(killed_ds): p.read_bytes() for p in killed_ds.rglob("*") if p.is_file()}
    assert calm == again


def test_category_override_plans_only_that_categorys_models(loop):
    """A `categories:` override (here from SET=) reaches only its category's trainings. Last in this
    file: the -n plan rewrites the run's stamps, which later tests of config a would see."""
    plan = make(loop, "a", "_submit", extra=["-n", "SET=categories.dress.predict.merge=coords"])
    assert "pipeline.stages.predict" in plan and "pipeline.stages.train" not in plan
    plan = make(loop, "a", "_submit", extra=["-n", "SET=categories.skirt.train.lr=0.001"])
    trains = [line for line in plan.splitlines() if "pipeline.stages.train" in line]
    assert len(trains) == 2 and all("--category skirt" in t for t in trains), plan
    assert "pipeline.stages.predict" in plan  # new skirt models, new predictions
