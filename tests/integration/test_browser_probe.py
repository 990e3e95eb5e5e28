"""The headless-browser probe itself can fail: a missing image and a script error are seen."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from browser import chromium, open_page  # noqa: E402

pytestmark = pytest.mark.skipif(chromium() is None, reason="no chromium (apt-get install chromium)")


def test_probe_sees_a_missing_image_and_a_script_error(tmp_path):
    import cv2
    import numpy as np

    cv2.imwrite(str(tmp_path / "ok.png"), np.zeros((4, 4, 3), np.uint8))
    page = tmp_path / "index.html"
    page.write_text("<!DOCTYPE html><html><head><title>t</title></head><body><img src='ok.png'>"
                    "<img src='gone.png'><script>undefined_function()</script></body></html>")
    seen = open_page(page)
    assert seen["images"] == 2 and seen["broken"] == ["gone.png"]
    assert any("undefined_function" in e for e in seen["errors"])
    assert not seen["quirks"]
