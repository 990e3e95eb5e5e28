"""`make help` names every variable a user can set (every `?=` of the Makefile, and GPU); `make clean`
installs nothing; `SET` takes values with spaces."""
import re
import subprocess

from conftest import REPO


def make(*args):
    return subprocess.run(["make", "--no-print-directory", *args], cwd=REPO, capture_output=True, text=True)


def test_help_lists_every_user_variable():
    text = (REPO / "Makefile").read_text()
    names = set(re.findall(r"^([A-Z][A-Z_]*)\s*\?=", text, re.M)) | {"GPU"}
    shown = make("help").stdout
    missing = sorted(n for n in names if not re.search(rf"\b{n}=", shown))
    assert not missing, f"make help does not name {missing}"


def test_clean_installs_nothing(tmp_path):
    out = tmp_path / "out"
    (out / "runs").mkdir(parents=True)
    plan = make("-n", "clean", f"OUTPUT={out}").stdout
    assert not re.search(r"\bpip\b|-m venv", plan)
    r = make("clean", f"OUTPUT={out}")
    assert r.returncode == 0 and not (out / "runs").exists()


def test_set_with_spaces_in_a_list(tmp_path):
    plan = make("-n", "preprocess", f"OUTPUT={tmp_path}", "SET=predict.scales=[0.9, 1.0, 1.1] train.epochs=3").stdout
    assert "--sets 'predict.scales=[0.9, 1.0, 1.1] train.epochs=3'" in plan
    from pipeline.config import load_config, split_overrides

    cfg = load_config(REPO / "configs" / "demo.yaml", split_overrides("predict.scales=[0.9, 1.0, 1.1] train.epochs=3"))
    assert cfg.predict.scales == (0.9, 1.0, 1.1) and cfg.train.epochs == 3
