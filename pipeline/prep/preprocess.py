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

import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import pandas as pd

from pipeline.fsutil import atomic_path, file_lock, write_text_atomic
from pipeline.hardware import available_cores
from pipeline.keypoints import CATEGORIES, KEYPOINTS
from pipeline.prep import duplicates
from pipeline.prep import report as prep_report
from pipeline.prep.images import (
    ImageError,
    content_hash,
    decode,
    image_size,
    letterbox,
    load_letterboxed,
    phash,
    read_bytes,
    resolve_file,
)
from pipeline.store.layout import (
    cache_dir,
    cache_key,
    dataset_dir,
    dataset_key,
    folds_key,
    folds_path,
)
from pipeline.store.records import input_fingerprint
from pipeline.store.rundata import (
    RunData,
    bind_run,
    index_frame,
    load_index,
    read_duplicates,
)
from pipeline.tianchi import (
    Problem,
    discover_train_sources,
    format_cell,
    read_annotations,
    read_test_list,
)

CHUNK = 32
MAX_CHUNK = 512
REJECT_COLUMNS = ["file", "row", "column", "reason"]


# image reading lives in pipeline.prep.images (stored frame, validity by decoding); the old names stay
# importable from here (predict_image, synth's size reader)
_image_size = image_size
_reexported = (ImageError, load_letterboxed)


def _load_chunk(items: Sequence[Tuple[int, str]], size: int, margin: int, cache_file: str, offset: int,
                hashes: bool = False):
    """Worker: load (position, path) items straight into the cache file.

    Image `pos` is written with os.pwrite at offset + pos * S*S*3 (plain file
    I/O: the pages stay in the OS cache, not in any process's memory).
    Returns (position, info, column) per item: info is (width, height, params, sha1, phash)
    for a good image (hashes None unless `hashes`), else the reason it was rejected.
    """
    cv2.setNumThreads(1)
    cache_fd = os.open(cache_file, os.O_WRONLY)
    try:
        return [_load_one(pos, path, size, margin, cache_fd, offset, hashes) for pos, path in items]
    finally:
        os.close(cache_fd)


def _load_one(pos: int, path: str, size: int, margin: int, cache_fd: int, offset: int, hashes: bool):
    """One image of `_load_chunk`: decoded (stored frame), letterboxed, written at its row of the cache file."""
    try:
        try:
            data = read_bytes(path)
        except ImageError:
            found = resolve_file(os.path.dirname(path), os.path.basename(path), depth=3)
            if found == path:
                raise
            data, path = read_bytes(found), found
        decoded, w, h, _ = decode(data, size - 2 * margin)
        img, w, h, params = letterbox(decoded, w, h, size, margin)
    except ImageError as err:
        return pos, str(err), "image_id"
    except (cv2.error, ValueError, MemoryError) as err:  # whatever an odd file makes a library raise: a reason
        return pos, f"corrupt image ({type(err).__name__}: {str(err).strip()[-120:]})", "image_id"
    sha, ph = (content_hash(data), phash(decoded)) if hashes else (None, None)
    os.pwrite(cache_fd, img.tobytes(), offset + pos * img.nbytes)
    return pos, (w, h, params, sha, ph, path), None


def announce_cache(cache_path: Path, n: int, size: int, desc: str = "images") -> None:
    """Print the cache's size on disk before it is built; refuse at once when the disk lacks it.

    The .npy is a uint8 memmap (n, size, size, 3) written sparse, so a full disk would
    otherwise surface as a bus error or ENOSPC halfway through.
    """
    import shutil

    need = max(n, 1) * size * size * 3 + 4096
    cache_path.parent.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(cache_path.parent).free
    print(f"preprocess: {desc} cache {cache_path.name}: {n} x {size}x{size}x3 uint8 = {need / 2**30:.2f} GiB "
          f"on disk ({free / 2**30:.1f} GiB free)", flush=True)
    if need > free:
        raise OSError(28, f"disk full: the {desc} cache needs {need / 2**30:.2f} GiB and "
                          f"{cache_path.parent} has {free / 2**30:.2f} GiB free", str(cache_path))


