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


#: outputs up to this size are checked by content (sha1) as well as by size; larger ones by size
HASH_LIMIT = 64 << 20


def output_ids(record_path, outputs: Iterable) -> Dict[str, Dict[str, Any]]:
    """{name relative to the record's folder: {"size": bytes, "sha1": file_id or None}} of `outputs`."""
    base = Path(record_path).parent
    out = {}
    for p in outputs:
        p = Path(p)
        size = p.stat().st_size
        out[os.path.relpath(p, base)] = {"size": size, "sha1": file_id(p) if size <= HASH_LIMIT else None}
    return out


def broken_outputs(record: Dict, record_path, outputs: Iterable) -> list:
    """Messages for outputs that are missing, or whose size or content differ from what the record
    saw when they were written (truncated by a crash or a full disk, replaced by a copy)."""
    seen = record.get("outputs") or {}
    base = Path(record_path).parent
    problems = []
    for p in outputs:
        p = Path(p)
        if not p.exists():
            problems.append(f"{p} is missing")
            continue
        want = seen.get(os.path.relpath(p, base))
        if want is None:
            continue  # recorded before output checks existed
        size = p.stat().st_size
        if size != want["size"]:
            problems.append(f"{p} has {size} bytes, {want['size']} when it was written (truncated or replaced)")
        elif want.get("sha1") and file_id(p) != want["sha1"]:
            problems.append(f"{p} changed since it was written (content hash differs)")
    return problems


def is_current(record_path, inputs: Dict, outputs: Iterable = ()) -> bool:
    """True when `record_path` records exactly `inputs` and every file in `outputs` exists with the
    size (and, up to HASH_LIMIT, the content) recorded when it was written.

    A broken output is named on stderr and makes the record not current, so the stage rebuilds
    it rather than handing it on. When current, the record's mtime is refreshed (content
    untouched) so that make, which compares times, sees the target as up to date too.
    """
    import sys

    record = read_record(record_path)
    if record is None or record.get("inputs") != canonical(inputs):
        return False
    outputs = list(outputs)
    problems = broken_outputs(record, record_path, outputs)
    if problems:
        for text in problems:
            if "missing" not in text:
                print(f"warning: {text}; rebuilding it", file=sys.stderr)
        return False
    os.utime(record_path)
    return True


def write_record(path, inputs: Dict, outputs: Iterable = (), **extra) -> Dict:
    """Write a record (atomically) holding `inputs`, the size and hash of each of `outputs` (files
    already written, checked by `is_current`) and any extra fields (results, notes)."""
    record = {"version": RECORD_VERSION, "inputs": canonical(inputs), **canonical(extra)}
    outputs = list(outputs)
    if outputs:
        record["outputs"] = output_ids(path, outputs)
    write_text_atomic(path, json.dumps(record, indent=2, sort_keys=True))
    return record


def write_if_changed(path, text: str) -> bool:
    """Write `text` to `path` atomically unless the file already holds exactly that; True if written."""
    path = Path(path)
    if path.exists() and path.read_text() == text:
        return False
    write_text_atomic(path, text)
    return True


def broken_model(out: Path) -> Optional[str]:
    """Why the finished model in `out` cannot be used, or None when it is whole: missing, not the
    size/content metrics.json recorded when it was saved, or (no record) not a whole zip archive."""
    import zipfile

    from pipeline.store.layout import MODEL_FILES

    model, metrics_path = out / MODEL_FILES["model"], out / MODEL_FILES["metrics"]
    if not model.exists():
        return f"{model} is missing"
    seen = None
    if metrics_path.exists():
        try:
            seen = json.loads(metrics_path.read_text()).get("model_file")
        except (OSError, ValueError):
            seen = None
    if seen:
        problems = broken_outputs({"outputs": seen}, metrics_path, [model])
        return problems[0] if problems else None
    try:
        with zipfile.ZipFile(model) as z:
            bad = z.testzip()
        return None if bad is None else f"{model} is damaged (member {bad})"
    except (zipfile.BadZipFile, OSError) as err:
        return f"{model} is not a whole model file ({err})"
