"""Every `make` command in the fenced code blocks of README.md and docs/*.md passes `make -n`
(OUTPUT pointed at a scratch folder, so nothing is written into a real one)."""
import re
import shlex
import subprocess

import pytest
from conftest import REPO

pytestmark = pytest.mark.slow


def doc_commands():
    out = []
    for page in [REPO / "README.md"] + sorted((REPO / "docs").glob("*.md")):
        for block in re.findall(r"```(?:bash|sh|console)?\n(.*?)```", page.read_text(), re.S):
            for line in block.splitlines():
                line = line.split("  #")[0].split(" # ")[0].strip().lstrip("$ ").strip()
                if line.startswith("make ") and "<" not in line and "..." not in line:
                    out.append((page.name, line))
    return out


COMMANDS = doc_commands()


def test_the_docs_show_make_commands():
    assert len(COMMANDS) > 10


@pytest.mark.parametrize("page,command", COMMANDS, ids=[f"{p}:{c[:60]}" for p, c in COMMANDS])
def test_make_dry_run(page, command, tmp_path):
    words = [w for w in shlex.split(command)[1:] if not w.startswith("OUTPUT=")]
    r = subprocess.run(["make", "-n", *words, f"OUTPUT={tmp_path / 'out'}"], cwd=REPO, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, f"{page}: `{command}` fails make -n:\n{r.stderr[-600:]}"
