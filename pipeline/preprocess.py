"""Preprocess: parse and validate annotations, split folds, build image caches.

Reads every training source under INPUT (see tianchi.discover_train_sources)
and `test/test.csv`, and writes into OUTPUT/prep/:

* index.csv       one row per usable training image: unique `image_id`
                  (`<source>/<id in its csv>`), category, original size, the
                  letterbox transform (sx, sy, ox, oy: original → input pixels),
                  its row in the cache, and the 24 `x_y_v` cells;
* test_index.csv  the same (without keypoints) for every row of test.csv, in order;
* folds.csv       image_id, image_category, fold (stratified by category, seeded,
                  made once and reused while the image set and k are unchanged);
* rejects.csv     file, row, column, reason for every rejected row;
* cache_<split>_<S>.u8   uint8 memmap (N, S, S, 3) RGB letterboxed images;
* manifest.json   what the outputs were built from (a rerun with unchanged
                  inputs does nothing).

CLI: python -m pipeline.preprocess --input DIR --output DIR [--config C]
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import pandas as pd

from . import codec
from .config import config_from_args, save_config, stage_parser
from .fsutil import atomic_path, write_text_atomic
from .keypoints import CATEGORIES, KEYPOINTS
from .tianchi import Problem, discover_train_sources, format_cell, parse_cell, read_annotations, read_test_list

CHUNK = 32
REJECT_COLUMNS = ["file", "row", "column", "reason"]


class ImageError(ValueError):
    """An image that cannot be used (missing, truncated, corrupt)."""


# --------------------------------------------------------------------------- images


def _image_size(data: bytes) -> Tuple[int, int]:
    """(width, height) from the header of JPEG or PNG bytes, whatever the file name."""
    from PIL import Image  # header only; pillow comes with matplotlib

    try:
        with Image.open(io.BytesIO(data)) as im:
            return im.size
    except Exception as err:  # noqa: BLE001 - PIL raises many kinds
        raise ImageError(f"not a readable image ({type(err).__name__})") from None


def _check_complete(data: bytes) -> None:
    """Reject truncated JPEG/PNG files (decoders silently fill the missing part)."""
    if data[:2] == b"\xff\xd8":
        if b"\xff\xd9" not in data[-64:]:
            raise ImageError("truncated JPEG (no end-of-image marker)")
    elif data[:8] == b"\x89PNG\r\n\x1a\n":
        if b"IEND" not in data[-32:]:
            raise ImageError("truncated PNG (no IEND chunk)")


def load_letterboxed(path, size: int, margin: int = 0) -> Tuple[np.ndarray, int, int, np.ndarray]:
    """Read an image and letterbox it into a size×size RGB uint8 array.

    JPEGs are decoded at 1/2, 1/4 or 1/8 resolution when the target allows it.
    Grayscale and PNG-bytes-under-.jpg files are handled. Returns
    (image (S, S, 3) uint8, width, height, params (4,) original → input pixels).
    Raises ImageError with the reason.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ImageError(f"cannot read image: {err.strerror or err}") from None
    if not data:
        raise ImageError("empty image file")
    _check_complete(data)
    width, height = _image_size(data)
    reduce = 1
    for r in (8, 4, 2):
        # only exact reductions: a side not divisible by r decodes to ceil(side / r) pixels,
        # which would stretch the picture by up to r-1 original pixels against `params`
        if max(width, height) / r >= size - 2 * margin and width % r == 0 and height % r == 0:
            reduce = r
            break
    flag = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2,
            4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8}[reduce]
    img = cv2.imdecode(np.frombuffer(data, np.uint8), flag)
    if img is None:
        raise ImageError("corrupt image (decoder failed)")
    params = codec.letterbox_params(width, height, size, margin)
    new_w, new_h = codec.resized_shape(params, width, height)
    # area averaging where the image shrinks a lot (anti-aliasing); bilinear for small changes
    interp = cv2.INTER_AREA if img.shape[1] > new_w else cv2.INTER_LINEAR
    img = cv2.resize(img, (new_w, new_h), interpolation=interp)
    out = np.zeros((size, size, 3), np.uint8)
    ox, oy = int(params[2]), int(params[3])
    out[oy:oy + new_h, ox:ox + new_w] = img[:, :, ::-1]  # BGR → RGB
    return out, width, height, params


def _load_chunk(items: Sequence[Tuple[int, str, Optional[np.ndarray]]], size: int, margin: int,
                cache_file: str, offset: int):
    """Worker: load (position, path, keypoints (24,3) or None) items straight into the cache file.

    Image `pos` is written with os.pwrite at offset + pos * S*S*3 (plain file
    I/O: the pages stay in the OS cache, not in any process's memory).
    Returns (position, info, column) per item: info is (width, height, params)
    for a good image, else the reason it was rejected (column names the field).
    """
    cv2.setNumThreads(1)
    cache_fd = os.open(cache_file, os.O_WRONLY)
    try:
        return [_load_one(pos, path, kps, size, margin, cache_fd, offset) for pos, path, kps in items]
    finally:
        os.close(cache_fd)


