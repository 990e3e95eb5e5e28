"""`make score-file`: leaderboard rows for any submission file (pipeline/scoring/leaderboard.py score_external)."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from conftest import cells, run_module, write_csv

from pipeline.keypoints import CATEGORY_KEYPOINTS, KEYPOINT_INDEX, KEYPOINTS
from pipeline.scoring.leaderboard import (
    LEADERBOARD_COLUMNS,
    load_errors,
    read_board,
    score_external,
)
from pipeline.scoring.metrics import bootstrap_ne, image_sums
from pipeline.store.layout import errors_path

I = KEYPOINT_INDEX


def _truth(n):
    """n skirts: waistband (0, 0)-(10, 0) (s = 10), hemline (0, 20)-(10, 20), all visible."""
    kps = np.full((n, 24, 3), -1, np.int64)
    for name, xy in (("waistband_left", (0, 0)), ("waistband_right", (10, 0)),
                     ("hemline_left", (0, 20)), ("hemline_right", (10, 20))):
        kps[:, I[name]] = (*xy, 1)
    return kps


def _files(tmp_path, n=6, drop=(), shift=None, name="pred.csv"):
    """answers.csv of n skirts and a competitor-style file: no header, reversed order, every cell
    filled; image i's hemline_left is off by (0, i) (error i/10) or by `shift[i]`."""
    ids = [f"Images/skirt/{i:02d}.jpg" for i in range(n)]
    truth = _truth(n)
    answers = write_csv(tmp_path / "answers.csv", [[i, "skirt", *cells(k)] for i, k in zip(ids, truth)])
    rows = []
    for i in range(n):
        if i in drop:
            continue
        cell = {name: f"{x}_{y}_1" for name, (x, y, _) in zip(KEYPOINTS, truth[i])}
        cell.update({name: f"{3 + k}_{k}_1" for k, name in enumerate(KEYPOINTS)
                     if name not in CATEGORY_KEYPOINTS["skirt"]})  # other categories' cells filled
        dy = i if shift is None else shift[i]
        cell["hemline_left"] = f"0_{20 + dy}_1"
        rows.append(",".join([ids[i], "skirt", *[cell[k] for k in KEYPOINTS]]))
    pred = tmp_path / name
    pred.write_text("\n".join(rows[::-1]) + "\n")
    return answers, pred, ids


def test_external_row_on_the_leaderboard_with_interval_and_per_category(tmp_path):
    answers, pred, ids = _files(tmp_path)
    out = tmp_path / "out"
    result = score_external(out, pred, "rival", answers)
    row = result["row"]
    expected = sum(i / 10 for i in range(6)) / 24  # 24 visible points, hemline_left off by i/10
    assert row["test_ne"] == pytest.approx(expected) and row["n_points"] == 24
    assert row["test_ne_skirt"] == pytest.approx(expected) and math.isnan(row["test_ne_dress"])
    assert math.isnan(row["cv_ne"]) and row["categories"] == "skirt" and row["source"].startswith("file ")
    err = np.zeros((6, 24)) * np.nan
    for i in range(6):
        err[i, [I[n] for n in CATEGORY_KEYPOINTS["skirt"]]] = 0
        err[i, I["hemline_left"]] = i / 10
    interval = bootstrap_ne(*image_sums(err))
    assert row["test_ne_lo"] == pytest.approx(interval["lo"]) and row["test_ne_hi"] == pytest.approx(interval["hi"])
    assert row["test_ne_lo"] < expected < row["test_ne_hi"]

    board = read_board(out / "leaderboard.csv")
    assert list(board.columns) == LEADERBOARD_COLUMNS
    r = board.set_index("name").loc["rival"]
    assert r["test_ne"] == pytest.approx(expected, abs=1e-6) and np.isnan(r["cv_ne"]) and np.isnan(r["cv_ne_skirt"])
    assert r["test_ne_skirt"] == pytest.approx(expected, abs=1e-6)

    stored = load_errors(out, "rival")
    assert list(stored) == ["test"] and sorted(stored["test"]["image_id"]) == ids
    record = json.loads((out / "runs" / "rival" / "scores.json").read_text())
    assert record["inputs"]["kind"] == "file" and record["source"]["file"] == str(pred)
    assert record["inputs"]["file"] == row["source"].split()[1]


