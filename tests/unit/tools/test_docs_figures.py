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