def _load_one(pos: int, path: str, kps: Optional[np.ndarray], size: int, margin: int, cache_fd: int,
              offset: int):
    """One image of `_load_chunk`: checked, letterboxed, written at its row of the cache file."""
    try:
        img, w, h, params = load_letterboxed(path, size, margin)
    except ImageError as err:
        return pos, str(err), "image_id"
    if kps is not None:
        bad = np.nonzero((kps[:, 2] >= 0) & ((kps[:, 0] >= w) | (kps[:, 1] >= h)))[0]
        if bad.size:
            k = bad[0]
            return pos, f"point ({kps[k, 0]}, {kps[k, 1]}) outside the {w}x{h} image", KEYPOINTS[k]
    os.pwrite(cache_fd, img.tobytes(), offset + pos * img.nbytes)
    return pos, (w, h, params), None


def build_cache(paths: Sequence[str], keypoints: Optional[np.ndarray], size: int, cache_path: Path,
                jobs: int = -1, desc: str = "images", margin: int = 0):
    """Load `paths` in parallel and stream them into a uint8 .npy file (N, S, S, 3) (read back as a memmap).

    keypoints: (N, 24, 3) to check bounds, or None. Returns (sizes (N, 2) int,
    params (N, 4) float, errors: dict position → (reason, column)). Rows that
    failed stay black in the cache. Written to a temporary file and renamed.
    """
    from joblib import Parallel, delayed
    from tqdm import tqdm

    n = len(paths)
    sizes = np.zeros((n, 2), np.int64)
    params = np.zeros((n, 4), np.float64)
    errors: Dict[int, Tuple[str, str]] = {}
    with atomic_path(cache_path) as tmp:
        header = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(max(n, 1), size, size, 3))
        offset = header.offset  # .npy header length; the file is created sparse at full size
        del header
        items = [(i, p, None if keypoints is None else keypoints[i]) for i, p in enumerate(paths)]
        chunks = [items[i:i + CHUNK] for i in range(0, n, CHUNK)]
        # worker processes write their images straight into the file: only small metadata
        # comes back (no pickled images), no GIL contention, memory flat in N
        runner = Parallel(n_jobs=jobs, return_as="generator_unordered", pre_dispatch="2*n_jobs")
        with tqdm(total=n, desc=desc, unit="img", disable=not sys.stderr.isatty() and n < 1) as bar:
            for results in runner(delayed(_load_chunk)(c, size, margin, str(tmp), offset) for c in chunks):
                for pos, info, column in results:
                    if column is not None:
                        errors[pos] = (info, column)
                    else:
                        sizes[pos] = info[:2]
                        params[pos] = info[2]
                bar.update(len(results))
    return sizes, params, errors


# --------------------------------------------------------------------------- folds


def make_folds(image_id: Sequence[str], category: Sequence[str], k: int, seed: int) -> np.ndarray:
    """Stratified (by category) k-fold assignment; returns (N,) int fold ids."""
    from sklearn.model_selection import StratifiedKFold

    category = np.asarray(category)
    counts = pd.Series(category).value_counts()
    small = counts[counts < k]
    if len(small):
        raise ValueError(f"category {small.index[0]!r} has {small.iloc[0]} usable image(s), "
                         f"fewer than data.folds={k}")
    folds = np.full(len(image_id), -1, np.int64)
    splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    for f, (_, val) in enumerate(splitter.split(np.zeros(len(category)), category)):
        folds[val] = f
    return folds


def check_folds(folds: pd.DataFrame, k: int) -> None:
    """Leak check: every image in exactly one fold, every fold holds every category."""
    if folds["image_id"].duplicated().any():
        dup = folds.loc[folds["image_id"].duplicated(), "image_id"].iloc[0]
        raise AssertionError(f"folds.csv: image {dup!r} is in more than one fold")
    if not folds["fold"].between(0, k - 1).all():
        raise AssertionError(f"folds.csv: fold ids outside 0..{k - 1}")
    for cat, group in folds.groupby("image_category"):
        missing = set(range(k)) - set(group["fold"])
        if missing:
            raise AssertionError(f"folds.csv: category {cat} has no image in fold(s) {sorted(missing)}")


def load_or_make_folds(path: Path, image_id, category, k: int, seed: int) -> pd.DataFrame:
    """Reuse folds.csv when it covers exactly these images with k folds; else make it."""
    if path.exists():
        old = pd.read_csv(path)
        if set(old["image_id"]) == set(image_id) and old["fold"].nunique() == k:
            check_folds(old, k)
            return old
        print(f"preprocess: image set or k changed, remaking {path}")
    folds = pd.DataFrame({"image_id": list(image_id), "image_category": list(category),
                          "fold": make_folds(image_id, category, k, seed)})
    check_folds(folds, k)
    with atomic_path(path) as tmp:
        folds.to_csv(tmp, index=False)
    return folds


