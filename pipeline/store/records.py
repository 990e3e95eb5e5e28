"""What made an artifact, and whether it is still current.

Every stage output is accompanied by a *record*: a small JSON file holding the
`inputs` it was built from — the resolved settings the stage depends on
(`Config.stage_settings`) and the identities of its upstream artifacts (content
hashes, or the keys of keyed prep artifacts). A stage redoes its work exactly
when the inputs it would record now differ from the recorded ones; file times
alone never decide. When the inputs are unchanged the stage leaves its outputs
alone (it only refreshes the record's modification time, so that make's
file-time view agrees and the next `make` runs nothing).

The make side (stamps and vars.mk) is pipeline/store/stamps.py.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Dict, Iterable, Optional

from pipeline.fsutil import write_text_atomic

def input_fingerprint(input_dir) -> str:
    """Hash of what the parsed dataset depends on: every annotation/test CSV and image file under
    `input_dir` (relative path, size, modification time). Relative paths: a copied or moved data
    directory that keeps file times (cp -a, rsync -a) keeps its fingerprint."""
    input_dir = Path(input_dir)
    h = hashlib.sha1(b"fashionai-dataset-v3")  # v3: duplicates, clipping, report
    files = [str(p.relative_to(input_dir)) for p in sorted(input_dir.glob("*/Annotations/*.csv"))
             + sorted(input_dir.glob("test/*.csv"))]
    for images in sorted(input_dir.glob("*/Images")):
        found = []
        for top, _, names in os.walk(images):  # plain strings: tens of thousands of files
            rel = os.path.relpath(top, input_dir)
            found += [os.path.join(rel, n) for n in names]
        files += sorted(found)
    for rel in files:
        st = os.stat(os.path.join(input_dir, rel))
        h.update(f"{rel}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


RECORD_VERSION = 1


def file_id(path) -> str:
    """Content identity of a file: sha1 of its bytes (first 16 hex digits)."""
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def files_id(paths: Iterable) -> Dict[str, str]:
    """{path name: file_id} of several files (missing files raise FileNotFoundError naming them)."""
    out = {}
    for p in paths:
        p = Path(p)
        if not p.exists():
            raise FileNotFoundError(f"missing {p}")
        out[str(p)] = file_id(p)
    return out


def digest(obj: Any) -> str:
    """Short hash of a JSON-able object (sorted keys)."""
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


def canonical(obj: Any) -> Any:
    """obj as it reads back from JSON (tuples → lists), so recorded and fresh inputs compare equal."""
    return json.loads(json.dumps(obj, sort_keys=True, default=str))


def read_record(path) -> Optional[Dict]:
    path = Path(path)
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # a damaged record is simply not current


def is_current(record_path, inputs: Dict, outputs: Iterable = ()) -> bool:
    """True when `record_path` records exactly `inputs` and every file in `outputs` exists.

    When current, the record's mtime is refreshed (content untouched) so that
    make, which compares times, sees the target as up to date too.
    """
    record = read_record(record_path)
    if record is None or record.get("inputs") != canonical(inputs):
        return False
    if not all(Path(p).exists() for p in outputs):
        return False
    os.utime(record_path)
    return True


def write_record(path, inputs: Dict, **extra) -> Dict:
    """Write a record (atomically) holding `inputs` plus any extra fields (results, notes)."""
    record = {"version": RECORD_VERSION, "inputs": canonical(inputs), **canonical(extra)}
    write_text_atomic(path, json.dumps(record, indent=2, sort_keys=True))
    return record


def write_if_changed(path, text: str) -> bool:
    """Write `text` to `path` atomically unless the file already holds exactly that; True if written."""
    path = Path(path)
    if path.exists() and path.read_text() == text:
        return False
    write_text_atomic(path, text)
    return True
