"""`make install` TensorFlow variants (GPU=0/1, TF_PACKAGE), run against a scratch VENV whose
python is a fake that records pip calls: nothing is installed, the real .venv is never touched."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from conftest import REPO

FAKE_PYTHON = r"""#!/bin/bash
# records its arguments; keeps the "installed" distributions in $VENV/installed
here="$(cd "$(dirname "$0")/.." && pwd)"
echo "$*" >> "$here/calls"
echo "${PIPELINE_PARALLEL_JOBS:-unset}" >> "$here/jobs"
touch "$here/installed"
if [ "$1 $2" = "-m pip" ]; then
  case "$3" in
    show) grep -qx "$5" "$here/installed"; exit $?;;
    uninstall) for a in "${@:4}"; do case $a in -*) ;; *) sed -i "/^$a\$/d" "$here/installed";; esac; done;;
    install) prev=; for a in "${@:4}"; do
        case $a in tensorflow*) echo "${a%%[>\[=<]*}" >> "$here/installed";; esac
        case "$prev $a" in "-r "*.lock) grep -o '^tensorflow[a-z-]*' "$a" >> "$here/installed";; esac
        prev=$a; done;;
  esac
fi
"""


@pytest.fixture
def venv(tmp_path):
    root = tmp_path / "venv"
    (root / "bin").mkdir(parents=True)
    py = root / "bin" / "python"
    py.write_text(FAKE_PYTHON)
    py.chmod(0o755)
    return root


def make(venv: Path, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("GPU", "TF_PACKAGE", "MAKEFLAGS", "MAKELEVEL")}
    res = subprocess.run(["make", "--no-print-directory", f"VENV={venv}", *args], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    return res.stdout


def installed(venv: Path):
    return sorted((venv / "installed").read_text().split())


def test_gpu_switch_installs_one_variant_and_reinstalls_on_change(venv):
    make(venv, "install", "GPU=0")
    assert installed(venv) == ["tensorflow-cpu"]
    assert "Nothing to be done" in make(venv, "install", "GPU=0")
    plan = make(venv, "-n", "install", "GPU=1")  # after a CPU install the GPU switch plans a reinstall
    assert "-r requirements-gpu.lock" in plan and "pip uninstall" in plan
    assert (venv / ".tf-variant").read_text().strip() == "tensorflow-cpu>=2.16 requirements.lock"  # -n wrote nothing
    assert "Nothing to be done" in make(venv, "-n", "install", "GPU=0")
    out = make(venv, "install", "GPU=1")
    assert "removing tensorflow-cpu" in out
    assert installed(venv) == ["tensorflow"]  # never both
    assert "Nothing to be done" in make(venv, "install", "GPU=1")
    make(venv, "install", "GPU=0")
    assert installed(venv) == ["tensorflow-cpu"]


def test_install_uses_the_lock_of_the_build_unless_told_otherwise(venv):
    """By default the CPU or GPU lock is installed with hashes; LOCK= or an own TF_PACKAGE: the ranges."""
    calls = lambda: (venv / "calls").read_text().splitlines()
    make(venv, "install", "GPU=0")
    assert any("--require-hashes -r requirements.lock" in c for c in calls())
    make(venv, "install", "GPU=1")
    assert "--require-hashes -r requirements-gpu.lock" in calls()[-1] and installed(venv) == ["tensorflow"]
    make(venv, "install", "GPU=0", "LOCK=")
    assert "-r requirements.txt tensorflow-cpu>=2.16" in calls()[-1] and "--require-hashes" not in calls()[-1]
    assert (venv / ".tf-variant").read_text().strip() == "tensorflow-cpu>=2.16"
    make(venv, "install", "TF_PACKAGE=tensorflow-cpu==2.21.0")
    assert "tensorflow-cpu==2.21.0" in calls()[-1] and "requirements.lock" not in calls()[-1]


def test_tf_package_names_the_requirement(venv):
    make(venv, "install", "GPU=0")
    plan = make(venv, "-n", "install", "TF_PACKAGE=tensorflow-cpu==2.17.0")
    assert "'tensorflow-cpu==2.17.0'" in plan
    make(venv, "install", "TF_PACKAGE=tensorflow==2.17.0")
    assert installed(venv) == ["tensorflow"]


def test_requirements_leave_tensorflow_to_make():
    lines = [ln.split(";")[0].strip() for ln in (REPO / "requirements.txt").read_text().splitlines()
             if ln.strip() and not ln.startswith("#")]
    assert not [ln for ln in lines if ln.startswith("tensorflow") and not ln.startswith("tensorboard")]


def test_make_jobs_reach_the_pipeline(venv):
    """`make -jN` exports N as PIPELINE_PARALLEL_JOBS (threads per training = cores / N); the
    value must be read when recipes run: GNU make adds -jN to MAKEFLAGS after parsing."""
    make(venv, "install", "GPU=0")
    for args, expected in ((("-j2",), "2"), ((), "1"), (("-j3",), "3")):
        (venv / "jobs").unlink()
        make(venv, *args, "doctor")
        assert set((venv / "jobs").read_text().split()) == {expected}, args  # hardware + lock check