# --------------------------------------------------------------------------- index files


@dataclasses.dataclass
class Index:
    """A loaded index. keypoints: (N, 24, 3) original pixels (absent: -1);
    sizes: (N, 2) width, height; params: (N, 4) original → input transform."""

    frame: pd.DataFrame
    image_id: np.ndarray
    category: np.ndarray
    keypoints: Optional[np.ndarray]
    sizes: np.ndarray
    params: np.ndarray
    cache_row: np.ndarray


def _to_frame(ids, source_ids, sources, cats, files, sizes, params, rows, kps) -> pd.DataFrame:
    frame = pd.DataFrame({
        "image_id": ids, "source": sources, "source_image_id": source_ids, "image_category": cats,
        "file": files, "width": sizes[:, 0], "height": sizes[:, 1],
        "sx": params[:, 0], "sy": params[:, 1], "ox": params[:, 2], "oy": params[:, 3],
        "cache_row": rows,
    })
    if kps is not None:
        for k, name in enumerate(KEYPOINTS):
            frame[name] = [format_cell(*p[k]) for p in kps]
    return frame


def load_index(prep_dir, split: str = "train") -> Index:
    """Read index.csv (split='train') or test_index.csv (split='test')."""
    path = Path(prep_dir) / ("index.csv" if split == "train" else "test_index.csv")
    frame = pd.read_csv(path, keep_default_na=False)
    kps = None
    if KEYPOINTS[0] in frame.columns:
        kps = np.array([[parse_cell(c) for c in row] for row in frame[list(KEYPOINTS)].to_numpy()],
                       dtype=np.int64).reshape(-1, len(KEYPOINTS), 3)
    return Index(frame, frame["image_id"].to_numpy(object), frame["image_category"].to_numpy(object), kps,
                 frame[["width", "height"]].to_numpy(np.int64),
                 frame[["sx", "sy", "ox", "oy"]].to_numpy(np.float64),
                 frame["cache_row"].to_numpy(np.int64))


def load_folds(prep_dir, image_id: Sequence[str]) -> np.ndarray:
    """Fold of each image in `image_id` (N,), from folds.csv; KeyError names a missing image."""
    folds = pd.read_csv(Path(prep_dir) / "folds.csv").set_index("image_id")["fold"]
    missing = pd.Index(image_id).difference(folds.index)
    if len(missing):
        raise KeyError(f"{Path(prep_dir) / 'folds.csv'}: no fold for {missing[0]!r} (rerun make preprocess)")
    return folds.loc[list(image_id)].to_numpy()


def cache_path(prep_dir, split: str, size: int) -> Path:
    return Path(prep_dir) / f"cache_{split}_{size}.npy"


def load_cache(prep_dir, split: str, size: int) -> np.ndarray:
    """The image cache as a read-only memmap (N, S, S, 3) uint8 RGB."""
    return np.load(cache_path(prep_dir, split, size), mmap_mode="r")


# --------------------------------------------------------------------------- main stage


