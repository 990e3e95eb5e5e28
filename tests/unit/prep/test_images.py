"""Crawled-image quirks (issue #11): every good row kept, bad rows rejected with reasons,
duplicates grouped into one fold, train/test overlaps reported, BOM/CRLF CSVs, EXIF stored frame."""
from __future__ import annotations

import io
import json
import struct
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from conftest import Dataset, cells, garment_image, random_keypoints, run_module

from pipeline import frames
from pipeline.keypoints import CATEGORIES, KEYPOINT_INDEX, KEYPOINTS
from pipeline.prep.images import (
    PHASH_MAX_DISTANCE,
    ImageError,
    decode,
    image_size,
    load_letterboxed,
    phash,
)
from pipeline.prep.preprocess import make_folds, preprocess
from pipeline.store.layout import folds_path
from pipeline.store.rundata import load_cache, load_index
from pipeline.tianchi import HEADER, read_annotations, read_test_list

SIZE, K = 64, 3


def with_exif_orientation(jpeg: bytes, orientation: int = 6) -> bytes:
    """JPEG bytes with an APP1 Exif segment holding one Orientation tag (0x0112) inserted after SOI."""
    tiff = b"MM\x00*" + struct.pack(">I", 8) + struct.pack(">H", 1) \
        + struct.pack(">HHIHH", 0x0112, 3, 1, orientation, 0) + struct.pack(">I", 0)
    payload = b"Exif\x00\x00" + tiff
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + jpeg[2:]


