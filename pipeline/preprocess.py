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
        manifest.json    counts and sources (written last: the dataset is complete);
        cache/s<S>_m<M>/ train.npy, test.npy: uint8 (rows, S, S, 3) RGB letterboxed images
                         for input size S and margin M, manifest.json (written last);
        folds/k<k>_seed<s>.csv   image_id, image_category, fold — made once, never overwritten.
    OUTPUT/runs/<run>/prep.json            which dataset, cache and folds the run consumes.

Letterbox transforms are derived from each image's size and the cache's (S, M)
(`letterbox_table`), never stored, so no stage can read one cache's transform
for another's pixels. Every output is written to a temporary file and renamed.

CLI: python -m pipeline.preprocess --input DIR --output DIR [--config C] [--run RUN] [--force]
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
                jobs: int = -1, desc: str = "images", margin: int = 0, skip=None):
    """Load `paths` in parallel and stream them into a uint8 .npy file (N, S, S, 3) (read back as a memmap).

    keypoints: (N, 24, 3) to check bounds, or None. `skip(i)` true: row i is left black
    unread. Returns (sizes (N, 2) int,
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
        items = [(i, p, None if keypoints is None else keypoints[i]) for i, p in enumerate(paths)
                 if skip is None or not skip(i)]
        chunks = [items[i:i + CHUNK] for i in range(0, len(items), CHUNK)]
        # worker processes write their images straight into the file: only small metadata
        # comes back (no pickled images), no GIL contention, memory flat in N
        runner = Parallel(n_jobs=jobs, return_as="generator_unordered", pre_dispatch="2*n_jobs")
        with tqdm(total=len(items), desc=desc, unit="img", disable=not sys.stderr.isatty() and n < 1) as bar:
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


# --------------------------------------------------------------------------- keyed layout


def input_fingerprint(input_dir) -> str:
    """Hash of what the parsed dataset depends on: every annotation/test CSV and image file under
    `input_dir` (relative path, size, modification time). Relative paths: a copied or moved data
    directory that keeps file times (cp -a, rsync -a) keeps its fingerprint."""
    input_dir = Path(input_dir)
    h = hashlib.sha1(b"fashionai-dataset-v2")
    files = sorted(input_dir.glob("*/Annotations/*.csv")) + sorted(input_dir.glob("test/*.csv"))
    for images in sorted(input_dir.glob("*/Images")):
        files += sorted(p for p in images.rglob("*") if p.is_file())
    for path in files:
        st = path.stat()
        h.update(f"{path.relative_to(input_dir)}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def dataset_key(fingerprint: str) -> str:
    return f"ds-{fingerprint[:12]}"


def cache_key(size: int, margin: int) -> str:
    return f"s{size}_m{margin}"


def folds_key(k: int, seed: int) -> str:
    return f"k{k}_seed{seed}"


def dataset_dir(output, key: str) -> Path:
    return Path(output) / "prep" / key


def cache_dir(ds_dir, size: int, margin: int) -> Path:
    return Path(ds_dir) / "cache" / cache_key(size, margin)


def folds_path(ds_dir, k: int, seed: int) -> Path:
    return Path(ds_dir) / "folds" / f"{folds_key(k, seed)}.csv"


def cache_path(ds_dir, split: str, size: int, margin: int) -> Path:
    return cache_dir(ds_dir, size, margin) / f"{split}.npy"


def load_cache(ds_dir, split: str, size: int, margin: int) -> np.ndarray:
    """An image cache as a read-only memmap (N, S, S, 3) uint8 RGB; row i is index row `cache_row == i`."""
    return np.load(cache_path(ds_dir, split, size, margin), mmap_mode="r")


# --------------------------------------------------------------------------- index files


@dataclasses.dataclass
class Index:
    """A loaded index. keypoints: (N, 24, 3) original pixels (absent: -1);
    sizes: (N, 2) width, height; params: (N, 4) original → input transform of the
    cache it was loaded for (None when loaded without an input size); cache_row: (N,)."""

    frame: pd.DataFrame
    image_id: np.ndarray
    category: np.ndarray
    keypoints: Optional[np.ndarray]
    sizes: np.ndarray
    params: Optional[np.ndarray]
    cache_row: np.ndarray


def _to_frame(ids, source_ids, sources, cats, files, sizes, rows, kps) -> pd.DataFrame:
    frame = pd.DataFrame({
        "image_id": ids, "source": sources, "source_image_id": source_ids, "image_category": cats,
        "file": files, "width": sizes[:, 0], "height": sizes[:, 1], "cache_row": rows,
    })
    if kps is not None:
        for k, name in enumerate(KEYPOINTS):
            frame[name] = [format_cell(*p[k]) for p in kps]
    return frame


def letterbox_table(sizes: np.ndarray, size: int, margin: int) -> np.ndarray:
    """Letterbox transforms (N, 4) of images of sizes (N, 2) for an S=size input with `margin`."""
    return np.array([codec.letterbox_params(int(w), int(h), size, margin) for w, h in sizes],
                    np.float64).reshape(-1, 4)


def load_index(ds_dir, split: str = "train", size: Optional[int] = None, margin: int = 0) -> Index:
    """Read index.csv (split='train') or test_index.csv (split='test') of a dataset directory.

    With `size`, `params` holds each image's letterbox transform into that cache.
    """
    path = Path(ds_dir) / ("index.csv" if split == "train" else "test_index.csv")
    frame = pd.read_csv(path, keep_default_na=False, dtype={"image_id": str, "file": str})
    kps = None
    if KEYPOINTS[0] in frame.columns:
        kps = np.array([[parse_cell(c) for c in row] for row in frame[list(KEYPOINTS)].to_numpy()],
                       dtype=np.int64).reshape(-1, len(KEYPOINTS), 3)
    sizes = frame[["width", "height"]].to_numpy(np.int64)
    params = None if size is None else letterbox_table(sizes, size, margin)
    return Index(frame, frame["image_id"].to_numpy(object), frame["image_category"].to_numpy(object), kps,
                 sizes, params, frame["cache_row"].to_numpy(np.int64))


def read_folds(path, image_id: Sequence[str]) -> np.ndarray:
    """Fold of each image in `image_id` (N,) from a folds file; KeyError names a missing image."""
    folds = pd.read_csv(path, dtype={"image_id": str}).set_index("image_id")["fold"]
    missing = pd.Index(image_id).difference(folds.index)
    if len(missing):
        raise KeyError(f"{path}: no fold for {missing[0]!r} (rerun make preprocess)")
    return folds.loc[list(image_id)].to_numpy()


# --------------------------------------------------------------------------- what a run consumes


class PrepMismatch(ValueError):
    """A stage was handed prep artifacts built for other settings."""


@dataclasses.dataclass(frozen=True)
class RunData:
    """The prep artifacts one run consumes (runs/<run>/prep.json): one dataset, its folds file,
    and the image cache of the run's (input size, margin)."""

    output: Path
    dataset: str
    input: str
    size: int
    margin: int
    k: int
    seed: int

    @property
    def ds_dir(self) -> Path:
        return dataset_dir(self.output, self.dataset)

    @property
    def folds_file(self) -> Path:
        return folds_path(self.ds_dir, self.k, self.seed)

    @property
    def test_csv(self) -> Path:
        return Path(self.input) / "test" / "test.csv"

    @property
    def has_test(self) -> bool:
        return (self.ds_dir / "test_index.csv").exists()

    def identity(self, with_cache: bool = True) -> Dict[str, str]:
        """Keys of the artifacts consumed: what downstream records hold as their upstream identity."""
        ids = {"dataset": self.dataset, "folds": folds_key(self.k, self.seed)}
        if with_cache:
            ids["cache"] = cache_key(self.size, self.margin)
        return ids

    def train_index(self) -> Index:
        return load_index(self.ds_dir, "train", self.size, self.margin)

    def test_index(self) -> Optional[Index]:
        return load_index(self.ds_dir, "test", self.size, self.margin) if self.has_test else None

    def folds(self, image_id: Sequence[str]) -> np.ndarray:
        return read_folds(self.folds_file, image_id)

    def cache(self, split: str) -> np.ndarray:
        return load_cache(self.ds_dir, split, self.size, self.margin)

    def to_dict(self) -> Dict:
        return {"dataset": self.dataset, "input": self.input, "size": self.size, "margin": self.margin,
                "k": self.k, "seed": self.seed}


