"""Per-stage settings stamps and vars.mk: what make needs to know about a run.

Written while make reads the Makefile (`pipeline.stages.stamps`): one JSON stamp per stage
(runs/<run>/.stamps/<stage>.json, the resolved settings it depends on; rewritten only when its
content changes, so make's file times see exactly the stages an edit concerns) and vars.mk, the
Makefile fragment that holds the run's names and every artifact path make uses (the Makefile
itself spells none: they come from pipeline/store/layout.py).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict

from pipeline.config import STAGE_SETTINGS
from pipeline.joint import baseline_name, model_names
from pipeline.keypoints import CATEGORIES
from pipeline.store import layout
from pipeline.store.records import canonical, input_fingerprint, write_if_changed

#: run-level stages whose settings may differ per category (config `categories:` overrides); train
#: has a stamp per category instead (train-<cat>.json), its run-level stamp the base settings only
PER_CATEGORY_STAGES = ("predict",)


def _json(settings: Dict) -> str:
    return json.dumps(canonical(settings), indent=2, sort_keys=True) + "\n"


def write_stamps(output, run: str, cfg, input_dir=None) -> Dict[str, bool]:
    """One JSON stamp per stage of `run` (its resolved settings); rewritten only when changed.

    The prep stamp also holds the input directory and its fingerprint, so new or
    changed input files reach `make preprocess`. Returns {stage: rewritten}.
    """
    changed = {}
    for stage in STAGE_SETTINGS:
        settings = stage_stamp_settings(cfg, stage)
        if stage == "prep" and input_dir is not None:
            settings = {**settings, "input": str(Path(input_dir).resolve()),
                        "fingerprint": input_fingerprint(input_dir)}
        changed[stage] = write_if_changed(layout.stamp_path(output, run, stage), _json(settings))
    for cat in model_names(cfg):  # one train stamp per category (or the joint model): its models' alone
        changed[f"train-{cat}"] = write_if_changed(layout.stamp_path(output, run, f"train-{cat}"),
                                                   _json(cfg.for_category(cat).stage_settings("train")))
    return changed


def stage_stamp_settings(cfg, stage: str) -> Dict:
    """A run-level stage's settings; for predict also every overridden category's own."""
    settings = cfg.stage_settings(stage)
    if stage in PER_CATEGORY_STAGES and cfg.categories:
        own = {cat: cfg.for_category(cat).stage_settings(stage) for cat in cfg.data.categories
               if cat in cfg.categories}
        own = {cat: s for cat, s in own.items() if s != settings}  # only categories that differ
        if own:
            settings = {**settings, "categories": own}
    return settings


def make_vars(cfg, run: str, output) -> str:
    """Makefile fragment (one `VAR := value` a line): the run's names and every path its targets use.

    Names: CATS, MODEL_NAMES, FOLD_IDS, ENS, MEMBERS, BASE_RUN, FALLBACK, PARTIAL. Paths: the
    stamps (STAMP_<stage>, STAMP_train-<model>), the stage records (PREP_REF, PREDS, ENSEMBLE_REC,
    STACK_REC, SUBMIT_REC, SCORES_REC, REPORT_HTML, BASE_SCORES, FALLBACK_REC), the model files
    (MODELS, MODELS_<model> and MODEL_PATTERN_<model>, whose stem `%` is the fold), the member
    runs' prediction records (MEMBER_PREDS), RUN_SUBMISSION and SUBMISSION.
    """
    ens, members = cfg.ensemble_target(run)
    base = baseline_name(cfg)
    fallback = cfg.submit.fallback or base
    names = model_names(cfg)
    folds = cfg.fold_ids
    lines = {
        "CATS": " ".join(cfg.data.categories),
        "MODEL_NAMES": " ".join(names),
        "FOLD_IDS": " ".join(str(f) for f in folds),
        "ENS": ens,
        "MEMBERS": " ".join(members),
        "BASE_RUN": base,
        "FALLBACK": fallback,
        "PARTIAL": "" if set(cfg.data.categories) >= set(CATEGORIES) else "1",
        "PREP_REF": layout.prep_ref_path(output, run),
        "PREDS": layout.run_file(output, run, "predictions"),
        "MEMBER_PREDS": " ".join(str(layout.run_file(output, m, "predictions")) for m in members if m != run),
        "ENSEMBLE_REC": layout.run_file(output, ens, "ensemble"),
        "STACK_REC": layout.run_file(output, ens, "stack"),
        "SUBMIT_REC": layout.run_file(output, ens, "submit"),
        "SCORES_REC": layout.run_file(output, ens, "scores"),
        "REPORT_HTML": layout.run_file(output, ens, "report"),
        "RUN_SUBMISSION": layout.run_file(output, ens, "submission"),
        "SUBMISSION": layout.submission_path(output),
        "BASE_SCORES": layout.run_file(output, base, "scores"),
        # a fallback other than the baseline is made by its own config: its ensemble record
        "FALLBACK_REC": layout.run_file(output, fallback, "scores" if fallback == base else "ensemble"),
        "MODELS": " ".join(str(layout.model_file(output, run, c, f, "metrics")) for c in names for f in folds),
    }
    for stage in list(STAGE_SETTINGS) + [f"train-{c}" for c in names]:
        lines[f"STAMP_{stage}"] = layout.stamp_path(output, run, stage)
    for c in names:
        lines[f"MODELS_{c}"] = " ".join(str(layout.model_file(output, run, c, f, "metrics")) for f in folds)
        lines[f"MODEL_PATTERN_{c}"] = layout.model_pattern(output, run, c)
    return "".join(f"{k} := {v}\n" for k, v in lines.items())


def drop_broken_models(output, run: str, cfg) -> None:
    """A finished model whose model.keras is missing, truncated or replaced loses its metrics.json
    (make's target), so that make retrains it instead of handing the broken file to predict."""
    import sys

    from pipeline import joint
    from pipeline.store.records import broken_model

    for name in joint.model_names(cfg):
        for fold in cfg.fold_ids:
            metrics = layout.model_file(output, run, name, fold, "metrics")
            if metrics.exists():
                problem = broken_model(metrics.parent)
                if problem:
                    print(f"warning: {problem}; it will be retrained", file=sys.stderr)
                    metrics.unlink(missing_ok=True)


def write_make_files(output, run: str, cfg, input_dir=None) -> Path:
    """The stamps and vars.mk of `run`; returns vars.mk's path (what the Makefile includes)."""
    write_stamps(output, run, cfg, input_dir)
    drop_broken_models(output, run, cfg)
    path = layout.vars_path(output, run)
    write_if_changed(path, make_vars(cfg, run, output))
    return path
