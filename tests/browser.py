"""Open an HTML page in headless Chromium (the system's package) and report what it showed.

`open_page(path)` copies the page's folder, puts a probe script first in its <head>, and reads
back from the dumped DOM: how many images the page has, those that did not load, the script
errors and console.error calls, and the number of tables. `chromium()` is None where the
machine has no Chromium (`apt-get install chromium`); the tests that need it skip there.
"""
from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Dict, Optional

PROBE = """<script>
window.__errors = [];
window.addEventListener('error', e => window.__errors.push(
  e.message || ('failed to load ' + ((e.target && (e.target.src || e.target.href)) || '?'))), true);
const __consoleError = console.error;
console.error = (...args) => { window.__errors.push(args.join(' ')); __consoleError(...args); };
window.addEventListener('load', () => {
  const images = [...document.images];
  document.documentElement.setAttribute('data-probe', JSON.stringify({
    images: images.length, tables: document.querySelectorAll('table').length,
    broken: images.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.getAttribute('src')),
    errors: window.__errors, quirks: document.compatMode !== 'CSS1Compat'}));
});
</script>"""


def chromium() -> Optional[str]:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def open_page(page: Path, timeout: float = 60.0) -> Dict:
    """{"images", "tables", "broken": [src], "errors": [text], "quirks"} of `page` in headless Chromium."""
    binary = chromium()
    if binary is None:
        raise FileNotFoundError("no chromium on this machine (apt-get install chromium)")
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "page"
        shutil.copytree(page.parent, copy)
        text = (copy / page.name).read_text()
        head = re.search(r"<head[^>]*>", text, re.I)
        at = head.end() if head else 0
        (copy / page.name).write_text(text[:at] + PROBE + text[at:])
        res = subprocess.run([binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                              f"--user-data-dir={tmp}/profile", "--virtual-time-budget=10000", "--dump-dom",
                              (copy / page.name).as_uri()],
                             capture_output=True, text=True, timeout=timeout)
    found = re.search(r'data-probe="([^"]*)"', res.stdout)
    if not found:
        raise AssertionError(f"chromium showed no probe result for {page} (rc {res.returncode}): "
                             f"{res.stderr.strip()[-500:]}")
    return json.loads(html.unescape(found.group(1)))
