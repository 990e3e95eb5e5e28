"""Trained ensembles as self-contained bundles, and the one inference path for single images.

A *bundle* is what a run's test predictions need, and nothing of OUTPUT:

    OUTPUT/export/<name>/
      bundle.json                    what it is: members, categories, codec and keypoint settings,
                                     dataset fingerprint, fold identity, CV/test NE, versions
      MODEL_CARD.md                  data, budget, NE, how to run it
      members/<run>/config.yaml      each member's resolved config
      members/<run>/<model>/fold<k>.keras             the network (Keras)
      members/<run>/<model>/fold<k>_savedmodel/       the same, inference-only SavedModel
      members/<run>/<model>/fold<k>.tflite            the same, TFLite (pipeline/release/runtimes.py)
      members/<run>/<model>/fold<k>.onnx              the same, ONNX (tf2onnx; onnxruntime runs it)
      stacker/<category>.json        the test-time stacker, when the run's submission used it
    OUTPUT/export/<name>.tar.gz      the directory as one file

`Ensemble` predicts images as `make predict` → `make ensemble` → `make stack` do, from a
bundle (`Ensemble.load`) or from the run directories in place (`Ensemble.from_output`):
each member's fold models run `predict.predict_category` (the same TTA, crop pass and
decoding), and the member × fold predictions are averaged; with a stacker, each fold's
members are averaged, corrected (`stack.apply_stacker`) and the folds averaged.
`<model>` is a category or `joint` (pipeline/joint.py).

CLI: python -m pipeline.stages.export --output DIR --run RUN          (make export RUN=<run>)
     python -m pipeline.stages.export --bundle DIR --images DIR [--category C] --out CSV   (make predict-dir)
"""
from __future__ import annotations

import dataclasses
import datetime
import json
import shutil
import tarfile
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from pipeline import joint
from pipeline.config import Config, load_config, save_config
from pipeline.fsutil import atomic_path, write_text_atomic
from pipeline.keypoints import CATEGORIES, CATEGORY_KEYPOINTS, FLIP_INDEX, KEYPOINTS
from pipeline.release.runtimes import float32_model
from pipeline.store.layout import export_dir, model_file, run_dir, run_file
from pipeline.store.records import file_id, read_record

BUNDLE_VERSION = 1
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


@dataclasses.dataclass
class Member:
    """One ensemble member: its resolved config and its network files, {model name: [fold paths]}."""
    run: str
    cfg: Config
    models: Dict[str, List[Path]]


