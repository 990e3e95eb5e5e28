"""Pinned installs: read the lock files, compare them with what is installed.

`requirements.txt` holds the human-edited `>=` ranges. `requirements.lock` (CPU build,
tensorflow-cpu, x86_64) and `requirements-gpu.lock` (tensorflow[and-cuda]) hold what those
ranges resolved to: every distribution, transitive ones included, at one exact version with
the sha256 of each of its files (`make lock` rewrites them with uv; `make install` installs
one with `pip --require-hashes`, so a clone next year gets the versions this one was tested
with). `make doctor` prints `lock_differences`.

CLI: python -m pipeline.tools.lockfile check LOCK   (exit 1 when the environment differs)
"""
from __future__ import annotations

import ast
import re
import sys
from importlib import metadata
from pathlib import Path
from typing import Dict, Iterable, List, Set

#: pip freeze leaves these out; a lock may pin them
_PACKAGING_TOOLS = {"pip", "setuptools", "wheel"}


def canonical_name(name: str) -> str:
    """PEP 503 normal form: lower case, runs of -_. as one '-'."""
    return re.sub(r"[-_.]+", "-", name).lower()


def read_lock(path) -> Dict[str, str]:
    """{canonical distribution name: exact version} of a lock file (`name==version \\` lines, hashes,
    comments and continuation lines skipped). ValueError naming the line for a pin that is not `==`."""
    pins = {}
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        text = line.split("#", 1)[0].strip()
        if not text or text.startswith("--"):
            continue
        text = text.rstrip("\\").strip()
        if not text:
            continue
        requirement = text.split(";", 1)[0].strip()
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==([^\s]+)", requirement)
        if not match:
            raise ValueError(f"{path}:{number}: not an exact pin (name==version): {requirement!r}")
        pins[canonical_name(match.group(1))] = match.group(3)
    return pins


def installed_versions() -> Dict[str, str]:
    """{canonical distribution name: version} of this interpreter's environment."""
    return {canonical_name(d.metadata["Name"]): d.version for d in metadata.distributions() if d.metadata["Name"]}


def lock_differences(pins: Dict[str, str], installed: Dict[str, str]) -> List[str]:
    """One line per difference between a lock's pins and an environment: a pin missing or at another
    version, a distribution installed beside the lock (pip, setuptools and wheel ignored when unpinned)."""
    lines = []
    for name, version in sorted(pins.items()):
        have = installed.get(name)
        if have is None:
            lines.append(f"{name}: locked {version}, not installed")
        elif have != version:
            lines.append(f"{name}: locked {version}, installed {have}")
    for name in sorted(set(installed) - set(pins) - _PACKAGING_TOOLS):
        lines.append(f"{name}: installed {installed[name]}, not in the lock")
    return lines


def _optional(handler_types) -> bool:
    names = {n.id for n in ast.walk(handler_types) if isinstance(n, ast.Name)} if handler_types is not None else set()
    return bool(names & {"ImportError", "ModuleNotFoundError"})


def top_level_imports(paths: Iterable[Path]) -> Set[str]:
    """Top-level module names imported (absolute imports only) anywhere in the given .py files,
    less the optional ones: imports inside a `try` that catches ImportError."""
    names = set()
    for path in paths:
        tree = ast.parse(Path(path).read_text(), str(path))
        optional = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Try) and any(_optional(h.type) for h in node.handlers):
                optional.update(id(n) for stmt in node.body for n in ast.walk(stmt))
        for node in ast.walk(tree):
            if id(node) in optional:
                continue
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names


def third_party(modules: Iterable[str], own: Iterable[str] = ("pipeline", "tests", "conftest", "browser")) -> Set[str]:
    """The modules that are neither the standard library's nor the project's own."""
    return {m for m in modules if m not in sys.stdlib_module_names and m not in set(own)}


def main(argv=None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="Compare the installed distributions with a lock file.")
    parser.add_argument("command", choices=["check"])
    parser.add_argument("lock")
    args = parser.parse_args(argv)
    try:
        pins = read_lock(args.lock)
    except (OSError, ValueError) as err:
        print(f"lockfile: error: {err}", file=sys.stderr)
        return 1
    lines = lock_differences(pins, installed_versions())
    for line in lines:
        print(f"lock: {line}")
    print(f"lock: {args.lock}: " + ("installed versions match its "
                                    f"{len(pins)} pins" if not lines else f"{len(lines)} difference(s)"))
    return 1 if lines else 0


if __name__ == "__main__":
    sys.exit(main())