def prep_ref_path(output, run: str) -> Path:
    return Path(output) / "runs" / run / "prep.json"


def bind_run(output, run: str, data: RunData) -> bool:
    """Record in runs/<run>/prep.json that `run` consumes `data` (rewritten only on change)."""
    from .artifacts import write_if_changed

    return write_if_changed(prep_ref_path(output, run), json.dumps(data.to_dict(), indent=2, sort_keys=True))


def run_data(output, run: str, cfg=None) -> RunData:
    """The prep artifacts bound to `run` by `make preprocess`; with `cfg`, refuse a mismatch.

    Raises FileNotFoundError when the run was never preprocessed and PrepMismatch
    (naming both settings) when the binding was made for another input size,
    margin, k or fold seed than `cfg` asks for.
    """
    path = prep_ref_path(output, run)
    if not path.exists():
        raise FileNotFoundError(f"{path} missing: run `make preprocess` for run {run!r} first")
    ref = json.loads(path.read_text())
    data = RunData(Path(output), ref["dataset"], ref["input"], ref["size"], ref["margin"], ref["k"], ref["seed"])
    if cfg is not None:
        want = {"size": cfg.model.input_size, "margin": cfg.model.margin, "k": cfg.data.folds,
                "seed": cfg.data.fold_seed}
        have = {key: getattr(data, key) for key in want}
        if want != have:
            raise PrepMismatch(f"run {run!r}: {path} was built for input size {have['size']}, margin "
                               f"{have['margin']}, {have['k']} folds, fold seed {have['seed']}, but the config "
                               f"asks for input size {want['size']}, margin {want['margin']}, {want['k']} folds, "
                               f"fold seed {want['seed']}; rerun `make preprocess` with this config")
    for needed in (data.ds_dir / "index.csv", data.folds_file):
        if not needed.exists():
            raise FileNotFoundError(f"{needed} missing (bound by {path}); rerun `make preprocess`")
    return data


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
            files.append(str(split_dir / iid))
            kps.append(pts)
            csv_rows.append((str(csv_path), int(row)))
    kps_arr = np.array(kps, np.int64).reshape(-1, len(KEYPOINTS), 3)
    return sources, (ids, source_ids, source_names, cats, files, kps_arr, csv_rows), problems


