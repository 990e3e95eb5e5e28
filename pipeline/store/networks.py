"""How many trained networks a run's predictions need: the competition's model limit.

FashionAI's second round allowed at most two models per submission (a detector counted as
one). A run's count is the number of *distinct* network files its fold predictions were made
with, over every ensemble member, category and fold: a per-category run of k folds needs
5 × k networks, a joint run (`train.joint`) k, an ensemble of two joint runs 2 × k. The crop
pass (`crop.enabled`) runs the same network twice and adds nothing; the mean-shape baseline
and the LightGBM stacker are not networks and count 0. The identity of a network is the
content hash its fold's `predict.json` recorded (`inputs.model`), so the count is of what
was used, not of what a config says.
"""
from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

from pipeline.store.layout import model_file, run_file
from pipeline.store.records import read_record


def run_networks(output, name: str, categories: Sequence[str]) -> List[Tuple[str, str]]:
    """Sorted distinct (member run, model content id) pairs behind run/ensemble `name`'s predictions
    of `categories`; members without fold records (the mean shape) add none."""
    record = read_record(run_file(output, name, "ensemble")) or {}
    members = record.get("members") or [name]
    found = set()
    for member in members:
        for category in categories:
            fold = 0
            while True:
                rec = read_record(model_file(output, member, category, fold, "predict"))
                if rec is None:
                    break
                model = rec.get("inputs", {}).get("model")
                if model:
                    found.add((member, model))
                fold += 1
    return sorted(found)


def submission_networks(output, plan: Dict[str, Sequence[str]]) -> int:
    """Networks a submission needs: its plan maps each run to the test categories it answers."""
    return len({net for run, cats in plan.items() if cats for net in run_networks(output, run, cats)})


def check_limit(count: int, limit: int, what: str) -> None:
    """ValueError naming the count when `limit` (> 0) is exceeded; 0 means no limit."""
    if limit and count > limit:
        raise ValueError(f"{what} needs {count} trained networks, over submit.max_models={limit} "
                         f"(count: distinct fold models of every member; set submit.max_models=0 for no limit)")
