"""Published figures come from docs/results/*.json: every figures block is current, and each
renderer reads its numbers from the result file (a changed number changes the page)."""
import json

import pytest

from pipeline.tools import docs_figures


def test_every_figures_block_is_current():
    assert docs_figures.render(check=True) == [], "stale figures blocks: run `make docs`"


def test_readme_holds_the_results_table():
    text = (docs_figures.REPO / "README.md").read_text()
    assert "<!-- figures:results -->" in text


def test_blocks_follow_the_result_files(tmp_path, monkeypatch):
    monkeypatch.setattr(docs_figures, "RESULTS", tmp_path)
    (tmp_path / "imagenet_check.json").write_text(json.dumps(
        {"garment_top5": 0.5, "garment_top5_input_0_255": 0.25, "garment_top5_kernels_transposed": 0.125}))
    page = "a\n<!-- figures:imagenet_check -->\nold\n<!-- /figures:imagenet_check -->\nb\n"
    out = docs_figures.render_text(page)
    assert "| as shipped | 50% |" in out and "old" not in out and out.endswith("b\n")
    with pytest.raises(KeyError, match="unknown figures block"):
        docs_figures.render_text("<!-- figures:nope -->\n<!-- /figures:nope -->")


def test_collect_records_each_fold_model(tmp_path, monkeypatch):
    out, results = tmp_path / "out", tmp_path / "results"
    results.mkdir()
    monkeypatch.setattr(docs_figures, "RESULTS", results)
    for fold, vals in ((0, [0.3, 0.2, 0.25]), (1, [0.4, 0.1])):
        d = out / "runs" / "r" / "joint" / f"fold{fold}"
        d.mkdir(parents=True)
        lines = ["epoch,loss,val_ne,lr,seconds,img_per_s"] + [f"{i},1.0,{v},0.001,10,{8 + i}" for i, v in enumerate(vals)]
        (d / "history.csv").write_text("\n".join(lines) + "\n")
    (out / "leaderboard.csv").write_text("name,cv_ne,test_ne,models\nr,0.2,0.19,2\n")
    docs_figures.collect(out, "r", "real_cpu_checked", 50.0, "m", "l", "d")
    r = json.loads((results / "real_cpu_checked.json").read_text())
    assert [(f["epochs"], f["best_val_ne"]) for f in r["folds"]] == [(3, 0.2), (2, 0.1)]
    table = docs_figures.real_cpu_runs()
    assert "| `real_cpu_checked` | m | d | 50.0 min | 3 / 2 | 0.200 / 0.100 | 0.200 | 0.190 |" in table
    assert "real_cpu_lite0" not in table  # no result file, no row
