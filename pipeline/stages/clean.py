"""`make clean`: remove every prepared dataset, run, leaderboard and submission under OUTPUT.

Standard library only (store.layout), so `make clean` runs with the system Python and installs nothing.
CLI: python -m pipeline.stages.clean --output DIR
"""
from __future__ import annotations

import argparse
import shutil
import sys

from pipeline.store import layout


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="output")
    args = parser.parse_args(argv)
    for path in layout.clean_paths(args.output):
        if path.exists() or path.is_symlink():
            shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
            print(f"clean: removed {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
