"""pipeline.tools.lockfile and the lock files: exact pins covering every import, compared with the environment."""
from importlib import metadata
from pathlib import Path

import pytest
from conftest import REPO as ROOT  # noqa: E402

from pipeline.tools.lockfile import (
    canonical_name,
    installed_versions,
    lock_differences,
    read_lock,
    third_party,
    top_level_imports,
)

LOCKS = [ROOT / "requirements.lock", ROOT / "requirements-gpu.lock"]
#: distributions that provide the same modules in the other build
SAME_MODULES = {"tensorflow-cpu": {"tensorflow"}, "tensorflow": {"tensorflow-cpu"}}


@pytest.mark.parametrize("lock", LOCKS, ids=lambda p: p.name)
def test_lock_covers_every_import_of_the_package_and_tests(lock):
    pins = read_lock(lock)
    modules = third_party(top_level_imports(sorted((ROOT / "pipeline").rglob("*.py")) +
                                            sorted((ROOT / "tests").rglob("*.py"))))
    assert {"numpy", "tensorflow", "cv2", "lightgbm"} <= modules  # the scan sees the imports
    provided = metadata.packages_distributions()
    missing = []
    for module in sorted(modules):
        dists = {canonical_name(d) for d in provided.get(module, [])}
        dists |= {alias for d in dists for alias in SAME_MODULES.get(d, ())}
        if not dists & set(pins):
            missing.append(f"{module} (from {sorted(dists) or 'no installed distribution'})")
    assert not missing, f"{lock.name} lacks: {missing}"


@pytest.mark.parametrize("lock", LOCKS, ids=lambda p: p.name)
def test_lock_pins_every_requirement_exactly_with_hashes(lock):
    pins = read_lock(lock)
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        name = line.split("#")[0].split(">=")[0].strip()
        if name:
            assert canonical_name(name) in pins, name
    text = lock.read_text()
    assert text.count("==") == len(pins) and text.count("--hash=sha256:") >= len(pins)
    tf = "tensorflow-cpu" if lock.name == "requirements.lock" else "tensorflow"
    assert tf in pins


def test_read_lock_rejects_a_range_naming_the_line(tmp_path):
    path = tmp_path / "x.lock"
    path.write_text("# comment\nnumpy==2.0.0 \\\n    --hash=sha256:ab\n    # via x\npandas>=2\n")
    with pytest.raises(ValueError, match=r"x.lock:5: not an exact pin"):
        read_lock(path)
    path.write_text("numpy==2.0.0 \\\n    --hash=sha256:ab\nTensorflow_CPU==2.21.0 ; python_version >= '3.9'\n")
    assert read_lock(path) == {"numpy": "2.0.0", "tensorflow-cpu": "2.21.0"}


def test_differences_name_each_distribution():
    pins = {"numpy": "2.0.0", "pandas": "2.2.0", "tqdm": "4.0"}
    installed = {"numpy": "2.0.0", "pandas": "2.3.1", "pip": "23.2", "rich": "1.0"}
    assert lock_differences(pins, installed) == ["pandas: locked 2.2.0, installed 2.3.1",
                                                 "tqdm: locked 4.0, not installed",
                                                 "rich: installed 1.0, not in the lock"]
    assert lock_differences(pins, dict(pins)) == []


def test_environment_installed_from_the_lock_matches_it():
    """Where `make install` installed a lock (.venv/.tf-variant names it), the environment is exactly it."""
    import sys

    variant = Path(sys.prefix) / ".tf-variant"
    words = variant.read_text().split() if variant.exists() else []
    if len(words) < 2 or not (ROOT / words[1]).exists():
        pytest.skip("this environment was not installed from a lock (LOCK= or a TF_PACKAGE of its own)")
    assert lock_differences(read_lock(ROOT / words[1]), installed_versions()) == []


def test_optional_imports_are_not_requirements(tmp_path):
    from pipeline.tools.lockfile import top_level_imports

    src = tmp_path / "m.py"
    src.write_text("import numpy\ntry:\n    import omegaconf\nexcept ImportError:\n    omegaconf = None\n"
                   "try:\n    import yaml\nexcept ValueError:\n    pass\n")
    assert top_level_imports([src]) == {"numpy", "yaml"}