def build_dataset(input_dir, ds_dir: Path, size: int, margin: int, jobs: int) -> Dict:
    """Parse and validate every source of `input_dir` into `ds_dir` (index, test index, rejects),
    building the (size, margin) image cache in the same decoding pass. Returns the dataset manifest.

    Cache rows follow the parse order of all candidate rows (rejected rows stay black), so every
    later cache of this dataset puts each image at the same `cache_row`.
    """
    sources, rows, problems = _parse_sources(input_dir)
    ids, source_ids, source_names, cats, files, kps_arr, csv_rows = rows
    cdir = cache_dir(ds_dir, size, margin)
    sizes, _, errors = build_cache(files, kps_arr, size, cdir / "train.npy", jobs, desc="train images",
                                   margin=margin)
    for pos, (reason, column) in sorted(errors.items()):
        problems.append(Problem(csv_rows[pos][0], csv_rows[pos][1], column, f"{files[pos]}: {reason}"))
    sel = np.array([i for i in range(len(ids)) if i not in errors], np.int64)
    frame = _to_frame(np.array(ids, object)[sel], np.array(source_ids, object)[sel],
                      np.array(source_names, object)[sel], np.array(cats, object)[sel],
                      np.array(files, object)[sel], sizes[sel], sel, kps_arr[sel])
    n_test, test_rows = 0, 0
    test_csv = Path(input_dir) / "test" / "test.csv"
    if test_csv.exists():
        t_frame, t_problems = _build_test(input_dir, test_csv, cdir / "test.npy", size, margin, jobs)
        problems += t_problems
        with atomic_path(ds_dir / "test_index.csv") as tmp:
            t_frame.to_csv(tmp, index=False)
        n_test = test_rows = len(t_frame)
    with atomic_path(ds_dir / "index.csv") as tmp:
        frame.to_csv(tmp, index=False)
    _write_rejects(ds_dir / "rejects.csv", problems)
    manifest = {
        "input": str(Path(input_dir).resolve()), "n_candidates": len(ids), "n_train": int(len(frame)),
        "n_test": n_test, "n_test_rows": test_rows, "n_rejected": len(problems),
        "per_category": {c: int(v) for c, v in frame["image_category"].value_counts().sort_index().items()},
        "sources": [s[0] for s in sources],
    }
    _finish_cache(cdir, size, margin, manifest)
    return manifest


def _build_test(input_dir, test_csv: Path, path: Path, size: int, margin: int, jobs: int):
    """Test index frame (every row of test.csv, in order) and its problems; cache written to `path`."""
    t_ids, t_cats = read_test_list(test_csv)
    t_files = [str(Path(input_dir) / "test" / i) for i in t_ids]
    t_sizes, _, t_errors = build_cache(t_files, None, size, path, jobs, desc="test images", margin=margin)
    problems = []
    for pos, (reason, _) in sorted(t_errors.items()):
        # a test row cannot be dropped: predict on a black image of an assumed 512x512 size
        problems.append(Problem(str(test_csv), pos + 2, "image_id", f"{t_files[pos]}: {reason} "
                                "(kept; predicted on a blank 512x512 image)"))
        t_sizes[pos] = (512, 512)
    frame = _to_frame(t_ids, t_ids, ["test"] * len(t_ids), t_cats, t_files, t_sizes, np.arange(len(t_ids)), None)
    return frame, problems


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
        _, _, errors = build_cache(files, None, size, cdir / f"{split}.npy", jobs, desc=f"{split} images",
                                   margin=margin, skip=lambda i: i not in wanted)
        bad = {i: e for i, e in errors.items() if i in wanted and split == "train"}
        if bad:
            pos, (reason, _) = next(iter(sorted(bad.items())))
            raise SystemExit(f"preprocess: {files[pos]}: {reason}, although it was readable when {ds_dir} was "
                             "built; the input changed under the same fingerprint — rerun with --force")
    _finish_cache(cdir, size, margin, dataset_manifest)


