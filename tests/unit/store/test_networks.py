"""pipeline.store.networks: the count of trained networks a run or submission needs (the model limit)."""
import pytest

from pipeline.keypoints import CATEGORIES
from pipeline.store.layout import fold_dir, run_dir
from pipeline.store.networks import check_limit, run_networks, submission_networks
from pipeline.store.records import write_record


def fake_run(out, run, model_of, folds=2):
    """Fold predict.json records of `run`: category c, fold f predicted by network model_of(c, f)."""
    for c in CATEGORIES:
        for f in range(folds):
            write_record(fold_dir(out, run, c, f) / "predict.json", {"model": model_of(c, f), "settings": {}})


def test_per_category_joint_and_ensemble_counts(tmp_path):
    fake_run(tmp_path, "percat", lambda c, f: f"{c}-{f}")
    fake_run(tmp_path, "joint", lambda c, f: f"joint-{f}")  # one network per fold answers every category
    assert len(run_networks(tmp_path, "percat", CATEGORIES)) == 10
    assert len(run_networks(tmp_path, "percat", ["dress", "skirt"])) == 4
    assert len(run_networks(tmp_path, "joint", CATEGORIES)) == 2
    write_record(run_dir(tmp_path, "ens") / "ensemble.json", {}, members=["percat", "joint"])
    assert len(run_networks(tmp_path, "ens", CATEGORIES)) == 12
    # a submission: the joint run answers dress, the mean shape (no fold records) the rest
    assert submission_networks(tmp_path, {"joint": ["dress"], "meanshape": ["skirt"]}) == 2
    assert submission_networks(tmp_path, {"percat": ["dress"], "joint": []}) == 2


def test_limit_names_the_count():
    check_limit(2, 2, "x")
    check_limit(40, 0, "x")  # 0: no limit
    with pytest.raises(ValueError, match="needs 3 trained networks, over submit.max_models=2"):
        check_limit(3, 2, "submission of run 'r'")
