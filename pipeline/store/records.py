"""Preprocess: parse and validate annotations, split folds, build image caches.

Reads every training source under INPUT (see tianchi.discover_train_sources)
and `test/test.csv`. Artifacts are keyed by what made them, so any number of
configs share one OUTPUT without disturbing each other:

    OUTPUT/prep/ds-<fingerprint>/          the parsed dataset, keyed by the input fingerprint
        index.csv        one row per usable training image (all categories): unique `image_id`
                         (`<source>/<id in its csv>`), category, file, original width/height,
                         `cache_row`, and the 24 `x_y_v` cells (original pixels);
        test_index.csv   every row of test.csv, in order (no keypoints);
        rejects.csv      file, row, column, reason for every rejected row;
        clipped.csv      file, row, column, fix of every border point clipped into its image;
        duplicates.csv   groups of byte-identical / near-identical images over training and test
                         (pipeline/prep/duplicates.py); a training group shares one fold;
        report.md        rejects per reason, fixes, images per category and size, duplicates;
        manifest.json    counts, sources and the report (written last: the dataset is complete);
        cache/s<S>_m<M>/ train.npy, test.npy: uint8 (rows, S, S, 3) RGB letterboxed images
                         for input size S and margin M, manifest.json (written last);
        folds/k<k>_seed<s>.csv   image_id, image_category, fold — made once, never overwritten.
    OUTPUT/runs/<run>/prep.json            which dataset, cache and folds the run consumes.

Images are read by pipeline/prep/images.py: validity by decoding, in the stored pixel frame
(EXIF orientation ignored), JPEGs decoded at reduced size where the cache allows.

Letterbox transforms are derived from each image's size and the cache's (S, M)
(`letterbox_table`), never stored, so no stage can read one cache's transform
for another's pixels. Every output is written to a temporary file and renamed.

CLI: python -m pipeline.stages.preprocess --input DIR --output DIR [--config C] [--run RUN] [--force]
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Dict, Iterable, Optional

from pipeline.fsutil import write_text_atomic

# --------------------------------------------------------------------------- keyed layout


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