def jpeg_bytes(width, height, seed=0, dots=(), radius=5, quality=95) -> bytes:
    ok, buf = cv2.imencode(".jpg", garment_image(width, height, seed, dots=dots, dot_radius=radius),
                           [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return buf.tobytes()


def cmyk_jpeg(width, height, seed=0) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(garment_image(width, height, seed)[:, :, ::-1]).convert("CMYK").save(out, "JPEG")
    return out.getvalue()


def rgba_png(width, height, seed=0) -> bytes:
    img = garment_image(width, height, seed)
    rgba = np.dstack([img, np.full((height, width), 255, np.uint8)])
    rgba[: height // 4, : width // 4, 3] = 0  # a transparent corner
    ok, buf = cv2.imencode(".png", rgba)
    return buf.tobytes()


def gray_alpha_png(width, height) -> bytes:
    from PIL import Image

    la = np.dstack([garment_image(width, height, gray=True), np.full((height, width), 255, np.uint8)])
    out = io.BytesIO()
    Image.fromarray(la, "LA").save(out, "PNG")
    return out.getvalue()


def palette_png(width, height, seed=0) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(garment_image(width, height, seed)[:, :, ::-1]).convert("P").save(out, "PNG")
    return out.getvalue()


def structured_image(width, height, seed) -> np.ndarray:
    """A BGR picture with large shapes of strong contrast (what a product photo has, unlike a texture)."""
    rng = np.random.default_rng(seed)
    img = np.full((height, width, 3), 235, np.uint8)
    for _ in range(6):
        x, y = int(rng.uniform(0, width)), int(rng.uniform(0, height))
        r = int(rng.uniform(0.1, 0.3) * min(width, height))
        cv2.circle(img, (x, y), r, tuple(int(c) for c in rng.integers(0, 200, 3)), -1)
    return img


def write_bom_crlf(path: Path) -> None:
    """Rewrite a CSV with a UTF-8 byte-order mark and CRLF line ends."""
    text = path.read_text()
    path.write_bytes(b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode())


def build_crawl_dataset(root: Path) -> dict:
    """Plain good rows plus one row of every quirk; returns what each test needs to know."""
    ds = Dataset(root, seed=3)
    good, info = [], {}
    for cat in CATEGORIES:
        for i in range(3):
            good.append(f"train/{ds.add('train', cat, (300, 200))}")
        good.append(f"train_warm/{ds.add('train_warm', cat, (200, 300))}")

    def add_bytes(source, cat, name, data, size, kps=None, ext=".jpg"):
        image_id = f"Images/{cat}/{name}{ext}"
        path = root / source / image_id
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        kps = random_keypoints(cat, *size, ds.rng) if kps is None else kps
        line = ds.add_raw(source, [image_id, cat, *cells(kps)])
        ds.kps[(source, image_id)] = kps
        return image_id, line

    # --- good quirks
    data = jpeg_bytes(300, 200, 111)
    good.append("train/" + add_bytes("train", "dress", "trailing", data + b"\x00" * 100 + b"<html>tracker</html>",
                                     (300, 200))[0])
    good.append("train/" + add_bytes("train", "outwear", "cmyk", cmyk_jpeg(300, 200, 112), (300, 200))[0])
    good.append(f"train/{ds.add('train', 'skirt', (300, 200), name='gray', image='gray')}")
    good.append("train/" + add_bytes("train", "blouse", "rgba", rgba_png(200, 300, 113), (200, 300))[0])
    good.append("train_warm/" + add_bytes("train_warm", "trousers", "palette", palette_png(300, 200, 114),
                                          (300, 200))[0])
    good.append("train/" + add_bytes("train", "skirt", "upper", jpeg_bytes(300, 200, 115), (300, 200), ext=".JPG")[0])
    # the CSV says .jpg, the disk holds .JPG (and a Windows separator): found, counted as a fix
    (root / "train" / "Images" / "dress").mkdir(parents=True, exist_ok=True)
    (root / "train" / "Images" / "dress" / "casefile.JPG").write_bytes(jpeg_bytes(300, 200, 131))
    kps = random_keypoints("dress", 300, 200, ds.rng)
    ds.add_raw("train", ["Images\\dress\\casefile.jpg", "dress", *cells(kps)])
    good.append("train/Images\\dress\\casefile.jpg")
    # a capitalised category and a trailing separator (empty 27th field): read as the plain row
    kps = random_keypoints("skirt", 300, 200, ds.rng)
    path = root / "train" / "Images" / "skirt" / "capital.jpg"
    path.write_bytes(jpeg_bytes(300, 200, 133))
    ds.add_raw("train", ["Images/skirt/capital.jpg", "Skirt", *cells(kps), ""])
    good.append("train/Images/skirt/capital.jpg")
    # EXIF orientation 6 (viewers rotate it to 200x300); annotated in the stored 300x200 frame at the dot
    dot = (240, 50)
    kps = random_keypoints("blouse", 300, 200, ds.rng)
    kps[KEYPOINT_INDEX["neckline_left"]] = (*dot, 1)
    rotated = with_exif_orientation(jpeg_bytes(300, 200, 116, dots=[dot], radius=6))
    info["rotated"] = "train/" + add_bytes("train", "blouse", "rotated", rotated, (300, 200), kps=kps)[0]
    info["rotated_dot"] = dot
    good.append(info["rotated"])
    # border points: x == width and x == -1 are clipped into the image
    kps = random_keypoints("trousers", 300, 200, ds.rng)
    kps[KEYPOINT_INDEX["crotch"]] = (300, 120, 1)
    kps[KEYPOINT_INDEX["bottom_left_out"]] = (-1, 150, 0)
    info["border"] = "train/" + add_bytes("train", "trousers", "border", jpeg_bytes(300, 200, 117), (300, 200),
                                          kps=kps)[0]
    good.append(info["border"])
    # duplicates: the same bytes in train and train_warm under other names; a re-encoded, resized copy
    twin = jpeg_bytes(300, 200, 118)
    info["twin"] = ["train/" + add_bytes("train", "dress", "twin_a", twin, (300, 200))[0],
                    "train_warm/" + add_bytes("train_warm", "dress", "twin_b", twin, (300, 200))[0]]
    good += info["twin"]
    near = structured_image(300, 200, 119)
    smaller = cv2.resize(near, (150, 100), interpolation=cv2.INTER_AREA)
    info["near"] = ["train/" + add_bytes("train", "outwear", "near_a", cv2.imencode(".jpg", near)[1].tobytes(),
                                         (300, 200))[0],
                    "train_warm/" + add_bytes("train_warm", "outwear", "near_b",
                                              cv2.imencode(".jpg", smaller, [cv2.IMWRITE_JPEG_QUALITY, 70])[1].tobytes(),
                                              (150, 100))[0]]
    good += info["near"]

    # --- bad rows: (csv, line, column, words)
    train_csv, bad = str(ds.csv_path("train")), {}
    _, line = add_bytes("train", "dress", "empty", b"", (300, 200))
    bad["empty"] = (train_csv, line, "image_id", "empty")
    _, line = add_bytes("train", "skirt", "html", b"<!DOCTYPE html><html><body>404</body></html>", (300, 200))
    bad["html"] = (train_csv, line, "image_id", "HTML")
    _, line = add_bytes("train", "blouse", "cut", jpeg_bytes(300, 200, 120)[:1500], (300, 200))
    bad["truncated"] = (train_csv, line, "image_id", "truncated JPEG")
    kps = random_keypoints("skirt", 300, 200, ds.rng)
    kps[KEYPOINT_INDEX["hemline_right"]] = (301, 100, 1)  # two pixels past the last column
    _, line = add_bytes("train", "skirt", "far", jpeg_bytes(300, 200, 121), (300, 200), kps=kps)
    bad["outside"] = (train_csv, line, "hemline_right", "outside")
    kps = random_keypoints("dress", 300, 200, ds.rng)
    kps[KEYPOINT_INDEX["armpit_left"]] = (-2, 100, 1)
    _, line = add_bytes("train", "dress", "negative", jpeg_bytes(300, 200, 122), (300, 200), kps=kps)
    bad["negative"] = (train_csv, line, "armpit_left", "negative")

    # --- test: a rotated-tag image, and a copy of a training image (a leak to report)
    for cat in CATEGORIES:
        ds.add_test(cat, (300, 200))
    test_dir = root / "test" / "Images" / "blouse"
    test_dir.mkdir(parents=True, exist_ok=True)
    (test_dir / "rotated.jpg").write_bytes(with_exif_orientation(jpeg_bytes(300, 200, 130, dots=[(30, 170)])))
    (test_dir / "leak.jpg").write_bytes(twin)
    (test_dir / "cut.jpg").write_bytes(jpeg_bytes(300, 200, 132)[:2000])
    ds.test_rows += [("Images/blouse/rotated.jpg", "blouse"), ("Images/blouse/leak.jpg", "blouse"),
                     ("Images/blouse/cut.jpg", "blouse")]
    ds.write()
    write_bom_crlf(ds.csv_path("train"))
    write_bom_crlf(root / "test" / "test.csv")
    info.update(ds=ds, good=good, bad=bad)
    return info


@pytest.fixture(scope="module")
def crawled(tmp_path_factory):
    root = tmp_path_factory.mktemp("crawl")
    info = build_crawl_dataset(root / "input")
    manifest = preprocess(root / "input", root / "output", size=SIZE, k=K, seed=0, jobs=1)
    info.update(root=root, prep=Path(manifest["dataset_dir"]), manifest=manifest)
    return info


def test_every_good_row_reaches_the_folds(crawled):
    folds = pd.read_csv(folds_path(crawled["prep"], K, 0))
    assert sorted(folds.image_id) == sorted(crawled["good"])


def test_bad_rows_rejected_with_their_reason(crawled):
    rejects = pd.read_csv(crawled["prep"] / "rejects.csv")
    train_rejects = rejects[~rejects.reason.str.contains("kept;")]
    got = {(r.file, int(r.row), r.column) for r in train_rejects.itertuples()}
    assert got == {(f, line, col) for f, line, col, _ in crawled["bad"].values()}
    for f, line, col, words in crawled["bad"].values():
        reason = rejects[(rejects.file == f) & (rejects.row == line)].reason.iloc[0]
        assert words in reason, (words, reason)
    report = crawled["manifest"]["report"]
    assert sum(report["rejects_per_reason"].values()) == len(crawled["bad"])
    assert report["rejects_per_reason"]["empty image file"] == 1


def test_exif_rotated_image_stays_in_its_stored_frame(crawled):
    index = load_index(crawled["prep"], "train", SIZE)
    pos = list(index.image_id).index(crawled["rotated"])
    assert tuple(index.sizes[pos]) == (300, 200)  # not the 200x300 a viewer shows
    img = np.asarray(load_cache(crawled["prep"], "train", SIZE, 0)[index.cache_row[pos]], np.float64)
    x, y = frames.orig_to_input(np.array(crawled["rotated_dot"], np.float64), index.params[pos])
    assert img[int(round(y)), int(round(x))].min() > 150  # the dot is where the annotation says
    # the single-image reader (predict_image) and the test index agree
    path = crawled["root"] / "input" / crawled["rotated"]
    one, w, h, params = load_letterboxed(path, SIZE)
    assert (w, h) == (300, 200)
    np.testing.assert_array_equal(one, img.astype(np.uint8))
    test = load_index(crawled["prep"], "test", SIZE)
    assert tuple(test.sizes[list(test.image_id).index("Images/blouse/rotated.jpg")]) == (300, 200)
    # the submission validator bounds-checks in the same frame (x up to 299, y up to 199)
    from pipeline.scoring.submission import image_sizes_for

    sizes = image_sizes_for(crawled["root"] / "input" / "test" / "test.csv", ["Images/blouse/rotated.jpg"])
    assert sizes["Images/blouse/rotated.jpg"] == (300, 200)


def test_border_points_clipped_and_counted(crawled):
    index = load_index(crawled["prep"])
    kps = index.keypoints[list(index.image_id).index(crawled["border"])]
    assert tuple(kps[KEYPOINT_INDEX["crotch"]]) == (299, 120, 1)
    assert tuple(kps[KEYPOINT_INDEX["bottom_left_out"]]) == (0, 150, 0)
    fixes = crawled["manifest"]["report"]["fixes"]
    assert fixes["border point clipped: x = width → width-1"] == 1
    assert fixes["border point clipped: x = -1 → 0"] == 1
    assert fixes["image file found under another letter case or separator"] == 1
    frame = load_index(crawled["prep"]).frame.set_index("image_id")
    assert frame.loc["train/Images\\dress\\casefile.jpg", "file"].endswith("Images/dress/casefile.JPG")
    clipped = pd.read_csv(crawled["prep"] / "clipped.csv")
    assert set(clipped.column) == {"crotch", "bottom_left_out"}


def test_duplicates_listed_and_share_a_fold(crawled):
    dups = pd.read_csv(crawled["prep"] / "duplicates.csv")
    folds = pd.read_csv(folds_path(crawled["prep"], K, 0)).set_index("image_id")["fold"]
    for pair, match in ((crawled["twin"], "identical"), (crawled["near"], "near")):
        groups = dups.set_index("image_id").loc[pair, "group"]
        assert groups.nunique() == 1, pair
        assert match in set(dups[dups.group == groups.iloc[0]].match)
        assert folds.loc[pair].nunique() == 1, pair
    # the training copy of the test image is reported as an overlap, the test row stays a test row
    twin_group = dups.set_index("image_id").loc[crawled["twin"][0], "group"]
    assert "test/Images/blouse/leak.jpg" in set(dups[dups.group == twin_group].image_id)
    summary = crawled["manifest"]["report"]["duplicates"]
    assert summary["test_images_seen_in_training"] == 1 and summary["cross_source_groups"] == 2
    # ordinary images are not duplicates of each other
    assert set(dups.image_id) <= set(crawled["twin"] + crawled["near"] + ["test/Images/blouse/leak.jpg"])
    # ... kept as a test row, never a training row
    assert "Images/blouse/leak.jpg" in set(load_index(crawled["prep"], "test").image_id)
    assert not any(i.endswith("leak.jpg") for i in load_index(crawled["prep"]).image_id)


def test_report_counts_sizes_and_categories(crawled):
    manifest = json.loads((crawled["prep"] / "manifest.json").read_text())
    report = manifest["report"]
    assert sum(report["train_per_category"].values()) == len(crawled["good"])
    assert report["train_per_image_size"]["150x100"] == 1
    assert "## Rejected rows per reason" in (crawled["prep"] / "report.md").read_text()


def test_bom_crlf_csvs_read_like_plain_ones(tmp_path):
    ds = Dataset(tmp_path, seed=1)
    ids = [ds.add("train", c, (300, 200)) for c in CATEGORIES]
    ds.add_test("dress")
    ds.write()
    plain, _ = read_annotations(ds.csv_path("train"))
    write_bom_crlf(ds.csv_path("train"))
    write_bom_crlf(tmp_path / "test" / "test.csv")
    table, problems = read_annotations(ds.csv_path("train"))
    assert not problems and list(table.image_id) == ids
    np.testing.assert_array_equal(table.keypoints, plain.keypoints)
    assert read_test_list(tmp_path / "test" / "test.csv")[1] == ["dress"]


def test_submission_with_bom_validates(tmp_path):
    from pipeline.scoring.submission import validate

    ds = Dataset(tmp_path, seed=2)
    ds.add_test("skirt", (300, 200))
    ds.write()
    kps = random_keypoints("skirt", 300, 200, ds.rng)
    sub = tmp_path / "sub.csv"
    row = [ds.test_rows[0][0], "skirt", *[c.replace("_0", "_1") for c in cells(kps)]]
    sub.write_bytes(b"\xef\xbb\xbf" + (",".join(HEADER) + "\r\n" + ",".join(row) + "\r\n").encode())
    assert validate(sub, tmp_path / "test" / "test.csv") == []
    result = run_module("pipeline.submit", "--validate", str(sub), "--test", str(tmp_path / "test" / "test.csv"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_malformed_answer_cell_fails_scoring_naming_it(tmp_path):
    ds = Dataset(tmp_path, seed=4)
    ds.add("train", "dress", (300, 200))
    ds.write()
    truth = ds.csv_path("train")
    pred = tmp_path / "pred.csv"
    pred.write_text(truth.read_text())
    lines = truth.read_text().splitlines()
    fields = lines[1].split(",")
    fields[2 + KEYPOINTS.index("armpit_left")] = "12_x_1"
    truth.write_text("\n".join([lines[0], ",".join(fields)]) + "\n")
    result = run_module("pipeline.metrics", "--truth", str(truth), "--pred", str(pred))
    assert result.returncode != 0
    assert str(truth) in result.stderr and "row 2" in result.stderr and "armpit_left" in result.stderr


# ----------------------------------------------------------------------------- unit level


def test_decoder_kinds_in_the_stored_frame(tmp_path):
    base = jpeg_bytes(300, 200, 5)
    for name, data in [("trailing", base + b"\xff\xd8junk" * 20), ("cmyk", cmyk_jpeg(300, 200)),
                       ("rgba", rgba_png(300, 200)), ("palette", palette_png(300, 200)),
                       ("exif", with_exif_orientation(base, 8)), ("gray_alpha", gray_alpha_png(300, 200))]:
        img, w, h, r = decode(data, 64)
        assert (w, h) == (300, 200) and img.shape == (-(-200 // r), -(-300 // r), 3) and img.dtype == np.uint8, name
    img = decode(rgba_png(300, 200))[0]
    assert (img[:10, :10] == 255).all()  # transparent pixels shown on white
    assert image_size(with_exif_orientation(base, 6)) == (300, 200)
    for data, words in [(b"", "empty"), (b"<html></html>", "not a readable image"), (base[:-2], "truncated"),
                        (base[: len(base) // 3], "truncated")]:
        with pytest.raises(ImageError, match=words):
            decode(data)


def test_phash_finds_copies_not_other_images():
    a = structured_image(300, 200, 1)
    copy = cv2.imdecode(cv2.imencode(".jpg", cv2.resize(a, (200, 133)), [cv2.IMWRITE_JPEG_QUALITY, 60])[1], 1)
    other = structured_image(300, 200, 2)
    d = lambda x, y: bin(phash(x) ^ phash(y)).count("1")  # noqa: E731
    assert d(a, copy) <= PHASH_MAX_DISTANCE < d(a, other)


def test_group_folds_keep_groups_and_plain_folds_unchanged():
    rng = np.random.default_rng(0)
    cats = np.array([CATEGORIES[i % 5] for i in range(60)])
    ids = [f"i{i}" for i in range(60)]
    plain = make_folds(ids, cats, 3, 7)
    from sklearn.model_selection import StratifiedKFold

    ref = np.zeros(60, int)
    for f, (_, val) in enumerate(StratifiedKFold(3, shuffle=True, random_state=7).split(np.zeros(60), cats)):
        ref[val] = f
    np.testing.assert_array_equal(plain, ref)  # no duplicates: the seeded stratified split as before
    groups = np.arange(60)
    groups[[5, 17, 40]] = 5
    groups[[9, 33]] = 9
    grouped = make_folds(ids, cats, 3, 7, groups)
    assert len(set(grouped[[5, 17, 40]])) == 1 and len(set(grouped[[9, 33]])) == 1
    np.testing.assert_array_equal(grouped, make_folds(ids, cats, 3, 7, groups))  # deterministic
    del rng


def test_unreadable_test_image_kept_at_its_header_size(crawled):
    test = load_index(crawled["prep"], "test")
    assert tuple(test.sizes[list(test.image_id).index("Images/blouse/cut.jpg")]) == (300, 200)
    rejects = pd.read_csv(crawled["prep"] / "rejects.csv")
    reason = rejects[rejects.reason.str.contains("cut.jpg") & rejects.file.str.endswith("test.csv")].reason.iloc[0]
    assert "truncated" in reason and "kept; predicted on a blank 300x200 image" in reason
    assert crawled["manifest"]["report"]["test_images_unreadable"] == 1


def test_near_pairs_match_a_brute_force_search():
    from pipeline.prep.duplicates import near_pairs, union_groups

    rng = np.random.default_rng(1)
    h = rng.integers(0, 2**63, 600, dtype=np.int64).astype(np.uint64)
    h[10] = h[5] ^ np.uint64(0b101)          # 2 bits apart
    h[20] = h[7]                              # equal hashes
    h[599] = h[0] ^ np.uint64(1 << 40 | 1 << 3 | 1)  # 3 bits apart
    h[300] = h[1] ^ np.uint64(0b1111)         # 4 bits apart: not a near copy
    pairs = near_pairs(h, 3)
    bits = np.unpackbits(h.view(np.uint8).reshape(-1, 8), axis=1)
    d = (bits[:, None, :] != bits[None, :, :]).sum(-1)  # brute force, independent of images.hamming
    brute = {(i, j) for i, j in zip(*np.nonzero(np.triu(d <= 3, 1)))}
    assert {tuple(p) for p in pairs.tolist()} == brute == {(5, 10), (7, 20), (0, 599)}
    assert d[1, 300] == 4
    groups = union_groups(600, pairs)
    assert groups[10] == groups[5] == 5 and groups[599] == 0 and groups[300] == 300


def test_malformed_answer_cell_fails_run_scoring_naming_it(tmp_path):
    from pipeline.scoring.leaderboard import test_answers

    ds = Dataset(tmp_path, seed=5)
    ds.add_test("dress", (300, 200))
    ds.write()
    kps = random_keypoints("dress", 300, 200, ds.rng)
    cells_ = cells(kps)
    cells_[KEYPOINTS.index("armpit_right")] = "1_2_3_4"
    answers = tmp_path / "test" / "answers.csv"
    answers.write_text(",".join(HEADER) + "\n" + ",".join([ds.test_rows[0][0], "dress", *cells_]) + "\n")

    class Test:  # the test index: only its ids are read
        image_id = [ds.test_rows[0][0]]

    with pytest.raises(ValueError) as err:
        test_answers(tmp_path, Test)
    assert str(err.value).startswith(f"{answers}: row 2, column armpit_right:")


def test_infeasible_near_groups_fall_back_to_identical_copies(tmp_path, capsys):
    from conftest import good_dataset

    from pipeline.prep.duplicates import COLUMNS, training_groups
    from pipeline.prep.preprocess import ensure_folds

    good_dataset(tmp_path / "input", per_cat=3, warm_per_cat=1, n_test_per_cat=0)
    prep = Path(preprocess(tmp_path / "input", tmp_path / "output", size=32, k=K, seed=0, jobs=1)["dataset_dir"])
    index = load_index(prep)
    skirts = [i for i, c in zip(index.image_id, index.category) if c == "skirt"]
    # every skirt "near" the first one (a hash collision), and two of them byte-identical
    rows = [(0, iid, "train", "skirt", "first" if j == 0 else "near", 0 if j == 0 else 3,
             skirts[0] if j == 1 else iid) for j, iid in enumerate(skirts)]
    pd.DataFrame(rows, columns=COLUMNS).to_csv(prep / "duplicates.csv", index=False)
    dups = pd.read_csv(prep / "duplicates.csv")
    near, identical = training_groups(dups, index.image_id), training_groups(dups, index.image_id, near=False)
    pos = [list(index.image_id).index(s) for s in skirts]
    assert len(set(near[pos])) == 1 and identical[pos[0]] == identical[pos[1]] != identical[pos[2]]
    folds_path(prep, K, 0).unlink()
    folds = ensure_folds(prep, K, 0).set_index("image_id")["fold"]
    assert "impossible" in capsys.readouterr().err
    assert folds[skirts[0]] == folds[skirts[1]] and folds[skirts].nunique() == K