def build_cache(paths: Sequence[str], size: int, cache_path: Path, jobs: int = -1, desc: str = "images",
                margin: int = 0, skip=None, hashes: bool = False):
    """Load `paths` in parallel and stream them into a uint8 .npy file (N, S, S, 3) (read back as a memmap).

    `skip(i)` true: row i is left black unread. Returns (sizes (N, 2) int stored width/height,
    params (N, 4) float, errors: dict position → (reason, column), hashes: dict position →
    (sha1 hex, 64-bit phash) of the good images when `hashes`). Rows that failed stay black.
    Written to a temporary file and renamed.
    """
    from joblib import Parallel, delayed
    from tqdm import tqdm

    n = len(paths)
    sizes = np.zeros((n, 2), np.int64)
    params = np.zeros((n, 4), np.float64)
    errors: Dict[int, Tuple[str, str]] = {}
    found: Dict[int, Tuple[str, int]] = {}
    resolved: Dict[int, str] = {}
    cv_threads = cv2.getNumThreads()  # the worker threads set 1 (one image per thread); restored below
    announce_cache(cache_path, n, size, desc)
    with atomic_path(cache_path) as tmp:
        header = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(max(n, 1), size, size, 3))
        offset = header.offset  # .npy header length; the file is created sparse at full size
        del header
        items = [(i, p) for i, p in enumerate(paths) if skip is None or not skip(i)]
        # chunks of a few hundred images: joblib polls for finished tasks every few ms, so tiny
        # tasks leave the workers idle; about 4 chunks per worker keep the load balanced
        workers = max(1, jobs if jobs > 0 else available_cores() + 1 + jobs)
        step = int(min(MAX_CHUNK, max(CHUNK, len(items) // (4 * workers) + 1)))
        chunks = [items[i:i + step] for i in range(0, len(items), step)]
        # worker threads write their images straight into the file: only small metadata comes
        # back, memory flat in N. Threads, not processes: decoding, resizing, hashing and pwrite
        # release the GIL, and no worker process has to start, import and hold its own memory
        # (measured on 2 shared cores: processes were slower than one thread)
        runner = Parallel(n_jobs=jobs, return_as="generator_unordered", pre_dispatch="2*n_jobs", prefer="threads")
        with tqdm(total=len(items), desc=desc, unit="img", mininterval=1.0,
                  disable=not sys.stderr.isatty()) as bar:
            for results in runner(delayed(_load_chunk)(c, size, margin, str(tmp), offset, hashes) for c in chunks):
                for pos, info, column in results:
                    if column is not None:
                        errors[pos] = (info, column)
                    else:
                        sizes[pos] = info[:2]
                        params[pos] = info[2]
                        if hashes:
                            found[pos] = (info[3], info[4])
                        if info[5] != paths[pos]:
                            resolved[pos] = info[5]
                bar.update(len(results))
    cv2.setNumThreads(cv_threads)
    if isinstance(paths, list):
        for pos, path in resolved.items():  # the file found under another spelling (see resolve_file)
            paths[pos] = path
    return sizes, params, errors, found


def check_points(kps: np.ndarray, width: int, height: int) -> Tuple[np.ndarray, List[str], Optional[Tuple[int, str]]]:
    """Bounds of one image's annotated points (24, 3) (stored-frame pixels) in a width×height image.

    A point within one pixel of the border (x == -1 or x == width, likewise y) is
    clipped into the image; farther outside is an error. Returns (clipped copy
    (24, 3), one label per clipped coordinate, e.g. "x = width → width-1", and
    (keypoint index, reason) of the first point too far outside, or None).
    """
    out = np.array(kps, copy=True)
    fixes: List[str] = []
    for k in np.nonzero(out[:, 2] >= 0)[0]:
        x, y = int(out[k, 0]), int(out[k, 1])
        if not (-1 <= x <= width and -1 <= y <= height):
            return out, fixes, (int(k), f"point ({x}, {y}) outside the {width}x{height} image "
                                        "(more than one pixel past the border)")
        for axis, value, side, name in ((0, x, width, "x"), (1, y, height, "y")):
            if value == -1:
                out[k, axis] = 0
                fixes.append(f"{name} = -1 → 0")
            elif value == side:
                out[k, axis] = side - 1
                fixes.append(f"{name} = {'width' if axis == 0 else 'height'} → "
                             f"{'width' if axis == 0 else 'height'}-1")
    return out, fixes, None


# --------------------------------------------------------------------------- folds


def make_folds(image_id: Sequence[str], category: Sequence[str], k: int, seed: int,
               groups: Optional[Sequence[int]] = None) -> np.ndarray:
    """Stratified (by category), grouped k-fold assignment; returns (N,) int fold ids.

    groups: (N,) group id per image (duplicates share one), or None (every image its own).
    The split is made over groups, each stratified by the category of its first image,
    and every member gets its group's fold; without duplicates this is exactly a seeded
    StratifiedKFold over the images.
    """
    from sklearn.model_selection import StratifiedKFold

    category = np.asarray(category)
    groups = np.arange(len(category)) if groups is None else np.asarray(groups)
    _, first, inverse = np.unique(groups, return_index=True, return_inverse=True)
    order = np.argsort(first)            # groups in order of their first image
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    unit_of = rank[inverse.reshape(-1)]  # image → unit (group) number
    unit_cat = category[first[order]]
    counts = pd.Series(unit_cat).value_counts()
    small = counts[counts < k]
    if len(small):
        raise ValueError(f"category {small.index[0]!r} has {small.iloc[0]} usable image group(s), "
                         f"fewer than data.folds={k}")
    unit_fold = np.full(len(unit_cat), -1, np.int64)
    splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    for f, (_, val) in enumerate(splitter.split(np.zeros(len(unit_cat)), unit_cat)):
        unit_fold[val] = f
    return unit_fold[unit_of]


def check_folds(folds: pd.DataFrame, k: int, groups: Optional[Sequence[int]] = None) -> None:
    """Leak check: every image in exactly one fold, every fold holds every category, and every
    duplicate group (groups (N,) aligned with the rows of `folds`) lies in a single fold."""
    if folds["image_id"].duplicated().any():
        dup = folds.loc[folds["image_id"].duplicated(), "image_id"].iloc[0]
        raise AssertionError(f"folds.csv: image {dup!r} is in more than one fold")
    if not folds["fold"].between(0, k - 1).all():
        raise AssertionError(f"folds.csv: fold ids outside 0..{k - 1}")
    for cat, group in folds.groupby("image_category"):
        missing = set(range(k)) - set(group["fold"])
        if missing:
            raise AssertionError(f"folds.csv: category {cat} has no image in fold(s) {sorted(missing)}")
    if groups is not None:
        spread = pd.Series(folds["fold"].to_numpy()).groupby(np.asarray(groups)).nunique()
        if (spread > 1).any():
            g = spread.index[spread > 1][0]
            ids = folds["image_id"].to_numpy()[np.asarray(groups) == g]
            raise AssertionError(f"folds.csv: duplicate images {', '.join(map(str, ids[:3]))} are in different "
                                 "folds (a leak between training and validation)")


# --------------------------------------------------------------------------- main stage


def _parse_sources(input_dir: Path):
    """Every training row of every source: (ids, source ids, source names, categories, files,
    keypoints (N, 24, 3), csv positions (file, row)), plus the CSV problems."""
    sources = discover_train_sources(input_dir)
    if not sources:
        raise SystemExit(f"preprocess: no training annotations under {input_dir} "
                         f"(expected e.g. {input_dir}/train/Annotations/train.csv; try `make data`)")
    problems: List[Problem] = []
    ids, source_ids, source_names, cats, files, kps, csv_rows = [], [], [], [], [], [], []
    for name, split_dir, csv_path in sources:
        table, bad = read_annotations(csv_path)
        problems += bad
        for iid, cat, pts, row in zip(table.image_id, table.image_category, table.keypoints, table.rows):
            ids.append(f"{name}/{iid}")
            source_ids.append(iid)
            source_names.append(name)
            cats.append(cat)
            files.append(os.path.join(split_dir, iid))  # another spelling is looked for when absent
            kps.append(pts)
            csv_rows.append((str(csv_path), int(row)))
    kps_arr = np.array(kps, np.int64).reshape(-1, len(KEYPOINTS), 3)
    return sources, (ids, source_ids, source_names, cats, files, kps_arr, csv_rows), problems


def _clip_points(kps_arr: np.ndarray, sizes: np.ndarray, good: Sequence[int], csv_rows, files):
    """Clip border points of the good rows in place; returns (problems of points too far outside,
    fix counts {label: n}, clipped rows [(file, row, keypoint, fix)])."""
    problems, fixes, clipped = [], {}, []
    for pos in good:
        w, h = (int(v) for v in sizes[pos])
        new, labels, bad = check_points(kps_arr[pos], w, h)
        if bad is not None:
            problems.append((pos, Problem(csv_rows[pos][0], csv_rows[pos][1], KEYPOINTS[bad[0]],
                                          f"{files[pos]}: {bad[1]}")))
            continue
        if labels:
            changed = np.nonzero((new != kps_arr[pos]).any(1))[0]
            for k in changed:
                clipped.append((csv_rows[pos][0], csv_rows[pos][1], KEYPOINTS[k],
                                f"{format_cell(*kps_arr[pos][k])} → {format_cell(*new[k])}"))
            for label in labels:
                fixes[f"border point clipped: {label}"] = fixes.get(f"border point clipped: {label}", 0) + 1
            kps_arr[pos] = new
    return problems, fixes, clipped


def build_dataset(input_dir, ds_dir: Path, size: int, margin: int, jobs: int) -> Dict:
    """Parse and validate every source of `input_dir` into `ds_dir` (index, test index, rejects,
    duplicates, report), building the (size, margin) image cache in the same decoding pass.
    Returns the dataset manifest.

    Cache rows follow the parse order of all candidate rows (rejected rows may hold pixels
    but are never read), so every later cache of this dataset puts each image at the same `cache_row`.
    """
    sources, rows, problems = _parse_sources(input_dir)
    ids, source_ids, source_names, cats, files, kps_arr, csv_rows = rows
    n_csv_problems = len(problems)
    cdir = cache_dir(ds_dir, size, margin)
    as_written = list(files)  # build_cache puts the path of a file found under another spelling in `files`
    sizes, _, errors, hashes = build_cache(files, size, cdir / "train.npy", jobs, desc="train images",
                                           margin=margin, hashes=True)
    for pos, (reason, column) in sorted(errors.items()):
        problems.append(Problem(csv_rows[pos][0], csv_rows[pos][1], column, f"{files[pos]}: {reason}"))
    decoded = [i for i in range(len(ids)) if i not in errors]
    outside, fixes, clipped = _clip_points(kps_arr, sizes, decoded, csv_rows, files)
    problems += [p for _, p in outside]
    far = {pos for pos, _ in outside}
    sel = np.array([i for i in decoded if i not in far], np.int64)
    renamed = sum(1 for i in sel if files[i] != as_written[i])
    if renamed:
        fixes["image file found under another letter case or separator"] = renamed
    frame = index_frame(np.array(ids, object)[sel], np.array(source_ids, object)[sel],
                      np.array(source_names, object)[sel], np.array(cats, object)[sel],
                      np.array(files, object)[sel], sizes[sel], sel, kps_arr[sel])
    hash_rows = [(ids[i], "train", cats[i], *hashes[i], *sizes[i]) for i in sel]
    n_test = test_rows = 0
    t_frame = None
    test_csv = Path(input_dir) / "test" / "test.csv"
    if test_csv.exists():
        t_frame, t_problems, t_hashes = _build_test(input_dir, test_csv, cdir / "test.npy", size, margin, jobs)
        problems += t_problems
        hash_rows += [(f"test/{iid}", "test", cat, *t_hashes[pos], w, h)
                      for pos, (iid, cat, w, h) in enumerate(zip(t_frame["image_id"], t_frame["image_category"],
                                                                 t_frame["width"], t_frame["height"]))
                      if pos in t_hashes]
        with atomic_path(ds_dir / "test_index.csv") as tmp:
            t_frame.to_csv(tmp, index=False)
        n_test = test_rows = len(t_frame)
    dups = duplicates.find_duplicates(*zip(*hash_rows)) if hash_rows else pd.DataFrame(columns=duplicates.COLUMNS)
    with atomic_path(ds_dir / "duplicates.csv") as tmp:
        dups.to_csv(tmp, index=False)
    with atomic_path(ds_dir / "clipped.csv") as tmp:
        pd.DataFrame(clipped, columns=["file", "row", "column", "fix"]).to_csv(tmp, index=False)
    with atomic_path(ds_dir / "index.csv") as tmp:
        frame.to_csv(tmp, index=False)
    _write_rejects(ds_dir / "rejects.csv", problems)
    report = prep_report.build(problems, fixes, frame, t_frame, duplicates.summary(dups), n_csv_problems)
    manifest = {
        "input": str(Path(input_dir).resolve()), "n_candidates": len(ids), "n_train": int(len(frame)),
        "n_test": n_test, "n_test_rows": test_rows, "n_rejected": len(problems),
        "n_clipped_points": len(clipped),
        "per_category": {c: int(v) for c, v in frame["image_category"].value_counts().sort_index().items()},
        "sources": [s[0] for s in sources], "report": report,
    }
    write_text_atomic(ds_dir / "report.md", prep_report.markdown(report, ds_dir))
    _finish_cache(cdir, size, margin, manifest)
    return manifest


def _build_test(input_dir, test_csv: Path, path: Path, size: int, margin: int, jobs: int):
    """Test index frame (every row of test.csv, in order), its problems and the hashes of its
    readable images {position: (sha1, phash)}; cache written to `path`."""
    t_ids, t_cats = read_test_list(test_csv)
    t_files = [os.path.join(input_dir, "test", i) for i in t_ids]
    t_sizes, _, t_errors, t_hashes = build_cache(t_files, size, path, jobs, desc="test images", margin=margin,
                                                 hashes=True)
    problems = []
    for pos, (reason, _) in sorted(t_errors.items()):
        # a test row cannot be dropped: predict on a black image of the size its header gives
        # (what the submission validator checks against), else an assumed 512x512
        t_sizes[pos] = _header_size_or_default(t_files[pos])
        problems.append(Problem(str(test_csv), pos + 2, "image_id", f"{t_files[pos]}: {reason} "
                                f"(kept; predicted on a blank {t_sizes[pos][0]}x{t_sizes[pos][1]} image)"))
    frame = index_frame(t_ids, t_ids, ["test"] * len(t_ids), t_cats, t_files, t_sizes, np.arange(len(t_ids)), None)
    return frame, problems, t_hashes


def _header_size_or_default(path: str, default: Tuple[int, int] = (512, 512)) -> Tuple[int, int]:
    """(width, height) from an unusable image's header when it has one (e.g. a cut-short JPEG), else `default`."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.size
    except Exception:  # noqa: BLE001 - missing, empty, not an image
        return default


def broken_cache_files(cdir: Path) -> List[str]:
    """Why the finished cache in `cdir` cannot be used: a .npy shorter or longer than its header
    says (truncated by a crash, a full disk or a copy), or not a .npy. [] when whole or unfinished."""
    from pipeline.store.rundata import npy_problem

    if not (cdir / "manifest.json").exists():
        return []
    return [p for p in (npy_problem(f) for f in sorted(cdir.glob("*.npy"))) if p]


def _finish_cache(cdir: Path, size: int, margin: int, dataset_manifest: Dict) -> None:
    """The cache's manifest, written last: a cache directory without it is incomplete."""
    write_text_atomic(cdir / "manifest.json", json.dumps(
        {"size": size, "margin": margin, "n_train_rows": dataset_manifest["n_candidates"],
         "n_test_rows": dataset_manifest["n_test_rows"]}, indent=2, sort_keys=True))


def build_extra_cache(ds_dir: Path, size: int, margin: int, jobs: int, dataset_manifest: Dict) -> None:
    """Another (size, margin) cache of an already parsed dataset (only its good rows are decoded)."""
    cdir = cache_dir(ds_dir, size, margin)
    for split, n_rows in (("train", dataset_manifest["n_candidates"]), ("test", dataset_manifest["n_test_rows"])):
        if split == "test" and not (ds_dir / "test_index.csv").exists():
            continue
        index = load_index(ds_dir, split)
        files = [""] * n_rows
        for row, f in zip(index.cache_row, index.frame["file"]):
            files[row] = f
        wanted = set(index.cache_row.tolist())
        _, _, errors, _ = build_cache(files, size, cdir / f"{split}.npy", jobs, desc=f"{split} images",
                                      margin=margin, skip=lambda i: i not in wanted)
        bad = {i: e for i, e in errors.items() if i in wanted and split == "train"}
        if bad:
            pos, (reason, _) = next(iter(sorted(bad.items())))
            raise SystemExit(f"preprocess: {files[pos]}: {reason}, although it was readable when {ds_dir} was "
                             "built; the input changed under the same fingerprint — rerun with --force")
    _finish_cache(cdir, size, margin, dataset_manifest)


def ensure_folds(ds_dir: Path, k: int, seed: int) -> pd.DataFrame:
    """The (k, seed) folds of a dataset: made once, stored under folds/, reused and leak-checked
    (duplicate groups of duplicates.csv each in one fold)."""
    path = folds_path(ds_dir, k, seed)
    index = load_index(ds_dir, "train")
    dups = read_duplicates(ds_dir)
    identical = duplicates.training_groups(dups, index.image_id, near=False)
    if path.exists():
        folds = pd.read_csv(path, dtype={"image_id": str})
        if list(folds["image_id"]) != list(index.image_id):
            raise AssertionError(f"{path} does not cover the images of {ds_dir / 'index.csv'}")
        check_folds(folds, k, identical)
        return folds
    for cat, n in pd.Series(index.category).value_counts().items():
        if n < k:
            raise SystemExit(f"preprocess: category {cat!r} has {n} usable image(s), fewer than data.folds={k}")
    folds = None
    for groups, what in ((duplicates.training_groups(dups, index.image_id), "near and identical"),
                         (identical, "byte-identical")):
        try:
            fold = make_folds(index.image_id, index.category, k, seed, groups)
            folds = pd.DataFrame({"image_id": list(index.image_id), "image_category": list(index.category),
                                  "fold": fold})
            check_folds(folds, k, groups)
            break
        except (ValueError, AssertionError) as err:
            folds = None
            print(f"preprocess: warning: folds grouping {what} duplicates are impossible ({err})", file=sys.stderr)
    if folds is None:
        raise SystemExit(f"preprocess: no stratified {k}-fold split keeps the duplicates of "
                         f"{ds_dir / 'duplicates.csv'} together")
    with atomic_path(path) as tmp:
        folds.to_csv(tmp, index=False)
    return folds


def remove_stale_temporaries(directory: Path) -> None:
    """Delete temporary files a killed build left behind (fsutil.atomic_path names: .<name>.<random>.tmp...)."""
    if Path(directory).exists():
        for p in Path(directory).rglob(".*.tmp*"):
            p.unlink(missing_ok=True)


def preprocess(input_dir, output_dir, size: int = 128, k: int = 3, seed: int = 42, jobs: int = -1,
               categories: Sequence[str] = CATEGORIES, force: bool = False, margin: int = 0,
               run: Optional[str] = None, models: int = 0) -> Dict:
    """Bring the keyed prep artifacts for these settings up to date; bind them to `run`.

    prep/<dataset>/ (keyed by the input fingerprint) holds index.csv, test_index.csv,
    rejects.csv and manifest.json; cache/s<S>_m<M>/ the image caches; folds/k<k>_seed<s>.csv
    the folds. Nothing already built is rebuilt or overwritten. With `run`, runs/<run>/prep.json
    records which artifacts the run consumes (rewritten only when that changes), and `models`
    how many folds get a model (`data.fold_models`; 0: all k).
    Returns a summary dict (the dataset manifest plus the binding).
    """
    input_dir = Path(input_dir)
    if not input_dir.is_dir():
        raise SystemExit(f"preprocess: input directory {input_dir} not found (try `make data`)")
    key = dataset_key(input_fingerprint(input_dir))
    ds_dir = dataset_dir(output_dir, key)
    # one builder per dataset at a time: a second preprocess (another run's make, make -j)
    # waits, then finds what the first built, instead of removing its temporary files
    with file_lock(Path(output_dir) / "prep" / f".{key}.lock",
                   message=f"preprocess: waiting for another preprocess of {ds_dir} to finish"):
        return _preprocess_locked(input_dir, output_dir, key, ds_dir, size, k, seed, jobs, categories, force,
                                  margin, run, models)


def _preprocess_locked(input_dir: Path, output_dir, key: str, ds_dir: Path, size: int, k: int, seed: int, jobs: int,
                       categories: Sequence[str], force: bool, margin: int, run: Optional[str],
                       models: int = 0) -> Dict:
    manifest_path = ds_dir / "manifest.json"
    if force and ds_dir.exists():
        import shutil

        shutil.rmtree(ds_dir)
    if not manifest_path.exists():
        remove_stale_temporaries(ds_dir)
        manifest = build_dataset(input_dir, ds_dir, size, margin, jobs)
        write_text_atomic(manifest_path, json.dumps(manifest, indent=2, sort_keys=True))
        built = True
    else:
        manifest = json.loads(manifest_path.read_text())
        built = False
    broken = broken_cache_files(cache_dir(ds_dir, size, margin))
    if broken:
        print(f"preprocess: warning: {broken[0]}; rebuilding the cache", file=sys.stderr)
        (cache_dir(ds_dir, size, margin) / "manifest.json").unlink(missing_ok=True)
    if not (cache_dir(ds_dir, size, margin) / "manifest.json").exists():
        remove_stale_temporaries(cache_dir(ds_dir, size, margin))
        build_extra_cache(ds_dir, size, margin, jobs, manifest)
    empty = [c for c in categories if not manifest["per_category"].get(c)]
    if empty:
        raise SystemExit(f"preprocess: no usable training image left for categor{'y' if len(empty) == 1 else 'ies'} "
                         f"{', '.join(empty)}; see {ds_dir / 'rejects.csv'} ({manifest['n_rejected']} rejected rows)")
    ensure_folds(ds_dir, k, seed)
    binding = RunData(Path(output_dir), key, manifest["input"], size, margin, k, seed, models)
    if run:
        bind_run(output_dir, run, binding)
    summary = {**manifest, "dataset": key, "dataset_dir": str(ds_dir), "size": size, "margin": margin,
               "folds": k, "fold_seed": seed}
    verb = "built" if built else "up to date"
    print(f"preprocess: {ds_dir} {verb}: {manifest['n_train']} training images from {len(manifest['sources'])} "
          f"source(s), {manifest['n_test']} test images, {manifest['n_rejected']} rejected row(s); "
          f"cache {cache_key(size, margin)}, folds {folds_key(k, seed)}")
    if built:
        if "report" in manifest:
            print("\n".join(prep_report.tables(manifest["report"])))
            print(f"  report: {ds_dir / 'report.md'}, duplicates: {ds_dir / 'duplicates.csv'}")
        problems = pd.read_csv(ds_dir / "rejects.csv")
        for p in problems.head(10).itertuples(index=False):
            print(f"  rejected: {p.file}: row {p.row}, column {p.column}: {p.reason}")
        if len(problems) > 10:
            print(f"  ... see {ds_dir / 'rejects.csv'}")
    return summary


def _write_rejects(path: Path, problems: Sequence[Problem]) -> None:
    frame = pd.DataFrame([dataclasses.asdict(p) for p in problems], columns=REJECT_COLUMNS)
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)