class Ensemble:
    """Members × folds of fold models (and optionally per-category stackers) that predict images."""

    def __init__(self, name: str, members: Sequence[Member], categories: Sequence[str],
                 stackers: Optional[Dict[str, Path]] = None):
        self.name, self.members, self.categories = name, list(members), list(categories)
        self.stackers = dict(stackers or {})
        self._loaded: Dict[Path, object] = {}

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_output(cls, output, name: str, cfg: Optional[Config] = None) -> "Ensemble":
        """The ensemble `name` of OUTPUT's run directories, files used in place. Member configs come
        from runs/<member>/config.yaml (written by `make ensemble`); `cfg` stands in for a
        single-member run's own. The stacker is used when the run's stack.json says so."""
        record = read_record(run_file(output, name, "ensemble")) or {}
        members = list(record.get("members") or [name])
        categories = list(record.get("categories") or (cfg.data.categories if cfg else CATEGORIES))
        out = []
        for member in members:
            if cfg is not None and members == [name]:
                mcfg = cfg
            else:
                path = run_file(output, member, "config")
                if not path.exists():
                    raise FileNotFoundError(f"{path} missing: run `make ensemble` for run {member!r} first")
                mcfg = load_config(path)
            models = {}
            # train.joint cannot differ per category (config check): the run-level names hold
            for model in (m for m in joint.model_names(mcfg) if m == joint.JOINT or m in categories):
                models[model] = [model_file(output, member, model, f, "model") for f in mcfg.fold_ids]
            out.append(Member(member, mcfg, models))
        stack = read_record(run_file(output, name, "stack")) or {}
        stackers = {}
        if stack.get("use_stack"):
            from pipeline.store.layout import stacker_path

            stackers = {c: stacker_path(output, name, c) for c in categories}
            lacking = [str(p) for p in stackers.values() if not p.exists()]
            if lacking:
                raise FileNotFoundError(f"{lacking[0]} missing (stack.json predates it): run `make stack` again")
        return cls(name, out, categories, stackers)

    @classmethod
    def load(cls, directory) -> "Ensemble":
        """The ensemble of an exported bundle directory (ValueError when it is not one)."""
        directory = Path(directory)
        meta_path = directory / "bundle.json"
        if not meta_path.exists():
            raise FileNotFoundError(f"{directory} is not a bundle (no bundle.json; `make export RUN=<run>` "
                                    f"writes one)")
        meta = json.loads(meta_path.read_text())
        if meta.get("version") != BUNDLE_VERSION:
            raise ValueError(f"{meta_path}: bundle version {meta.get('version')}, this code reads "
                             f"{BUNDLE_VERSION}")
        members = [Member(m["run"], load_config(directory / m["config"]),
                          {model: [directory / p for p in paths] for model, paths in m["models"].items()})
                   for m in meta["members"]]
        stackers = {c: directory / p for c, p in meta.get("stackers", {}).items()}
        return cls(meta["name"], members, meta["categories"], stackers)

    # ------------------------------------------------------------------ prediction
    def _model(self, path: Path):
        if path not in self._loaded:
            from pipeline.heatmap.inference import load_model

            self._loaded[path] = load_model(path)
        return self._loaded[path]

    def predict_paths(self, paths: Sequence, category: str, batch: int = 32) -> Dict[str, np.ndarray]:
        """Keypoints of image files of one category: {"xy": (N, K, 2) float original pixels
        (unclipped, as the run's test.csv / test_stack.csv), "score": (N, K), "sizes": (N, 2)}.
        K: the category's keypoints in CATEGORY_KEYPOINTS order. ImageError names a bad file."""
        if category not in self.categories:
            raise ValueError(f"ensemble {self.name!r} predicts {', '.join(self.categories)}, not {category!r}")
        parts = [self._predict_batch(paths[i:i + batch], category) for i in range(0, len(paths), batch)]
        if not parts:
            k = len(CATEGORY_KEYPOINTS[category])
            return {"xy": np.zeros((0, k, 2)), "score": np.zeros((0, k)), "sizes": np.zeros((0, 2), int)}
        return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}

    def _predict_batch(self, paths: Sequence, category: str) -> Dict[str, np.ndarray]:
        from pipeline.combine.stacker import stack_arrays
        from pipeline.heatmap.inference import predict_category
        from pipeline.prep.images import load_letterboxed

        loaded: Dict[Tuple[int, int], Tuple] = {}
        per_fold: Dict[int, List[Dict]] = {}
        sizes = None
        for member in self.members:
            cfg = member.cfg.for_category(category)
            key = (cfg.cache_size, cfg.model.margin)
            if key not in loaded:
                rows = [load_letterboxed(p, *key) for p in paths]
                loaded[key] = (np.stack([r[0] for r in rows]), np.stack([r[3] for r in rows]),
                               np.array([[r[1], r[2]] for r in rows]))
            images, params, sizes = loaded[key]
            name = joint.model_for(cfg, category)
            for f, path in enumerate(member.models[name]):
                pred = predict_category(self._model(path), name, category, images, params, sizes, cfg)
                per_fold.setdefault(f, []).append(stack_arrays(pred))
        folds = [per_fold[f] for f in sorted(per_fold)]
        score = np.mean([a["score"] for fold in folds for a in fold], axis=0)
        if category in self.stackers:
            from pipeline.combine.stacker import apply_stacker, load_stacker

            xy = apply_stacker(load_stacker(self.stackers[category]), folds, sizes, category)
        else:  # as `make ensemble`: every member × fold prediction weighs the same
            xy = np.mean([a["xy"] for fold in folds for a in fold], axis=0)
        return {"xy": xy, "score": score, "sizes": sizes}

    def predict_image(self, path, category: str) -> Dict:
        """{image, category, width, height, keypoints: {name: [x, y, score]}} in original pixels
        (clipped to the image), as `python -m pipeline.stages.predict_image` prints it."""
        pred = self.predict_paths([path], category)
        xy, score, (width, height) = pred["xy"][0].copy(), pred["score"][0], pred["sizes"][0]
        xy[:, 0] = np.clip(xy[:, 0], 0, width - 1)
        xy[:, 1] = np.clip(xy[:, 1], 0, height - 1)
        return {"image": str(path), "category": category, "width": int(width), "height": int(height),
                "keypoints": {n: [round(float(p[0]), 2), round(float(p[1]), 2), round(float(s), 4)]
                              for n, p, s in zip(CATEGORY_KEYPOINTS[category], xy, score)}}

    def network_count(self) -> int:
        """Distinct trained networks (the competition's model count, pipeline/store/networks.py)."""
        return len({p for m in self.members for paths in m.models.values() for p in paths})


