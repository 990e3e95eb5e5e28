"""Leaderboard intervals and paired differences (pipeline/scoring/leaderboard.py), on hand-made error files."""
from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.scoring.leaderboard import (
    LEADERBOARD_COLUMNS,
    format_board,
    load_errors,
    update_leaderboard,
    with_paired_differences,
)
from pipeline.store.layout import errors_path
from pipeline.store.predictions import save_npz


def _errors(rng, n, scale, ids=None):
    ids = np.array([f"Images/dress/{i}.jpg" for i in range(n)]) if ids is None else ids
    err = np.full((n, 24), np.nan, np.float32)
    err[:, :15] = rng.gamma(2.0, scale / 2.0, size=(n, 15))
    return {"image_id": ids, "category": np.array(["dress"] * n), "err": err}


def _save(out, name, **splits):
    save_npz(errors_path(out, name), **{f"{s}_{k}": v for s, e in splits.items() for k, v in e.items()})


def _row(name, cv, test, categories="dress"):
    return {"name": name, "categories": categories, "cv_ne": cv, "test_ne": test}


def test_errors_path_of_stacked_rows(tmp_path):
    assert errors_path(tmp_path, "r") == tmp_path / "runs" / "r" / "scores_errors.npz"
    assert errors_path(tmp_path, "r+stack") == tmp_path / "runs" / "r" / "scores_stack_errors.npz"
    assert load_errors(tmp_path, "missing") is None


def test_paired_differences_to_the_best_row(tmp_path):
    rng = np.random.default_rng(0)
    good_cv, good_test = _errors(rng, 60, 0.05), _errors(rng, 20, 0.05)
    bad_cv = dict(good_cv, err=good_cv["err"] * 1.5)
    bad_test = dict(good_test, err=good_test["err"] * 1.5)
    # a row scored on other images (another data set): no pairing possible
    other_cv = _errors(rng, 60, 0.05, ids=np.array([f"Images/dress/x{i}.jpg" for i in range(60)]))
    _save(tmp_path, "good", cv=good_cv, test=good_test)
    _save(tmp_path, "bad", cv=bad_cv, test=bad_test)
    _save(tmp_path, "other", cv=other_cv)
    board = pd.DataFrame([_row("bad", float(np.nanmean(bad_cv["err"])), float(np.nanmean(bad_test["err"]))),
                          _row("good", float(np.nanmean(good_cv["err"])), float(np.nanmean(good_test["err"]))),
                          _row("other", 0.5, np.nan),
                          _row("skirt_only", 0.01, np.nan, categories="skirt")], columns=LEADERBOARD_COLUMNS)
    board = with_paired_differences(tmp_path, board).set_index("name")
    assert (board.loc[["bad", "good", "other"], "best"] == "good").all()  # lowest CV NE over the same categories
    assert board.loc["skirt_only", "best"] == "skirt_only"  # its own group
    assert board.loc["good", "cv_vs_best"] == 0 and board.loc["good", "cv_vs_best_hi"] == 0
    for split, e in (("cv", good_cv), ("test", good_test)):
        diff = board.loc["bad", f"{split}_vs_best"]
        assert diff > 0 and np.isclose(diff, 0.5 * np.nanmean(e["err"]), rtol=1e-5)
        assert 0 < board.loc["bad", f"{split}_vs_best_lo"] < diff < board.loc["bad", f"{split}_vs_best_hi"]
    assert np.isnan(board.loc["other", "cv_vs_best"])
    text = format_board(board.reset_index())
    lines = {line.split()[0]: line for line in text.splitlines()[1:] if line.split()}
    assert "best" in lines["good"] and "*" in lines["bad"] and "n/a" in lines["other"]


def test_update_leaderboard_keeps_intervals(tmp_path):
    rng = np.random.default_rng(1)
    e = _errors(rng, 30, 0.05)
    _save(tmp_path, "a", cv=e)
    row = dict(_row("a", float(np.nanmean(e["err"])), np.nan), cv_ne_lo=0.04, cv_ne_hi=0.06)
    board = update_leaderboard(tmp_path, row)
    again = pd.read_csv(tmp_path / "leaderboard.csv")
    assert list(again.columns) == LEADERBOARD_COLUMNS
    assert again.loc[0, "cv_ne_lo"] == 0.04 and again.loc[0, "best"] == "a" and board.loc[0, "cv_vs_best"] == 0
    assert "0.04" in format_board(again)


def test_compare_runs_per_category_and_keypoint(tmp_path, capsys):
    from pipeline.scoring import compare
    from pipeline.stages import compare as compare_stage

    rng = np.random.default_rng(2)
    a = _errors(rng, 50, 0.05)
    b = dict(a, err=a["err"].copy())
    b["err"][:, 0] *= 0.5            # B much better on neckline_left only
    b["err"][:, 1] *= 1.0            # identical elsewhere
    _save(tmp_path, "a", cv=a, test=a)
    _save(tmp_path, "b", cv=b)
    result = compare.compare_runs(tmp_path, "a", "b")
    assert list(result) == ["cv"]    # B has no test scores: only CV is compared
    rows = {(r["category"], r["keypoint"]): r for r in result["cv"]}
    assert rows[("dress", "neckline_left")]["verdict"] == "B better"
    assert rows[("dress", "neckline_right")]["verdict"] == "~" and rows[("dress", "neckline_right")]["diff"] == 0
    assert rows[("dress", "all")]["diff"] < 0
    assert compare_stage.main(["--output", str(tmp_path), "a", "b"]) == 0
    assert "neckline_left" in capsys.readouterr().out
    assert compare_stage.main(["--output", str(tmp_path), "a", "nope"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'nope'" in err[0] and "make score" in err[0]


def test_compare_other_images_is_not_paired(tmp_path):
    from pipeline.scoring import compare

    rng = np.random.default_rng(3)
    a = _errors(rng, 20, 0.05)
    b = _errors(rng, 20, 0.05, ids=np.array([f"Images/dress/y{i}.jpg" for i in range(20)]))
    rows = compare.compare_split(a, b)
    assert rows and all(r["verdict"] == "n/a" for r in rows)