def _fingerprint(input_dir: Path, size: int, k: int, seed: int, categories: Sequence[str] = CATEGORIES,
                 margin: int = 0) -> str:
    """Hash of what preprocessing depends on: annotation files, image files, settings."""
    h = hashlib.sha1(f"{size}/{k}/{seed}/{','.join(categories)}/{margin}".encode())
    for path in sorted(input_dir.glob("*/Annotations/*.csv")) + sorted(input_dir.glob("test/*.csv")):
        st = path.stat()
        h.update(f"{path}:{st.st_size}:{st.st_mtime_ns}".encode())
    for images in sorted(input_dir.glob("*/Images")):
        for path in sorted(images.rglob("*")):
            st = path.stat()
            h.update(f"{path.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()


def preprocess(input_dir, output_dir, size: int = 128, k: int = 3, seed: int = 42, jobs: int = -1,
               categories: Sequence[str] = CATEGORIES, force: bool = False, margin: int = 0) -> Dict:
    """Run the stage; returns a summary dict (also saved as prep/manifest.json)."""
    input_dir, prep = Path(input_dir), Path(output_dir) / "prep"
    prep.mkdir(parents=True, exist_ok=True)
    manifest_path = prep / "manifest.json"
    fingerprint = _fingerprint(input_dir, size, k, seed, categories, margin)
    if not force and manifest_path.exists():
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("fingerprint") == fingerprint and all(
                (prep / f).exists() for f in manifest.get("files", [])):
            print(f"preprocess: {prep} is up to date ({manifest['n_train']} training images)")
            return manifest

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
            if cat not in categories:
                continue
            ids.append(f"{name}/{iid}")
            source_ids.append(iid)
            source_names.append(name)
            cats.append(cat)
            files.append(str(split_dir / iid))
            kps.append(pts)
            csv_rows.append((str(csv_path), int(row)))
    kps_arr = np.array(kps, np.int64).reshape(-1, len(KEYPOINTS), 3)
    sizes, params, errors = build_cache(files, kps_arr, size, cache_path(prep, "train", size), jobs,
                                        desc="train images", margin=margin)
    for pos, (reason, column) in sorted(errors.items()):
        problems.append(Problem(csv_rows[pos][0], csv_rows[pos][1], column, f"{files[pos]}: {reason}"))
    keep = np.array([i not in errors for i in range(len(ids))], bool)
    sel = np.nonzero(keep)[0]
    frame = _to_frame(np.array(ids, object)[sel], np.array(source_ids, object)[sel],
                      np.array(source_names, object)[sel], np.array(cats, object)[sel],
                      np.array(files, object)[sel], sizes[sel], params[sel], sel, kps_arr[sel])
    empty = [c for c in categories if c not in set(frame["image_category"])]
    _write_rejects(prep / "rejects.csv", problems)
    if empty:
        raise SystemExit(f"preprocess: no usable training image left for categor{'y' if len(empty) == 1 else 'ies'} "
                         f"{', '.join(empty)}; see {prep / 'rejects.csv'} ({len(problems)} rejected rows)")
    with atomic_path(prep / "index.csv") as tmp:
        frame.to_csv(tmp, index=False)
    folds = load_or_make_folds(prep / "folds.csv", frame["image_id"], frame["image_category"], k, seed)

    n_test = 0
    test_csv = input_dir / "test" / "test.csv"
    files_written = ["index.csv", "folds.csv", "rejects.csv", cache_path(prep, "train", size).name]
    if test_csv.exists():
        t_ids, t_cats = read_test_list(test_csv)
        t_files = [str(input_dir / "test" / i) for i in t_ids]
        t_sizes, t_params, t_errors = build_cache(t_files, None, size, cache_path(prep, "test", size), jobs,
                                                  desc="test images", margin=margin)
        for pos, (reason, _) in sorted(t_errors.items()):
            # a test row cannot be dropped: predict on a black image of an assumed 512x512 size
            problems.append(Problem(str(test_csv), pos + 2, "image_id", f"{t_files[pos]}: {reason} "
                                    "(kept; predicted on a blank 512x512 image)"))
            t_sizes[pos] = (512, 512)
            t_params[pos] = codec.letterbox_params(512, 512, size, margin)
        t_frame = _to_frame(t_ids, t_ids, ["test"] * len(t_ids), t_cats, t_files, t_sizes, t_params,
                            np.arange(len(t_ids)), None)
        with atomic_path(prep / "test_index.csv") as tmp:
            t_frame.to_csv(tmp, index=False)
        _write_rejects(prep / "rejects.csv", problems)
        n_test = len(t_ids)
        files_written += ["test_index.csv", cache_path(prep, "test", size).name]

    manifest = {
        "fingerprint": fingerprint, "input": str(input_dir), "size": size, "margin": margin, "folds": k,
        "fold_seed": seed,
        "n_train": int(len(frame)), "n_test": n_test, "n_rejected": len(problems),
        "per_category": {c: int(v) for c, v in folds["image_category"].value_counts().items()},
        "sources": [s[0] for s in sources], "files": files_written,
    }
    write_text_atomic(manifest_path, json.dumps(manifest, indent=2))
    print(f"preprocess: {len(frame)} training images from {len(sources)} source(s), {n_test} test images, "
          f"{len(problems)} rejected row(s) → {prep}")
    for p in problems[:10]:
        print(f"  rejected: {p}")
    if len(problems) > 10:
        print(f"  ... see {prep / 'rejects.csv'}")
    return manifest


def _write_rejects(path: Path, problems: Sequence[Problem]) -> None:
    frame = pd.DataFrame([dataclasses.asdict(p) for p in problems], columns=REJECT_COLUMNS)
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


def main(argv=None) -> int:
    parser = stage_parser("Parse, validate, split folds and cache images.", run=False)
    parser.add_argument("--input", default="input")
    parser.add_argument("--force", action="store_true", help="rebuild even when up to date")
    args = parser.parse_args(argv)
    cfg = config_from_args(args)
    preprocess(args.input, args.output, cfg.model.input_size, cfg.data.folds, cfg.data.fold_seed,
               cfg.data.jobs, cfg.data.categories, args.force, cfg.model.margin)
    save_config(cfg, Path(args.output) / "prep" / "config.yaml")
    return 0


if __name__ == "__main__":
    sys.exit(main())
