"""Two MultiWorkerMirroredStrategy workers on 127.0.0.1 train one model into one OUTPUT (CPU, tiny data).

Slow (two TensorFlow processes per run, about a minute or two on 2 cores), so it is
marked `multiworker`, left out of `make test` and run by `make test-multiworker`
(CI runs both: .ci/run).
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import REPO

from pipeline.tools import synth

pytestmark = pytest.mark.multiworker

TINY = ["data.folds=2", "model.input_size=64", "model.width=16", "model.stages=2", "train.batch_size=4",
        "train.steps_per_epoch=3", "train.threads=1", "train.time_budget_s=0", "train.checkpoint_s=0",
        "model.margin=4", "predict.batch_size=8", "train.distribute=multiworker"]


def free_ports(n: int):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def start_workers(out: Path, epochs: int, logs: Path):
    """Two worker processes of `python -m pipeline.stages.train` with TF_CONFIG on free local ports."""
    ports = free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    procs = []
    for index in range(2):
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(REPO),
               "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})}
        args = [sys.executable, "-m", "pipeline.stages.train", "--output", str(out), "--run", "mw",
                "--config", str(REPO / "configs/demo.yaml"), "--category", "skirt", "--fold", "0"]
        for s in TINY + [f"train.epochs={epochs}"]:
            args += ["--set", s]
        log = open(logs / f"worker{index}.log", "w")
        procs.append((subprocess.Popen(args, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                                       start_new_session=True), log))
    return procs


def wait_all(procs, timeout: float = 300):
    codes = []
    for proc, log in procs:
        try:
            codes.append(proc.wait(timeout=timeout))
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            log.close()
    return codes


def scratch_dirs():
    return sorted(Path(tempfile.gettempdir()).glob("fashionai-worker*"))


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    from pipeline.prep.preprocess import preprocess

    root = tmp_path_factory.mktemp("mw")
    synth.generate(root / "input", train_per_cat=8, test_per_cat=1, seed=3, jobs=1, progress=False)
    preprocess(root / "input", root / "output", 64, 2, 42, jobs=1, margin=4, run="mw")
    return root


def test_two_workers_one_output(prepared):
    """Both exit 0; the chief alone writes: one model.keras, history.csv with each epoch once."""
    out = prepared / "output"
    before = scratch_dirs()
    codes = wait_all(start_workers(out, 2, prepared))
    logs = [(prepared / f"worker{i}.log").read_text() for i in range(2)]
    assert codes == [0, 0], "\n".join(log[-3000:] for log in logs)
    fold = out / "runs/mw/skirt/fold0"
    assert len(list(out.rglob("model.keras"))) == 1
    assert list(pd.read_csv(fold / "history.csv")["epoch"]) == [0, 1]
    metrics = json.loads((fold / "metrics.json").read_text())
    assert metrics["replicas"] == 2 and metrics["global_batch"] == 8 and metrics["epochs"] == 2
    assert all("2 replica(s)" in log for log in logs)
    assert scratch_dirs() == before  # the other worker's scratch directory is gone


def test_resume_after_killing_every_worker(prepared):
    """SIGKILL both workers after the first finished epoch; a restart finishes, each epoch once."""
    out = prepared / "output"
    fold = out / "runs/mw/skirt/fold0"
    import shutil

    shutil.rmtree(out / "runs/mw/skirt", ignore_errors=True)
    procs = start_workers(out, 4, prepared)
    state = fold / "resume/state.json"
    deadline = time.time() + 240
    try:
        while time.time() < deadline:
            if state.exists() and json.loads(state.read_text())["epoch"] >= 1:
                break
            if any(p.poll() is not None for p, _ in procs):
                break
            time.sleep(0.2)
    finally:
        for proc, _ in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
        wait_all(procs)
    killed_at = json.loads(state.read_text())["epoch"]
    assert 1 <= killed_at < 4, "the workers were not killed mid-run"
    codes = wait_all(start_workers(out, 4, prepared))
    logs = [(prepared / f"worker{i}.log").read_text() for i in range(2)]
    assert codes == [0, 0], "\n".join(log[-3000:] for log in logs)
    assert all("resuming" in log for log in logs)
    assert list(pd.read_csv(fold / "history.csv")["epoch"]) == [0, 1, 2, 3]
    assert json.loads((fold / "metrics.json").read_text())["epochs"] == 4
    assert len(list(out.rglob("model.keras"))) == 1