def _model_names(cfg: Config, categories: Sequence[str]) -> List[str]:
    """The models of a member that the ensemble's categories need."""
    return sorted({joint.model_for(cfg.for_category(c), c) for c in categories if c in cfg.data.categories})


# --------------------------------------------------------------------------- export


def _score_rows(output, name: str) -> Dict[str, Dict]:
    rows = {}
    for suffix, label in (("", "plain"), ("_stack", "stacked")):
        record = read_record(run_dir(output, name) / f"scores{suffix}.json")
        if record and "row" in record:
            row = record["row"]
            rows[label] = {k: row.get(k) for k in ("cv_ne", "cv_ne_lo", "cv_ne_hi", "test_ne", "test_ne_lo",
                                                   "test_ne_hi", "n_points")}
            rows[label]["per_category_cv"] = {c: row.get(f"cv_ne_{c}") for c in CATEGORIES}
    return rows


def _versions() -> Dict[str, str]:
    from importlib import metadata

    out = {}
    for dist in ("tensorflow", "tensorflow-cpu", "keras", "numpy", "opencv-python-headless", "lightgbm"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out


def export_run(output, name: str, other_runtimes: bool = True, progress: bool = True) -> Path:
    """Write OUTPUT/export/<name>/ and OUTPUT/export/<name>.tar.gz from the run's directories.

    The directory is built beside its final place and renamed into it, so an interrupted
    export leaves the previous bundle whole. Returns the directory.
    """
    from pipeline.store.networks import run_networks
    from pipeline.store.rundata import run_data

    live = Ensemble.from_output(output, name)
    prep = run_data(output, name)
    final = export_dir(output, name)
    tmp = final.parent / f".{name}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    (tmp / "stacker").mkdir(parents=True)
    members_meta = []
    jobs = [(m, model, f, src) for m in live.members for model, paths in m.models.items()
            for f, src in enumerate(paths)]
    for src in (j[3] for j in jobs):
        if not src.exists():
            raise FileNotFoundError(f"missing model {src} (run `make train-all` first)")
    from tqdm import tqdm

    files: Dict[str, Dict[str, List[str]]] = {}
    training: Dict[str, Dict[str, List[Dict]]] = {}
    for member, model, f, src in tqdm(jobs, desc="export", unit="model", disable=not progress):
        metrics = read_record(src.parent / "metrics.json") or {}
        training.setdefault(member.run, {}).setdefault(model, []).append(
            {k: metrics.get(k) for k in ("epochs", "best_epoch", "seconds", "val_ne", "train_img_per_s",
                                         "stop_reason")})
        rel = Path("members") / member.run / model / f"fold{f}.keras"
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, tmp / rel)
        saved = tmp / rel.with_name(f"fold{f}_savedmodel")
        plain = float32_model(live._model(src))  # SavedModel, TFLite and ONNX compute in float32
        plain.export(str(saved), verbose=False)
        if other_runtimes:
            from pipeline.release.runtimes import convert_onnx, convert_saved_model

            (tmp / rel.with_suffix(".tflite")).write_bytes(convert_saved_model(saved))
            (tmp / rel.with_suffix(".onnx")).write_bytes(convert_onnx(plain))
        files.setdefault(member.run, {}).setdefault(model, []).append(str(rel))
    for member in live.members:
        save_config(member.cfg, tmp / "members" / member.run / "config.yaml")
        members_meta.append({"run": member.run, "config": f"members/{member.run}/config.yaml",
                             "models": files[member.run], "folds": len(member.cfg.fold_ids),
                             "training": training[member.run]})
    stackers = {}
    for category, path in live.stackers.items():
        shutil.copyfile(path, tmp / "stacker" / f"{category}.json")
        stackers[category] = f"stacker/{category}.json"
    meta = {
        "version": BUNDLE_VERSION, "name": name, "categories": live.categories, "members": members_meta,
        "stackers": stackers, "models": len(run_networks(output, name, live.categories)),
        "keypoints": {"all": list(KEYPOINTS), "flip_index": list(FLIP_INDEX),
                      "per_category": {c: CATEGORY_KEYPOINTS[c] for c in live.categories}},
        "codec": {m.run: {"input_size": m.cfg.model.input_size, "stride": m.cfg.model.stride,
                          "margin": m.cfg.model.margin, "cache_size": m.cfg.cache_size,
                          "crop": dataclasses.asdict(m.cfg.crop), **dataclasses.asdict(m.cfg.codec),
                          "predict": dataclasses.asdict(m.cfg.predict)} for m in live.members},
        "data": {"dataset": prep.dataset, "input": str(prep.input), "folds": prep.k, "fold_seed": prep.seed,
                 "fold_assignment": file_id(prep.folds_file),
                 "n_train": int(len(prep.train_index().image_id))},
        "scores": _score_rows(output, name),
        "created": datetime.datetime.now().isoformat(timespec="seconds"), "versions": _versions(),
    }
    write_text_atomic(tmp / "bundle.json", json.dumps(meta, indent=2, default=str))
    write_text_atomic(tmp / "MODEL_CARD.md", model_card(meta, live))
    old = final.parent / f".{name}.old"
    if final.exists():
        if old.exists():
            shutil.rmtree(old)
        final.rename(old)
    tmp.rename(final)
    if old.exists():
        shutil.rmtree(old)
    with atomic_path(final.parent / f"{name}.tar.gz") as tar_tmp:
        with tarfile.open(tar_tmp, "w:gz") as tar:
            tar.add(final, arcname=name)
    return final


