"""Ensemble: fold OOF predictions → one CV prediction; test predictions averaged.

For each category, the OOF files of every fold of every member run are
assembled into one prediction per training image (members averaged), and the
test files are averaged over folds and members. A missing member, fold or
image is an error naming it, never silently skipped.

Members may be runs of different input size, stride or model (all prediction
files hold original-image pixels) but must share one dataset and fold
assignment. Writes OUTPUT/runs/<name>/<category>/oof.csv and test.csv (float
coordinates) and runs/<name>/ensemble.json (the inputs it was built from).
CLI: python -m pipeline.stages.ensemble --output DIR [--config C] [--run RUN]
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np
import pandas as pd

from pipeline.store.layout import category_csv, fold_dir, model_file, run_dir, run_file
from pipeline.store.predictions import load_npz, write_category_csv
from pipeline.store.records import files_id, is_current, write_record
from pipeline.store.rundata import RunData, bind_run, run_data


def _average(parts: List[Tuple[np.ndarray, np.ndarray, np.ndarray]], ids: np.ndarray,
             what: str) -> Tuple[np.ndarray, np.ndarray]:
    """Average (image_id, xy, score) parts over the images `ids`; every part must cover them."""
    xy_sum, score_sum = None, None
    for part_ids, xy, score in parts:
        pos = pd.Series(np.arange(len(part_ids)), index=part_ids)
        missing = set(ids) - set(part_ids)
        if missing:
            raise ValueError(f"{what}: {len(missing)} image(s) without a prediction, e.g. {sorted(missing)[0]}")
        order = pos.loc[ids].to_numpy()
        xy_sum = xy[order] if xy_sum is None else xy_sum + xy[order]
        score_sum = score[order] if score_sum is None else score_sum + score[order]
    return xy_sum / len(parts), score_sum / len(parts)


def member_oof(output, run: str, category: str, folds: Sequence[int]) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Concatenate one run's OOF predictions over its model folds `folds` (RunData.fold_ids)."""
    ids, xys, scores = [], [], []
    for f in folds:
        data = load_npz(model_file(output, run, category, f, "oof"))
        ids.append(data["image_id"])
        xys.append(data["xy"])
        scores.append(data["score"])
    return np.concatenate(ids), np.concatenate(xys), np.concatenate(scores)


def ensemble_category(output, members: Sequence[str], category: str, folds: Sequence[int],
                      train_ids: np.ndarray, test_ids: np.ndarray = None) -> Dict[str, tuple]:
    """OOF and test ensembles of one category over the model folds `folds`.

    Members may differ in input size, stride or model: every prediction file holds
    original-image pixels, so they average directly. Returns {"oof": (xy (M, K, 2),
    score), "test": (xy, score)} aligned with train_ids (the images of those folds) / test_ids.
    """
    out = {}
    oof_parts = [member_oof(output, m, category, folds) for m in members]
    out["oof"] = _average(oof_parts, train_ids, f"OOF of {category} ({', '.join(members)})")
    if test_ids is not None:
        parts = []
        for m in members:
            for f in folds:
                data = load_npz(model_file(output, m, category, f, "test"))
                parts.append((data["image_id"], data["xy"], data["score"]))
        out["test"] = _average(parts, test_ids, f"test predictions of {category}")
    return out


def members_data(output, name: str, members: Sequence[str]) -> RunData:
    """The prep binding shared by all members; ValueError when their datasets or fold assignments differ."""
    datas = [run_data(output, m) for m in members]
    first = datas[0]
    for m, d in zip(members[1:], datas[1:]):
        if d.identity(with_cache=False) != first.identity(with_cache=False):
            raise ValueError(f"ensemble {name}: member {m!r} was trained on dataset {d.dataset} with folds "
                             f"k={d.k} seed={d.seed} (models on folds {list(d.fold_ids)}), member "
                             f"{members[0]!r} on dataset {first.dataset} with folds k={first.k} seed={first.seed} "
                             f"(models on folds {list(first.fold_ids)}); members must share one fold assignment")
    return first


def member_files(output, members: Sequence[str], categories: Sequence[str], folds: Sequence[int],
                 with_test: bool) -> List[Path]:
    """Every prediction file the ensemble reads; FileNotFoundError names the first missing one."""
    files = []
    for m in members:
        for cat in categories:
            for f in folds:
                for split in ("oof", "test") if with_test else ("oof",):
                    path = fold_dir(output, m, cat, f) / f"{split}.npz"
                    if not path.exists():
                        raise FileNotFoundError(f"ensemble member {m!r} has no {split} predictions for {cat} "
                                                f"fold {f} ({path}); run `make predict` for run {m!r}")
                    files.append(path)
    return files


def run_ensemble(output, name: str, members: Sequence[str], categories: Sequence[str],
                 settings: Dict = None) -> bool:
    """Average members over folds into runs/<name>/<cat>/oof.csv, test.csv; False when already current.

    runs/<name>/ensemble.json records the inputs: the settings, the shared prep binding
    and the content id of every member prediction file.
    """
    prep = members_data(output, name, members)
    folds = prep.fold_ids
    files = member_files(output, members, categories, folds, prep.has_test)
    inputs = {"settings": settings or {"members": list(members), "categories": list(categories)},
              "prep": prep.identity(with_cache=False), "files": files_id(files)}
    record = run_file(output, name, "ensemble")
    outputs = [run_dir(output, name) / c / f for c in categories
               for f in (("oof.csv", "test.csv") if prep.has_test else ("oof.csv",))]
    if is_current(record, inputs, outputs):
        print(f"ensemble {name}: up to date")
        return False
    train = prep.oof_index()
    test = prep.test_index()
    for cat in categories:
        train_ids = train.image_id[train.category == cat]
        test_ids = None if test is None else test.image_id[test.category == cat]
        result = ensemble_category(output, members, cat, folds, train_ids, test_ids)
        write_category_csv(category_csv(output, name, cat, "oof"), train_ids, cat, *result["oof"])
        if test is not None:
            write_category_csv(category_csv(output, name, cat, "test"), test_ids, cat, *result["test"])
    if name not in members:
        bind_run(output, name, prep)
    write_record(record, inputs, outputs, members=list(members), categories=list(categories))
    print(f"ensemble {name}: {', '.join(members)} × {len(folds)} folds → {run_dir(output, name)}")
    return True