def test_rescoring_the_same_file_rewrites_nothing_and_a_changed_file_is_rescored(tmp_path):
    answers, pred, _ = _files(tmp_path)
    out = tmp_path / "out"
    first = score_external(out, pred, "rival", answers)["row"]
    files = [out / "leaderboard.csv", out / "runs" / "rival" / "scores.json", errors_path(out, "rival")]
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in files}
    again = score_external(out, pred, "rival", answers)["row"]
    assert again == first
    for p in (files[0], files[2]):  # byte-identical and not even rewritten
        assert (p.read_bytes(), p.stat().st_mtime_ns) == before[p]
    assert files[1].read_bytes() == before[files[1]][0]

    _, pred2, _ = _files(tmp_path, shift=[0] * 6, name="pred.csv")  # same path, new content: all exact
    assert score_external(out, pred2, "rival", answers)["row"]["test_ne"] == 0.0


def test_missing_rows_are_left_out_counted_and_compare_pairs_the_common_images(tmp_path, capsys):
    from pipeline.scoring import compare
    from pipeline.stages import compare as compare_stage

    answers, full, ids = _files(tmp_path, name="full.csv")
    _, partial, _ = _files(tmp_path, drop=(2,), shift=[0] * 6, name="partial.csv")
    out = tmp_path / "out"
    score_external(out, full, "full", answers)
    res = score_external(out, partial, "partial", answers)
    assert res["result"]["n_images_missing"] == 1 and res["result"]["missing_image_ids"] == [ids[2]]
    assert res["row"]["n_points"] == 20 and res["row"]["test_ne"] == 0.0
    with pytest.raises(ValueError, match="no prediction"):
        score_external(out, partial, "strict", answers, strict=True)

    rows = {(r["category"], r["keypoint"]): r for r in compare.compare_runs(out, "full", "partial")["test"]}
    both = [i for i in range(6) if i != 2]
    assert rows[("skirt", "all")]["ne_a"] == pytest.approx(sum(i / 10 for i in both) / 20)
    assert rows[("skirt", "hemline_left")]["diff"] == pytest.approx(-sum(i / 10 for i in both) / 5)
    assert compare_stage.main(["--output", str(out), "full", "partial"]) == 0
    assert "1 scored only in A, 0 only in B" in capsys.readouterr().out


def test_cli_and_refusals(tmp_path):
    answers, pred, _ = _files(tmp_path)
    out = tmp_path / "out"
    proc = run_module("pipeline.stages.score", "--output", str(out), "--file", str(pred), "--name", "rival",
                      "--truth", str(answers))
    assert proc.returncode == 0, proc.stderr
    assert "rival" in proc.stdout and "test NE" in proc.stdout and "no header" in proc.stderr
    board = pd.read_csv(out / "leaderboard.csv")
    assert list(board["name"]) == ["rival"]

    no_truth = run_module("pipeline.stages.score", "--output", str(out), "--file", str(pred), "--name", "x",
                          "--truth", str(tmp_path / "none.csv"))
    assert no_truth.returncode != 0 and "TRUTH" in no_truth.stderr
    (out / "runs" / "myrun").mkdir(parents=True)
    (out / "runs" / "myrun" / "ensemble.json").write_text("{}")
    with pytest.raises(ValueError, match="pipeline run"):
        score_external(out, pred, "myrun", answers)
    with pytest.raises(ValueError, match="plain label"):
        score_external(out, pred, "a/b", answers)
    bad = tmp_path / "bad.csv"
    bad.write_text(pred.read_text().replace("Images/skirt/00.jpg", "Images/skirt/zz.jpg"))
    with pytest.raises(ValueError, match="not in the truth"):
        score_external(out, bad, "bad", answers)
    assert not (out / "runs" / "bad" / "scores.json").exists()
