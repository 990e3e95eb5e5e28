"""Preprocess (pipeline/prep/preprocess.py) on a tiny dataset in the real layout, bad inputs included."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import (
    REPO,
    Dataset,
    cells,
    good_dataset,
    random_keypoints,
    write_csv,
    write_image,
)

from pipeline import frames
from pipeline.keypoints import CATEGORIES, KEYPOINT_INDEX
from pipeline.prep.preprocess import ImageError, load_letterboxed, preprocess
from pipeline.store.layout import cache_path, folds_path
from pipeline.store.rundata import load_cache, load_index
from pipeline.tianchi import ABSENT_CELL

SIZE, K = 64, 3
#: blouses with a bright dot at a known original pixel, annotated there (neckline_left):
#: (name, size, dot centre, dot radius); the 512x512 one goes through the reduced JPEG decoder
DOTS = [("dot_landscape", (300, 200), (150, 60), 5), ("dot_portrait", (200, 300), (57, 211), 5),
        ("dot_square", (512, 512), (301, 170), 9), ("dot_png", (340, 512), (250, 400), 6)]


def build_bad_dataset(root) -> dict:
    """Good rows in train/ and train_warm/, plus one row of every bad-input kind.

    Returns the builder, the unique ids of the good rows (`<source>/<image_id>`)
    and, per bad kind, (csv file, line, column, words of the reason) of its reject.
    """
    ds = Dataset(root, seed=0)
    good = []

    def add_good(source, *args, **kwargs):
        image_id = ds.add(source, *args, **kwargs)
        good.append(f"{source}/{image_id}")
        return image_id

    sizes = [(300, 200), (512, 512), (200, 300)]
    for cat in CATEGORIES:
        for i in range(4):
            add_good("train", cat, sizes[i % 3])
        for i in range(2):
            add_good("train_warm", cat, sizes[(i + 1) % 3])
    for name, size, dot, radius in DOTS:
        kps = random_keypoints("blouse", *size, ds.rng)
        kps[KEYPOINT_INDEX["neckline_left"]] = (*dot, 1)
        add_good("train", "blouse", size, name=name, kps=kps, dots=[dot], dot_radius=radius,
                 image="png_as_jpg" if name == "dot_png" else "jpg")
    # the same image_id in both sources: both kept, made unique by the source
    same_kps = random_keypoints("skirt", 512, 512, ds.rng)
    add_good("train", "skirt", (512, 512), name="same", kps=same_kps)
    add_good("train_warm", "skirt", (512, 512), name="same", kps=same_kps)
    # images that must be kept
    gray_id = add_good("train", "dress", (300, 200), name="gray", image="gray")
    png_id = add_good("train_warm", "outwear", (200, 300), name="png", image="png_as_jpg")

    train_csv = str(ds.csv_path("train"))
    warm_csv = str(ds.csv_path("train_warm"))
    bad = {}
    ds.add("train", "blouse", (300, 200), name="truncated", image="truncated", tag="truncated")
    bad["truncated"] = (train_csv, ds.lines[("train", "truncated")], "image_id", "truncated")
    ds.add("train", "outwear", (300, 200), name="missing", image="missing", tag="missing")
    bad["missing"] = (train_csv, ds.lines[("train", "missing")], "image_id", "cannot read")
    k = random_keypoints("dress", 300, 200, ds.rng)
    fields = ["Images/dress/malformed.jpg", "dress", *cells(k)]
    fields[2 + KEYPOINT_INDEX["armpit_right"]] = "12_13"
    line = ds.add_raw("train_warm", fields)
    bad["malformed"] = (warm_csv, line, "armpit_right", "not of the form")
    line = ds.add_raw("train", ["Images/hat/h.jpg", "hat", *[ABSENT_CELL] * 24])
    bad["category"] = (train_csv, line, "image_category", "unknown category")
    first = add_good("train", "trousers", (300, 200), name="dup", tag="dup-first")
    line = ds.add_raw("train", [first, "trousers", *cells(random_keypoints("trousers", 300, 200, ds.rng))],
                      tag="dup-second")
    bad["duplicate"] = (train_csv, line, "image_id", "duplicate")
    k = random_keypoints("trousers", 300, 200, ds.rng)
    k[KEYPOINT_INDEX["crotch"]] = (301, 100, 1)  # x == width + 1: two past the last column (x == width is clipped)
    ds.add("train", "trousers", (300, 200), name="outside", kps=k, tag="outside")
    bad["outside"] = (train_csv, ds.lines[("train", "outside")], "crotch", "outside")
    k = random_keypoints("skirt", 300, 200, ds.rng)
    k[KEYPOINT_INDEX["hemline_left"]] = (10, 201, 0)  # y == height + 1, occluded: still checked
    ds.add("train_warm", "skirt", (300, 200), name="outside_y", kps=k, tag="outside_y")
    bad["outside_y"] = (warm_csv, ds.lines[("train_warm", "outside_y")], "hemline_left", "outside")

    for cat in CATEGORIES:
        ds.add_test(cat, (340, 512))
    ds.add_test("dress", (512, 300))
    ds.write()
    return {"ds": ds, "good": good, "bad": bad, "gray_id": gray_id, "png_id": png_id}


@pytest.fixture(scope="module")
def prepped(tmp_path_factory):
    root = tmp_path_factory.mktemp("prep")
    info = build_bad_dataset(root / "input")
    manifest = preprocess(root / "input", root / "output", size=SIZE, k=K, seed=0, jobs=1)
    info.update(root=root, prep=Path(manifest["dataset_dir"]), manifest=manifest)
    return info


def test_exactly_the_bad_rows_are_rejected(prepped):
    rejects = pd.read_csv(prepped["prep"] / "rejects.csv")
    assert list(rejects.columns) == ["file", "row", "column", "reason"]
    got = {(r.file, int(r.row), r.column) for r in rejects.itertuples()}
    want = {(f, line, col) for f, line, col, _ in prepped["bad"].values()}
    assert got == want
    for f, line, col, words in prepped["bad"].values():
        reason = rejects[(rejects.file == f) & (rejects.row == line)].reason.iloc[0]
        assert words in reason, (line, reason)
    assert prepped["manifest"]["n_rejected"] == len(want)


def test_good_rows_in_index_and_folds(prepped):
    ds = prepped["ds"]
    index = load_index(prepped["prep"])
    expected = prepped["good"]
    assert len(expected) == 5 * 6 + 5 + len(DOTS)
    assert sorted(index.image_id) == sorted(expected)
    assert len(set(index.image_id)) == len(index.image_id)
    assert "train/Images/skirt/same.jpg" in set(index.image_id)
    assert "train_warm/Images/skirt/same.jpg" in set(index.image_id)
    assert f"train/{prepped['gray_id']}" in set(index.image_id)      # grayscale JPEG kept
    assert f"train_warm/{prepped['png_id']}" in set(index.image_id)  # PNG bytes under .jpg kept
    folds = pd.read_csv(folds_path(prepped["prep"], K, 0))
    assert sorted(folds.image_id) == sorted(expected)
    assert prepped["manifest"]["n_train"] == len(expected)
    # keypoints, sizes and sources survive the round trip through index.csv
    frame = index.frame.set_index("image_id")
    checked = 0
    for (source, tag), kps in ds.kps.items():
        if not tag.startswith("Images/"):
            continue
        iid = f"{source}/{tag}"
        pos = list(index.image_id).index(iid)
        np.testing.assert_array_equal(index.keypoints[pos], kps)
        assert tuple(index.sizes[pos]) == ds.sizes[(source, tag)]
        assert frame.loc[iid, "source"] == source and frame.loc[iid, "source_image_id"] == tag
        assert frame.loc[iid, "file"] == str(ds.root / source / tag)
        checked += 1
    assert checked == len(expected) - 1  # all good rows but the tagged first duplicate


def test_folds_stratified_and_leak_free(prepped):
    folds = pd.read_csv(folds_path(prepped["prep"], K, 0))
    assert set(folds.fold) == set(range(K))
    assert not folds.image_id.duplicated().any()
    table = pd.crosstab(folds.image_category, folds.fold)
    assert set(table.index) == set(CATEGORIES)
    assert (table > 0).all().all()  # every category in every fold
    assert (table.max(axis=1) - table.min(axis=1) <= 1).all()  # and balanced
    index = load_index(prepped["prep"])
    merged = folds.set_index("image_id").loc[index.image_id]
    assert (merged.image_category.to_numpy() == index.category).all()


@pytest.mark.parametrize("name,size,dot,radius", DOTS, ids=[d[0] for d in DOTS])
def test_cache_holds_the_letterboxed_images(prepped, name, size, dot, radius):
    index = load_index(prepped["prep"], "train", SIZE)
    cache = load_cache(prepped["prep"], "train", SIZE, 0)
    assert cache.dtype == np.uint8 and cache.shape[1:] == (SIZE, SIZE, 3)
    pos = list(index.image_id).index(f"train/Images/blouse/{name}.jpg")
    img = np.asarray(cache[index.cache_row[pos]], np.float64)
    params = index.params[pos]
    np.testing.assert_allclose(params, frames.letterbox_params(*size, SIZE))
    # the annotated dot, moved by the stored transform, is where the bright dot is in the cache
    kp = index.keypoints[pos, KEYPOINT_INDEX["neckline_left"], :2]
    assert tuple(kp) == dot
    x, y = frames.orig_to_input(kp.astype(np.float64), params)
    assert img[int(round(y)), int(round(x))].min() > 150
    lum = img.min(-1)
    bright = lum > 90
    ys, xs = np.nonzero(bright)
    assert ys.size and np.hypot(xs - x, ys - y).max() < radius * params[0] + 2  # one blob, at the point
    centroid = np.array([(xs * lum[bright]).sum(), (ys * lum[bright]).sum()]) / lum[bright].sum()
    np.testing.assert_allclose(centroid, (x, y), atol=0.2)  # a half-pixel slip is ~0.4
    # letterbox bands are black, the picture is not
    ox, oy = int(params[2]), int(params[3])
    new_w, new_h = frames.resized_shape(params, *size)
    assert img[:oy].max(initial=0) == 0 and img[oy + new_h:].max(initial=0) == 0
    assert img[:, :ox].max(initial=0) == 0 and img[:, ox + new_w:].max(initial=0) == 0
    assert img[oy:oy + new_h, ox:ox + new_w].min(-1).mean() > 5


def test_grayscale_and_png_images_cached_in_colour(prepped):
    index = load_index(prepped["prep"])
    cache = load_cache(prepped["prep"], "train", SIZE, 0)
    for iid in (f"train/{prepped['gray_id']}", f"train_warm/{prepped['png_id']}"):
        pos = list(index.image_id).index(iid)
        img = cache[index.cache_row[pos]]
        assert img.max() > 0
    pos = list(index.image_id).index(f"train/{prepped['gray_id']}")
    img = cache[index.cache_row[pos]].astype(int)
    assert (img[..., 0] == img[..., 1]).all() and (img[..., 1] == img[..., 2]).all()


def test_test_index_in_test_csv_order(prepped):
    ds = prepped["ds"]
    test = load_index(prepped["prep"], "test", SIZE)
    assert list(test.image_id) == [i for i, _ in ds.test_rows]
    assert list(test.category) == [c for _, c in ds.test_rows]
    assert test.keypoints is None
    assert test.sizes.tolist() == [[340, 512]] * 5 + [[512, 300]]
    np.testing.assert_allclose(test.params[-1], frames.letterbox_params(512, 300, SIZE))
    cache = load_cache(prepped["prep"], "test", SIZE, 0)
    assert cache.shape == (6, SIZE, SIZE, 3)
    assert prepped["manifest"]["n_test"] == 6


def test_rerun_with_unchanged_inputs_does_nothing(prepped, capsys):
    prep = prepped["prep"]
    watched = [prep / "index.csv", folds_path(prep, K, 0), prep / "rejects.csv", cache_path(prep, "train", SIZE, 0),
               prep / "test_index.csv", prep / "manifest.json"]
    before = {f: os.stat(f).st_mtime_ns for f in watched}
    manifest = preprocess(prepped["root"] / "input", prepped["root"] / "output", size=SIZE, k=K, seed=0, jobs=1)
    assert "up to date" in capsys.readouterr().out
    assert manifest == prepped["manifest"]
    assert {f: os.stat(f).st_mtime_ns for f in watched} == before


def test_other_settings_get_their_own_artifacts(tmp_path, capsys):
    """Another input size, margin, k or seed adds files beside the first ones and never rewrites them."""
    good_dataset(tmp_path / "input", per_cat=4, warm_per_cat=1, n_test_per_cat=1)
    first = preprocess(tmp_path / "input", tmp_path / "output", size=32, k=2, seed=0, jobs=1, run="a")
    ds = Path(first["dataset_dir"])
    files = sorted(p for p in ds.rglob("*") if p.is_file())
    stamp = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in files}
    second = preprocess(tmp_path / "input", tmp_path / "output", size=48, k=3, seed=5, jobs=1, margin=2, run="b")
    assert second["dataset"] == first["dataset"]
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in files} == stamp
    assert cache_path(ds, "train", 48, 2).exists() and folds_path(ds, 3, 5).exists()
    # the same rows at the same cache rows, letterboxed for each cache's size
    a, b = load_cache(ds, "train", 32, 0), load_cache(ds, "train", 48, 2)
    assert a.shape[0] == b.shape[0] and b.shape[1:] == (48, 48, 3)
    index = load_index(ds, "train", 48, 2)
    row = index.cache_row[0]
    assert b[row].max() > 0 and a[row].max() > 0
    np.testing.assert_allclose(index.params[0], frames.letterbox_params(*index.sizes[0], 48, 2))
    # each run is bound to its own settings, and a mismatched config is refused naming both
    from pipeline.config import load_config
    from pipeline.store.rundata import PrepMismatch, run_data

    assert run_data(tmp_path / "output", "a").size == 32 and run_data(tmp_path / "output", "b").k == 3
    cfg = load_config(REPO / "configs" / "demo.yaml", ["model.input_size=48", "model.margin=2", "data.folds=3",
                                                       "data.fold_seed=5"])
    assert run_data(tmp_path / "output", "b", cfg).margin == 2
    with pytest.raises(PrepMismatch, match=r"built for input size 32.*asks for input size 48"):
        run_data(tmp_path / "output", "a", cfg)


def test_folds_are_made_once_and_never_overwritten(tmp_path, capsys):
    good_dataset(tmp_path / "input", per_cat=3, warm_per_cat=1)
    summary = preprocess(tmp_path / "input", tmp_path / "output", size=32, k=K, seed=0, jobs=1)
    folds_csv = folds_path(summary["dataset_dir"], K, 0)
    folds = pd.read_csv(folds_csv)
    # swap the folds of two images of one category: still a valid split, but not the seeded one
    skirt = folds.index[folds.image_category == "skirt"]
    a, b = skirt[folds.fold[skirt].argmin()], skirt[folds.fold[skirt].argmax()]
    folds.loc[[a, b], "fold"] = folds.loc[[b, a], "fold"].to_numpy()
    folds.to_csv(folds_csv, index=False)
    preprocess(tmp_path / "input", tmp_path / "output", size=64, k=K, seed=0, jobs=1)
    pd.testing.assert_frame_equal(pd.read_csv(folds_csv), folds)
    # a changed image set is another dataset, with folds of its own
    ds = Dataset(tmp_path / "input", seed=9)
    rows = pd.read_csv(tmp_path / "input" / "train" / "Annotations" / "train.csv", dtype=str)
    ds.rows["train"] = rows.values.tolist()
    ds.add("train", "skirt", (300, 200), name="extra")
    write_csv(ds.csv_path("train"), ds.rows["train"])
    changed = preprocess(tmp_path / "input", tmp_path / "output", size=32, k=K, seed=0, jobs=1)
    assert changed["dataset"] != summary["dataset"]
    new = pd.read_csv(folds_path(changed["dataset_dir"], K, 0))
    assert "train/Images/skirt/extra.jpg" in set(new.image_id) and len(new) == len(folds) + 1
    pd.testing.assert_frame_equal(pd.read_csv(folds_csv), folds)


def test_category_with_no_usable_rows_exits_naming_it(tmp_path, dataset_factory):
    ds = dataset_factory("input")
    for cat in CATEGORIES:
        for i in range(3):
            ds.add("train", cat, image="missing" if cat == "skirt" else "jpg")
    ds.write()
    with pytest.raises(SystemExit) as err:
        preprocess(tmp_path / "input", tmp_path / "output", size=32, k=K, seed=0, jobs=1)
    assert "skirt" in str(err.value.code) and "trousers" not in str(err.value.code)
    rejects = pd.read_csv(next((tmp_path / "output" / "prep").glob("ds-*/rejects.csv")))
    assert len(rejects) == 3 and (rejects.column == "image_id").all()
    # a run of the other categories is fine with the same dataset
    summary = preprocess(tmp_path / "input", tmp_path / "output", size=32, k=K, seed=0, jobs=1,
                         categories=("dress", "trousers"))
    assert summary["per_category"].get("skirt") is None and summary["n_rejected"] == 3


def test_no_training_data_exits(tmp_path):
    (tmp_path / "input").mkdir()
    with pytest.raises(SystemExit, match="no training annotations"):
        preprocess(tmp_path / "input", tmp_path / "output", size=32, k=K, jobs=1)


def test_parallel_workers_give_the_same_outputs(tmp_path):
    good_dataset(tmp_path / "input", per_cat=3, warm_per_cat=1, n_test_per_cat=1)
    out = {}
    for jobs in (1, 2):
        prep = Path(preprocess(tmp_path / "input", tmp_path / f"out{jobs}", size=32, k=K, seed=0,
                               jobs=jobs)["dataset_dir"])
        out[jobs] = (pd.read_csv(prep / "index.csv"), pd.read_csv(folds_path(prep, K, 0)),
                     np.load(cache_path(prep, "train", 32, 0)), np.load(cache_path(prep, "test", 32, 0)))
    for a, b in zip(out[1], out[2]):
        if isinstance(a, pd.DataFrame):
            pd.testing.assert_frame_equal(a, b)
        else:
            np.testing.assert_array_equal(a, b)


def _bright_centroid(img):
    lum = img.astype(np.float64).min(-1)
    bright = lum > 90
    ys, xs = np.nonzero(bright)
    return np.array([(xs * lum[bright]).sum(), (ys * lum[bright]).sum()]) / lum[bright].sum()


@pytest.mark.parametrize("width,height,size", [(301, 203, 128), (517, 389, 64), (1031, 700, 128),
                                               (512, 512, 64), (340, 512, 128), (800, 600, 96)])
def test_load_letterboxed_maps_points_by_params(tmp_path, width, height, size):
    """Any original size (reduced JPEG decoding included): a dot near the far corner lands on orig_to_input."""
    dot = (width - 40, height - 40)
    path = write_image(tmp_path / "a.jpg", width, height, dots=[dot], dot_radius=max(5, width // 60))
    img, w, h, params = load_letterboxed(path, size)
    assert img.shape == (size, size, 3) and img.dtype == np.uint8 and (w, h) == (width, height)
    np.testing.assert_allclose(params, frames.letterbox_params(width, height, size))
    expected = frames.orig_to_input(np.array(dot, np.float64), params)
    np.testing.assert_allclose(_bright_centroid(img), expected, atol=0.2)


def test_load_letterboxed_rejects_bad_files(tmp_path):
    path = write_image(tmp_path / "a.jpg", 100, 80)
    data = path.read_bytes()
    for name, content, words in [("empty.jpg", b"", "empty"), ("cut.jpg", data[:len(data) // 2], "truncated"),
                                 ("text.jpg", b"not an image at all", "not a readable image")]:
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ImageError, match=words):
            load_letterboxed(tmp_path / name, 32)
    with pytest.raises(ImageError, match="cannot read"):
        load_letterboxed(tmp_path / "nope.jpg", 32)


def test_a_second_preprocess_waits_instead_of_removing_live_temporaries(tmp_path, capsys):
    """Two preprocesses of one dataset (two runs' makes at once): the second waits on the
    dataset's lock, so the first builder's temporary files survive, then finds the data built."""
    import threading
    import time

    from pipeline.fsutil import file_lock
    from pipeline.store.layout import cache_dir, dataset_key
    from pipeline.store.records import input_fingerprint

    good_dataset(tmp_path / "input", per_cat=3, n_test_per_cat=1)
    first = preprocess(tmp_path / "input", tmp_path / "output", size=32, k=2, seed=0, jobs=1, run="a")
    ds = Path(first["dataset_dir"])
    lock = tmp_path / "output" / "prep" / f".{dataset_key(input_fingerprint(tmp_path / 'input'))}.lock"
    live = cache_dir(ds, 40, 0) / ".train.npy.abc123.tmp.npy"  # another builder's file in progress
    done = {}
    with file_lock(lock):
        live.parent.mkdir(parents=True)
        live.write_bytes(b"in progress")
        worker = threading.Thread(target=lambda: done.update(preprocess(
            tmp_path / "input", tmp_path / "output", size=40, k=2, seed=0, jobs=1, run="b")))
        worker.start()
        time.sleep(1.5)
        assert worker.is_alive() and live.exists() and not done
        live.unlink()
    worker.join(120)
    assert done["size"] == 40 and (cache_dir(ds, 40, 0) / "manifest.json").exists()
    assert "waiting for another preprocess" in capsys.readouterr().out
