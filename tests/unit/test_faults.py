"""pipeline.faults: machine faults told in one line; everything else keeps its traceback."""
import errno
import subprocess
import sys

from conftest import REPO

from pipeline.faults import describe


def test_disk_full_names_the_file_and_the_mount(tmp_path):
    msg = describe(OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "model.keras")))
    assert msg.startswith("error: disk full") and "model.keras" in msg and "free on" in msg
    assert "\n" not in msg


def test_library_errors_that_say_disk_full_are_recognised():
    msg = describe(RuntimeError("Unable to synchronously write: No space left on device"))
    assert msg.startswith("error: disk full") and "No space left" in msg


def test_read_only_and_other_errors():
    assert describe(OSError(errno.EROFS, "Read-only file system", "/data/x")).startswith(
        "error: read-only file system: /data/x")
    assert describe(ValueError("bad value")) is None
    assert describe(OSError(errno.ENOENT, "No such file", "x")) is None


def test_the_hook_prints_one_line_and_exits_1():
    code = "import errno, pipeline; raise OSError(errno.ENOSPC, 'No space left on device', '/x/y.npz')"
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [r.stderr.strip()] and "disk full" in r.stderr
    other = subprocess.run([sys.executable, "-c", "import pipeline; raise KeyError('k')"], cwd=REPO,
                           capture_output=True, text=True)
    assert other.returncode == 1 and "Traceback" in other.stderr