def ensure_folds(ds_dir: Path, k: int, seed: int) -> pd.DataFrame:
    """The (k, seed) folds of a dataset: made once, stored under folds/, reused and leak-checked."""
    path = folds_path(ds_dir, k, seed)
    index = load_index(ds_dir, "train")
    if path.exists():
        folds = pd.read_csv(path, dtype={"image_id": str})
        if list(folds["image_id"]) != list(index.image_id):
            raise AssertionError(f"{path} does not cover the images of {ds_dir / 'index.csv'}")
        check_folds(folds, k)
        return folds
    for cat, n in pd.Series(index.category).value_counts().items():
        if n < k:
            raise SystemExit(f"preprocess: category {cat!r} has {n} usable image(s), fewer than data.folds={k}")
    folds = pd.DataFrame({"image_id": list(index.image_id), "image_category": list(index.category),
                          "fold": make_folds(index.image_id, index.category, k, seed)})
    check_folds(folds, k)
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
               run: Optional[str] = None) -> Dict:
    """Bring the keyed prep artifacts for these settings up to date; bind them to `run`.

    prep/<dataset>/ (keyed by the input fingerprint) holds index.csv, test_index.csv,
    rejects.csv and manifest.json; cache/s<S>_m<M>/ the image caches; folds/k<k>_seed<s>.csv
    the folds. Nothing already built is rebuilt or overwritten. With `run`, runs/<run>/prep.json
    records which artifacts the run consumes (rewritten only when that changes).
    Returns a summary dict (the dataset manifest plus the binding).
    """
    input_dir = Path(input_dir)
    if not input_dir.is_dir():
        raise SystemExit(f"preprocess: input directory {input_dir} not found (try `make data`)")
    key = dataset_key(input_fingerprint(input_dir))
    ds_dir = dataset_dir(output_dir, key)
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
    if not (cache_dir(ds_dir, size, margin) / "manifest.json").exists():
        remove_stale_temporaries(cache_dir(ds_dir, size, margin))
        build_extra_cache(ds_dir, size, margin, jobs, manifest)
    empty = [c for c in categories if not manifest["per_category"].get(c)]
    if empty:
        raise SystemExit(f"preprocess: no usable training image left for categor{'y' if len(empty) == 1 else 'ies'} "
                         f"{', '.join(empty)}; see {ds_dir / 'rejects.csv'} ({manifest['n_rejected']} rejected rows)")
    ensure_folds(ds_dir, k, seed)
    binding = RunData(Path(output_dir), key, manifest["input"], size, margin, k, seed)
    if run:
        bind_run(output_dir, run, binding)
    summary = {**manifest, "dataset": key, "dataset_dir": str(ds_dir), "size": size, "margin": margin,
               "folds": k, "fold_seed": seed}
    verb = "built" if built else "up to date"
    print(f"preprocess: {ds_dir} {verb}: {manifest['n_train']} training images from {len(manifest['sources'])} "
          f"source(s), {manifest['n_test']} test images, {manifest['n_rejected']} rejected row(s); "
          f"cache {cache_key(size, margin)}, folds {folds_key(k, seed)}")
    if built:
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


def main(argv=None) -> int:
    parser = stage_parser("Parse, validate, split folds and cache images; bind them to a run.")
    parser.add_argument("--input", default="input")
    parser.add_argument("--force", action="store_true", help="rebuild the dataset even when up to date")
    args = parser.parse_args(argv)
    cfg = config_from_args(args)
    run = args.run or cfg.name
    try:
        summary = preprocess(args.input, args.output, cfg.model.input_size, cfg.data.folds, cfg.data.fold_seed,
                             cfg.data.jobs, cfg.data.categories, args.force, cfg.model.margin, run=run)
    except AssertionError as err:
        print(f"preprocess: error: {err}", file=sys.stderr)
        return 1
    save_config(cfg, Path(summary["dataset_dir"]) / f"config_{run}.yaml")
    return 0


if __name__ == "__main__":
    sys.exit(main())
