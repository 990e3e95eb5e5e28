"""Every path under OUTPUT, in one place: the only code that spells the run store's shape
(the Makefile gets its paths from here too, through vars.mk: pipeline/store/stamps.py).

    prep/<dataset>/cache/<s..._m...>/, folds/<k..._seed...>.csv   (keyed by what made them)
    runs/<run>/{prep,predictions,ensemble,stack,submit,scores}.json (one record per stage: RUN_FILES)
    runs/<run>/<category>/{oof,test,test_stack}.csv              (ensembled predictions)
    runs/<run>/<category>/fold<k>/{metrics.json,model.keras,...}  (one model's artifacts: MODEL_FILES)
    runs/<run>/.stamps/<stage>.json, vars.mk                      (make's per-stage settings)
    leaderboard.csv, submission.csv, export/<run>/                (shared by every run)
"""
from __future__ import annotations

from pathlib import Path

#: a run's files (runs/<run>/...), by what writes them
RUN_FILES = {"prep": "prep.json", "baseline": "baseline.json", "predictions": "predictions.json", "ensemble": "ensemble.json",
             "stack": "stack.json", "submit": "submit.json", "scores": "scores.json",
             "submission": "submission.csv", "report": "report/index.html", "config": "config.yaml"}
#: one model's files (runs/<run>/<category>/fold<k>/...)
MODEL_FILES = {"metrics": "metrics.json", "model": "model.keras", "history": "history.csv",
               "config": "config.yaml", "oof": "oof.npz", "test": "test.npz", "predict": "predict.json", "resume": "resume",
               "tensorboard": "tensorboard"}


def run_dir(output, run: str) -> Path:
    return Path(output) / "runs" / run


def run_file(output, run: str, key: str) -> Path:
    """A run's record or output file, e.g. run_file(out, "demo", "ensemble") → runs/demo/ensemble.json."""
    return run_dir(output, run) / RUN_FILES[key]


def report_dir(output, run: str) -> Path:
    """runs/<run>/report/: the report's figures and index.html."""
    return run_dir(output, run) / "report"


def model_file(output, run: str, category: str, fold: int, key: str) -> Path:
    """One model's file, e.g. model_file(out, "demo", "dress", 0, "metrics") → runs/demo/dress/fold0/metrics.json."""
    return fold_dir(output, run, category, fold) / MODEL_FILES[key]


def category_csv(output, run: str, category: str, split: str, stacked: bool = False) -> Path:
    """Ensembled (or stacked) float predictions of one category: runs/<run>/<category>/<split>[_stack].csv."""
    return run_dir(output, run) / category / f"{split}{'_stack' if stacked else ''}.csv"


def leaderboard_path(output) -> Path:
    return Path(output) / "leaderboard.csv"


def submission_path(output) -> Path:
    """OUTPUT/submission.csv: a copy of the last submitted run's runs/<run>/submission.csv."""
    return Path(output) / "submission.csv"


def export_dir(output, run: str) -> Path:
    return Path(output) / "export" / run


def predict_dir_csv(output, bundle) -> Path:
    """`make predict-dir`'s default CSV: OUTPUT/predict_dir/<bundle directory's name>.csv."""
    return Path(output) / "predict_dir" / f"{Path(bundle).name}.csv"


def data_preview_path(output) -> Path:
    return Path(output) / "data_preview.png"


def clean_paths(output) -> list:
    """What `make clean` removes: every prepared dataset, run, leaderboard and submission."""
    out = Path(output)
    return [out / "prep", out / "runs", out / "report", submission_path(out), leaderboard_path(out)]


def model_pattern(output, run: str, category: str) -> str:
    """make's static pattern of a category's model files: the fold number is the stem `%`."""
    return str(fold_dir(output, run, category, 0) / MODEL_FILES["metrics"]).replace("fold0", "fold%")


def fold_dir(output, run: str, category: str, fold: int) -> Path:
    return run_dir(output, run) / category / f"fold{fold}"


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


def prep_ref_path(output, run: str) -> Path:
    return run_file(output, run, "prep")


# --------------------------------------------------------------------------- make stamps


def stamps_dir(output, run: str) -> Path:
    return run_dir(output, run) / ".stamps"


def stamp_path(output, run: str, stage: str) -> Path:
    """make's stamp of one stage (or `train-<model>`): the settings it depends on."""
    return stamps_dir(output, run) / f"{stage}.json"


def vars_path(output, run: str) -> Path:
    return stamps_dir(output, run) / "vars.mk"


def stacker_path(output, name: str, category: str) -> Path:
    """The test-time stacker of one category: runs/<name>/<category>/stacker.json."""
    return run_dir(output, name) / category / "stacker.json"


def errors_path(output, row_name: str) -> Path:
    """Per-image point errors behind a leaderboard row: runs/<name>/scores[_stack]_errors.npz."""
    base, stacked = (row_name[:-len("+stack")], True) if row_name.endswith("+stack") else (row_name, False)
    return run_dir(output, base) / f"scores{'_stack' if stacked else ''}_errors.npz"
