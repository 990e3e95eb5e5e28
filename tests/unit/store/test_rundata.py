"""RunData's model folds (`data.fold_models`): one spelling for "every fold", old bindings unchanged."""
import numpy as np

from pipeline.store.rundata import Index, RunData


def binding(models=0, k=4):
    return RunData("/out", "ds-1", "/in", 160, 8, k, 42, models)


def test_every_fold_has_one_spelling_and_keeps_the_old_identity():
    old = binding()
    assert old.fold_ids == (0, 1, 2, 3)
    assert binding(4) == old and binding(9) == old  # as many models as folds (or more): every fold
    assert old.identity() == {"dataset": "ds-1", "folds": "k4_seed42", "cache": "s160_m8"}
    assert "models" not in old.to_dict()  # prep.json of runs made before fold_models stays byte-identical


def test_fewer_models_than_folds_change_the_identity():
    two = binding(2)
    assert two.fold_ids == (0, 1)
    assert two.identity(with_cache=False) == {"dataset": "ds-1", "folds": "k4_seed42", "fold_models": 2}
    assert two.to_dict()["models"] == 2


def test_index_subset_keeps_rows_aligned():
    import pandas as pd

    n = 5
    index = Index(pd.DataFrame({"image_id": list("abcde")}), np.array(list("abcde"), object),
                  np.array(["dress"] * n, object), np.arange(n * 24 * 3).reshape(n, 24, 3), np.ones((n, 2)),
                  None, np.arange(n) * 10)
    sub = index.subset(np.array([True, False, True, False, True]))
    assert list(sub.image_id) == ["a", "c", "e"] and list(sub.frame["image_id"]) == ["a", "c", "e"]
    assert np.array_equal(sub.keypoints, index.keypoints[[0, 2, 4]]) and sub.params is None
    assert list(sub.cache_row) == [0, 20, 40]  # still rows of the full cache
