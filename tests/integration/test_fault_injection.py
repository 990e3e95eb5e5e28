"""Faults injected on a tiny synthetic set: a full disk, two writers, truncated artifacts, a
read-only INPUT, paths with spaces. Each ends in a one-line error that names the cause, or in a
correct result; a broken artifact is never used, and the same command completes afterwards.

The disk-full and read-only cases mount a small tmpfs / a read-only bind mount (root, as on
this project's machines and CI); where mounting is not allowed they are skipped.
"""
import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO

from pipeline.tools import synth

pytestmark = pytest.mark.slow
TINY = ["data.folds=2", "model.input_size=64", "model.width=16", "model.stages=1", "train.batch_size=4",
        "train.epochs=1", "train.steps_per_epoch=2", "train.threads=1", "predict.batch_size=8",
        "stack.mode=off", "data.categories=[skirt]"]


def stage(module, *args, cwd=REPO):
    sets = [a for s in TINY for a in ("--set", s)]
    return subprocess.run([sys.executable, "-m", f"pipeline.stages.{module}", *args, "--config",
                           str(REPO / "configs" / "demo.yaml"), *sets], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    synth.generate(root / "input", train_per_cat=6, test_per_cat=2, seed=5, jobs=1, progress=False)
    return root / "input"


def mount(*args):
    return subprocess.run(["mount", *args], capture_output=True).returncode == 0


@pytest.fixture
def small_disk(tmp_path):
    where = tmp_path / "disk"
    where.mkdir()
    if os.geteuid() != 0 or not mount("-t", "tmpfs", "-o", "size=300k", "tmpfs", str(where)):
        pytest.skip("cannot mount a tmpfs here")
    yield where
    subprocess.run(["umount", "-l", str(where)])


def tree_digest(root: Path):
    h = hashlib.sha1()
    for p in sorted(root.rglob("*")):
        st = p.stat()
        h.update(f"{p.relative_to(root)}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()


def test_disk_full_is_one_line_and_the_rerun_completes(data, small_disk):
    out = small_disk / "output"
    r = stage("preprocess", "--input", str(data), "--output", str(out), "--run", "t")
    assert r.returncode != 0
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("error: disk full") and str(small_disk) in last, r.stderr[-800:]
    assert "Traceback" not in r.stderr
    # nothing half-written counts as done: no finished cache, no run binding
    assert not list(out.glob("prep/*/cache/*/manifest.json"))
    assert not (out / "runs" / "t" / "prep.json").exists()
    assert mount("-o", "remount,size=64m", str(small_disk))
    again = stage("preprocess", "--input", str(data), "--output", str(out), "--run", "t")
    assert again.returncode == 0, again.stderr[-800:]
    assert list(out.glob("prep/*/cache/*/manifest.json"))


def test_read_only_input_works_and_is_never_written(data, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    if os.geteuid() != 0 or not mount("--bind", str(data), str(ro)):
        pytest.skip("cannot bind-mount here")
    try:
        assert mount("-o", "remount,ro,bind", str(ro))
        with pytest.raises(OSError):
            (ro / "probe").write_text("x")
        before = tree_digest(data)
        r = stage("preprocess", "--input", str(ro), "--output", str(tmp_path / "out"), "--run", "t")
        assert r.returncode == 0, r.stderr[-800:]
        assert tree_digest(data) == before
    finally:
        subprocess.run(["umount", "-l", str(ro)])


def test_paths_with_spaces_work_for_the_stages(data, tmp_path):
    spaced_in, out = tmp_path / "my data", tmp_path / "my output"
    spaced_in.symlink_to(data, target_is_directory=True)
    r = stage("preprocess", "--input", str(spaced_in), "--output", str(out), "--run", "t")
    assert r.returncode == 0, r.stderr[-800:]
    assert list(out.glob("prep/*/cache/*/train.npy"))


def test_make_refuses_a_path_with_a_space_at_once(tmp_path):
    r = subprocess.run(["make", "-n", "preprocess", f"OUTPUT={tmp_path}/a b"], cwd=REPO, capture_output=True,
                       text=True)
    assert r.returncode != 0
    assert "space" in r.stderr and "OUTPUT" in r.stderr


def test_truncated_cache_is_rebuilt_never_used(data, tmp_path):
    from pipeline.store.rundata import run_data

    out = tmp_path / "out"
    assert stage("preprocess", "--input", str(data), "--output", str(out), "--run", "t").returncode == 0
    (npy,) = [p for p in out.glob("prep/*/cache/*/train.npy")]
    whole = npy.read_bytes()
    npy.write_bytes(whole[: len(whole) // 2])
    from pipeline.config import load_config

    cfg = load_config(REPO / "configs" / "demo.yaml", TINY)
    with pytest.raises(ValueError, match="train.npy.*truncated"):
        run_data(out, "t", cfg).cache("train")
    r = stage("preprocess", "--input", str(data), "--output", str(out), "--run", "t")
    assert r.returncode == 0 and "rebuilding the cache" in r.stderr
    assert npy.read_bytes() == whole


def test_truncated_model_and_predictions_are_rebuilt(data, tmp_path):
    out = tmp_path / "out"
    assert stage("preprocess", "--input", str(data), "--output", str(out), "--run", "t").returncode == 0
    r = stage("train", "--output", str(out), "--run", "t", "--category", "skirt", "--fold", "0")
    assert r.returncode == 0, r.stderr[-800:]
    model = out / "runs/t/skirt/fold0/model.keras"
    model.write_bytes(model.read_bytes()[:5000])
    from pipeline.heatmap.inference import load_model

    with pytest.raises(ValueError, match="model.keras: broken model file"):
        load_model(model)
    r = stage("train", "--output", str(out), "--run", "t", "--category", "skirt", "--fold", "0")
    assert r.returncode == 0 and "retraining" in r.stdout, r.stdout[-800:]
    load_model(model)  # whole again
    assert stage("train", "--output", str(out), "--run", "t", "--category", "skirt", "--fold", "1").returncode == 0
    assert stage("predict", "--output", str(out), "--run", "t").returncode == 0
    oof = out / "runs/t/skirt/fold0/oof.npz"
    good = oof.read_bytes()
    oof.write_bytes(good[:100])
    r = stage("predict", "--output", str(out), "--run", "t")
    assert r.returncode == 0 and "oof.npz has 100 bytes" in r.stderr, r.stderr[-800:]
    np.load(oof)  # rebuilt, whole


def test_a_second_writer_waits_and_names_the_first(tmp_path):
    """A stage lock held by one process: another waits, printing who holds it, then proceeds."""
    code = ("import sys, time; from pipeline.store.locks import stage_lock\n"
            "with stage_lock(sys.argv[1], 'r', 'predict'):\n"
            "    print('held', flush=True); time.sleep(float(sys.argv[2]))\n")
    first = subprocess.Popen([sys.executable, "-c", code, str(tmp_path), "3"], cwd=REPO, stdout=subprocess.PIPE,
                             text=True)
    assert first.stdout.readline().strip() == "held"
    started = time.time()
    second = subprocess.run([sys.executable, "-c", code, str(tmp_path), "0"], cwd=REPO, capture_output=True,
                            text=True, timeout=60)
    first.wait()
    assert second.returncode == 0
    assert "waiting for another predict of run r" in second.stdout
    assert f"pid {first.pid}" in second.stdout
    assert time.time() - started > 1.5  # it waited for the first to finish
