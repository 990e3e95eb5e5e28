"""Duplicate and near-duplicate images across training sources and the test set.

Two images are duplicates when their files are byte-identical (same SHA-1) or
their 64-bit perceptual hashes (`images.phash`, computed on the decoded image
in the stored frame) differ in at most `images.PHASH_MAX_DISTANCE` bits
(re-encoded, resized or lightly retouched copies). Duplicates are joined
transitively into groups (union-find).

`prep/<dataset>/duplicates.csv` holds one row per image that has a duplicate:

    group        group number (0, 1, ...; in order of each group's first image)
    image_id     unique id: `<source>/<image_id>` for training rows, `test/<image_id>` for test rows
    split        train | test
    image_category
    match        first (the group's first image) | identical (same bytes as it) | near
    distance     phash bit difference to the group's first image
    copy_of      the first image with the very same bytes (itself when it is the first)

Groups feed the fold split (a training group stays in one fold) and the
train/test overlap report; test rows are never used for training.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import numpy as np
import pandas as pd

from pipeline.prep.images import PHASH_MAX_DISTANCE, hamming
from pipeline.store.rundata import DUPLICATE_COLUMNS

#: near copies: |log(aspect ratio a / aspect ratio b)| at most this (about 2 %)
ASPECT_TOLERANCE = 0.02
COLUMNS = DUPLICATE_COLUMNS
_CELLS = 1 << 22


def near_pairs(hashes: np.ndarray, max_distance: int = PHASH_MAX_DISTANCE) -> np.ndarray:
    """Pairs (P, 2) of positions i < j whose 64-bit hashes (N,) uint64 differ in ≤ max_distance bits.

    Exact all-pairs search in row blocks (bounded temporaries: memory flat in N); equal hashes are
    collapsed first, so many copies of one image cost one comparison.
    """
    hashes = np.asarray(hashes, np.uint64)
    values, first, inverse = np.unique(hashes, return_index=True, return_inverse=True)
    pairs: List[np.ndarray] = []
    block_rows = max(8, _CELLS // max(len(values), 1))  # temporaries of about _CELLS × 8 bytes, whatever N
    for start in range(0, len(values), block_rows):
        block = values[start:start + block_rows]
        dist = hamming(block[:, None], values[None, start:])  # the upper triangle only
        a, b = np.nonzero(dist <= max_distance)
        keep = b > a
        if keep.any():
            pairs.append(np.stack([a[keep] + start, b[keep] + start], 1))
    out = [np.stack([first[p[:, 0]], first[p[:, 1]]], 1) for p in pairs]
    # copies with an equal hash: each joined to the first holder of the value
    same = np.nonzero(np.arange(len(hashes)) != first[inverse])[0]
    out.append(np.stack([first[inverse[same]], same], 1))
    return np.sort(np.concatenate(out).astype(np.int64), axis=1)


def union_groups(n: int, pairs: np.ndarray) -> np.ndarray:
    """Connected components (N,) int of n items joined by pairs (P, 2); a component's id is its smallest item."""
    parent = np.arange(n)

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, b in np.asarray(pairs, np.int64).reshape(-1, 2):
        ra, rb = root(int(a)), root(int(b))
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return np.array([root(i) for i in range(n)], np.int64)


def find_duplicates(image_id: Sequence[str], split: Sequence[str], category: Sequence[str],
                    sha1: Sequence[str], phashes: Sequence[int], width: Optional[Sequence[int]] = None,
                    height: Optional[Sequence[int]] = None,
                    max_distance: int = PHASH_MAX_DISTANCE) -> pd.DataFrame:
    """The duplicates.csv table (columns COLUMNS) of images given in order (N of each argument).

    With sizes (width, height (N,)), near copies must also have the same aspect ratio
    (within ASPECT_TOLERANCE): a resized copy keeps it, a different picture rarely does.
    """
    n = len(image_id)
    if n == 0:
        return pd.DataFrame(columns=COLUMNS)
    hashes = np.array([int(h) for h in phashes], np.uint64)
    codes = pd.factorize(pd.Series(list(sha1)))[0]
    first_same = pd.Series(np.arange(n)).groupby(codes).transform("min").to_numpy()
    identical = np.stack([first_same, np.arange(n)], 1)[first_same != np.arange(n)]
    near = near_pairs(hashes, max_distance)
    if width is not None and len(near):
        aspect = np.log(np.asarray(width, np.float64) / np.asarray(height, np.float64))
        near = near[np.abs(aspect[near[:, 0]] - aspect[near[:, 1]]) <= ASPECT_TOLERANCE]
    pairs = np.concatenate([identical, near])
    comp = union_groups(n, pairs)
    sizes = np.bincount(comp, minlength=n)
    members = np.nonzero(sizes[comp] > 1)[0]
    if not members.size:
        return pd.DataFrame(columns=COLUMNS)
    roots = comp[members]
    numbers = {r: g for g, r in enumerate(sorted(set(roots.tolist())))}
    sha1 = list(sha1)
    rows = []
    for i in members:
        r = comp[i]
        match = "first" if i == r else ("identical" if sha1[i] == sha1[r] else "near")
        rows.append((numbers[r], image_id[i], split[i], category[i], match,
                     int(hamming(hashes[i:i + 1], hashes[r])[0]), image_id[first_same[i]]))
    return pd.DataFrame(rows, columns=COLUMNS).sort_values(["group", "split", "image_id"], kind="stable")


def training_groups(duplicates: pd.DataFrame, image_id: Sequence[str], near: bool = True) -> np.ndarray:
    """Group of each training image (N,) int: its duplicates.csv group, else a group of its own.

    near False: only byte-identical copies are grouped (column copy_of).
    Ids: duplicate groups keep their number; singletons get numbers after the largest one.
    """
    dup = duplicates[duplicates["split"] == "train"] if len(duplicates) else duplicates
    if len(dup) and not near:
        copies = pd.factorize(dup["copy_of"])[0]
        dup = dup.assign(group=copies)[pd.Series(copies).duplicated(keep=False).to_numpy()]
    of = dict(zip(dup["image_id"], dup["group"])) if len(dup) else {}
    nxt = int(max(of.values(), default=-1)) + 1
    out = np.empty(len(image_id), np.int64)
    for i, iid in enumerate(image_id):
        if iid in of:
            out[i] = of[iid]
        else:
            out[i] = nxt
            nxt += 1
    return out


def summary(duplicates: pd.DataFrame) -> Dict:
    """Counts for the report: groups, images in groups per split, identical/near, train↔test overlaps."""
    if not len(duplicates):
        return {"groups": 0, "train_images": 0, "test_images": 0, "identical": 0, "near": 0,
                "train_test_groups": 0, "test_images_seen_in_training": 0, "cross_source_groups": 0}
    d = duplicates
    splits = d.groupby("group")["split"].agg(set)
    mixed = splits[splits.apply(lambda s: s == {"train", "test"})].index
    sources = d[d.split == "train"].assign(source=lambda t: t.image_id.str.split("/").str[0])
    cross = sources.groupby("group")["source"].nunique()
    return {
        "groups": int(d["group"].nunique()),
        "train_images": int((d.split == "train").sum()),
        "test_images": int((d.split == "test").sum()),
        "identical": int((d.match == "identical").sum()),
        "near": int((d.match == "near").sum()),
        "train_test_groups": int(len(mixed)),
        "test_images_seen_in_training": int(((d.split == "test") & d.group.isin(mixed)).sum()),
        "cross_source_groups": int((cross > 1).sum()),
    }
