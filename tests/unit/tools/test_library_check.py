"""The library measurements behind docs/decisions.md (pipeline/tools/library_check.py)."""
from __future__ import annotations

from pipeline.tools import library_check


def test_our_early_stopping_survives_a_resume_and_keras_does_not():
    r = library_check.check_early_stopping()
    assert r["ours_epochs_past_best"] == r["patience"]
    assert r["keras_epochs_past_best"] == r["patience"] + r["kill_after"] + 1


def test_bootstrap_agrees_with_scipy_and_candidates_missing_are_reported():
    b = library_check.check_bootstrap()
    assert abs(b["ours"][0] - b["scipy_percentile"][0]) < 0.002 and abs(b["ours"][1] - b["scipy_percentile"][1]) < 0.002
    lock = library_check.check_lock()
    assert lock["ours_bytes"] > 0  # the holder's note
    c = library_check.check_config()
    assert c["ours_names_file"]
