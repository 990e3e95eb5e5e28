"""Per-stage settings stamps and vars.mk: what make needs to know about a run's config.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict

from pipeline.store.layout import stamps_dir
from pipeline.store.records import canonical, write_if_changed


def write_stamps(output, run: str, cfg, input_dir=None) -> Dict[str, bool]:
    """One JSON stamp per stage of `run` (its resolved settings); rewritten only when changed.

    The prep stamp also holds the input directory and its fingerprint, so new or
    changed input files reach `make preprocess`. Returns {stage: rewritten}.
    """
    from pipeline.config import STAGE_SETTINGS

    directory = stamps_dir(output, run)
    changed = {}
    for stage in STAGE_SETTINGS:
        settings = stage_stamp_settings(cfg, stage)
        if stage == "prep" and input_dir is not None:
            from pipeline.store.records import input_fingerprint

            settings = {**settings, "input": str(Path(input_dir).resolve()),
                        "fingerprint": input_fingerprint(input_dir)}
        changed[stage] = write_if_changed(directory / f"{stage}.json",
                                          json.dumps(canonical(settings), indent=2, sort_keys=True) + "\n")
    from pipeline.joint import model_names

    for cat in model_names(cfg):  # one train stamp per category (or the joint model): its models' alone
        changed[f"train-{cat}"] = write_if_changed(
            directory / f"train-{cat}.json",
            json.dumps(canonical(cfg.for_category(cat).stage_settings("train")), indent=2, sort_keys=True) + "\n")
    return changed


#: run-level stages whose settings may differ per category (config `categories:` overrides); train
#: has a stamp per category instead (train-<cat>.json), its run-level stamp the base settings only
PER_CATEGORY_STAGES = ("predict",)


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


def make_vars(cfg, run: str) -> str:
    """Makefile fragment with what the targets need to know about a config (one `VAR := value` a line)."""
    from pipeline.joint import baseline_name, model_names

    ens, members = cfg.ensemble_target(run)
    lines = {
        "CATS": " ".join(cfg.data.categories),
        "MODEL_NAMES": " ".join(model_names(cfg)),
        "FOLD_IDS": " ".join(str(f) for f in range(cfg.data.folds)),
        "ENS": ens,
        "MEMBERS": " ".join(members),
        "BASE_RUN": baseline_name(cfg),
        "FALLBACK": cfg.submit.fallback or baseline_name(cfg),
        "PARTIAL": "" if set(cfg.data.categories) >= set(_all_categories()) else "1",
    }
    return "".join(f"{k} := {v}\n" for k, v in lines.items())


def _all_categories():
    from pipeline.keypoints import CATEGORIES

    return CATEGORIES