def _ne_text(row: Optional[Dict], split: str) -> str:
    if not row or row.get(f"{split}_ne") is None or not np.isfinite(float(row[f"{split}_ne"])):
        return "-"
    return f"{row[f'{split}_ne']:.4f} [{row[f'{split}_ne_lo']:.4f}, {row[f'{split}_ne_hi']:.4f}]"


def model_card(meta: Dict, live: Ensemble) -> str:
    """A short markdown card: what data, what budget, what NE, how to run it."""
    used = meta["scores"].get("stacked" if meta["stackers"] else "plain") or meta["scores"].get("plain")
    lines = [f"# {meta['name']}: FashionAI keypoint ensemble", "",
             f"- **Predicts** {', '.join(meta['categories'])}: every keypoint in original pixels.",
             f"- **Networks** {meta['models']} ({len(live.members)} member(s) × folds"
             + (", LightGBM stacker per category" if meta["stackers"] else "") + ").",
             f"- **Data** dataset `{meta['data']['dataset']}` ({meta['data']['n_train']} training images, "
             f"{meta['data']['folds']} folds, seed {meta['data']['fold_seed']}, assignment "
             f"`{meta['data']['fold_assignment']}`).",
             f"- **NE** (normalized error, lower is better; 95 % bootstrap interval): CV {_ne_text(used, 'cv')}, "
             f"test {_ne_text(used, 'test')}.", ""]
    lines += ["| member | network | input px | budget per model | trained (per model) | folds |",
              "|---|---|---|---|---|---|"]
    for m, mm in zip(live.members, meta["members"]):
        t = m.cfg.train
        budget = f"{t.time_budget_s:g} s" if t.time_budget_s else f"{t.epochs} epochs"
        runs = [r for rows in mm["training"].values() for r in rows if r.get("epochs") is not None]
        trained = ", ".join(f"{r['epochs']} ep / {r['seconds'] or 0:.0f} s"
                            + (f" (val NE {r['val_ne']:.3f})" if r.get("val_ne") is not None else "")
                            for r in runs) or "-"
        lines.append(f"| {m.run} | {m.cfg.model.name} w{m.cfg.model.width}"
                     f"{' joint' if t.joint else ''} | {m.cfg.model.input_size}"
                     f"{' + crop' if m.cfg.crop.enabled else ''} | {budget} | {trained} | {len(m.cfg.fold_ids)} of {m.cfg.data.folds} |")
    lines += ["", "## Run it", "", "```",
              "python -m pipeline.stages.predict_image --bundle <this directory> --category dress IMAGE.jpg",
              "make predict-dir BUNDLE=<this directory> IMAGES=<dir with <category>/*.jpg> [CATEGORY=dress]",
              "```", "",
              f"Made with {', '.join(f'{k} {v}' for k, v in meta['versions'].items())} on {meta['created']}.",
              "Versions: `requirements.lock` of the repository that exported it.", ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------- folders


def list_images(directory, category: Optional[str] = None) -> List[Tuple[str, str, Path]]:
    """(image_id, category, path) of a folder's images, sorted. With `category`, every image under
    `directory` is of it; otherwise the folder holds <category>/<file> subfolders (the official
    Images/ layout). image_id: the path relative to the folder's parent (Images/<category>/<file>)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"IMAGES: no such folder {directory}")
    found = []
    for path in sorted(p for p in directory.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()):
        cat = category or path.parent.name
        if cat not in CATEGORIES:
            raise ValueError(f"{path}: category unknown (its folder {path.parent.name!r} is not one of "
                             f"{', '.join(CATEGORIES)}); give CAT=")
        found.append((str(path.relative_to(directory.parent)), cat, path))
    if not found:
        raise FileNotFoundError(f"IMAGES: no image files under {directory}")
    return found


def predict_folder(ensemble: Ensemble, directory, out_csv, category: Optional[str] = None) -> int:
    """Predict every image of a folder; write a Tianchi-format CSV (rounded, clipped, v=1). Returns rows."""
    from pipeline.keypoints import KEYPOINT_INDEX, NUM_KEYPOINTS
    from pipeline.scoring.submission import finalize
    from pipeline.tianchi import write_annotations

    images = list_images(directory, category)
    ids, cats = [i for i, _, _ in images], [c for _, c, _ in images]
    xy = np.full((len(images), NUM_KEYPOINTS, 2), np.nan)
    sizes = np.zeros((len(images), 2), int)
    for cat in sorted(set(cats)):
        rows = [i for i, c in enumerate(cats) if c == cat]
        pred = ensemble.predict_paths([images[i][2] for i in rows], cat)
        cols = [KEYPOINT_INDEX[n] for n in CATEGORY_KEYPOINTS[cat]]
        xy[np.ix_(rows, cols)] = pred["xy"]
        sizes[rows] = pred["sizes"]
    kps = np.concatenate([finalize(xy, sizes), np.ones((len(ids), NUM_KEYPOINTS, 1), np.int64)], -1)
    write_annotations(out_csv, ids, cats, kps)
    return len(ids)
