"""The report as a person sees it: Debian's Chromium, headless and driven by Playwright, opens the
report of a real run with the network cut off; no console errors, the charts are drawn, a click
explains a cell, and a screenshot is kept in test-artifacts/ (or $SOFTMAX_SUITE_ARTIFACTS).

Without Chromium or Playwright these tests skip, unless SOFTMAX_SUITE_REQUIRE_BROWSER=1 (set by
.ci/run, which installs both): there a missing browser fails.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from softmax_suite.reports import html
from softmax_suite.runner.reproduce import snippet
from tests.test_report import HEADER, HOSTILE, accuracy

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("SOFTMAX_SUITE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(os.environ.get("SOFTMAX_SUITE_ARTIFACTS") or REPO / "test-artifacts")
# Chromium as root in a container, with nothing of its own reaching out: no background
# networking, no component updates, no name resolution at all.
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-sync",
         "--disable-background-networking", "--disable-component-update",
         "--host-resolver-rules=MAP * ~NOTFOUND"]


def _chromium():
    why = None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        why = "playwright is not installed (pip install -e '.[test]')"
    if why is None and not Path(CHROMIUM).exists():
        why = f"no Chromium at {CHROMIUM} (apt-get install chromium, or set SOFTMAX_SUITE_CHROMIUM)"
    if why:
        if os.environ.get("SOFTMAX_SUITE_REQUIRE_BROWSER") == "1":
            pytest.fail(why)
        pytest.skip(why)
    return sync_playwright


class Page:
    """A page opened offline, with every request, console error and dialog it caused."""

    def __init__(self, browser, path: Path) -> None:
        self.requests: list[str] = []
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        context = browser.new_context(offline=True, viewport={"width": 1400, "height": 900})
        self.page = context.new_page()
        self.page.on("request", lambda request: self.requests.append(request.url))
        self.page.on("console", lambda message: message.type == "error" and self.errors.append(message.text))
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.page.on("dialog", lambda dialog: (self.dialogs.append(dialog.message), dialog.dismiss()))
        self.page.goto(path.as_uri(), wait_until="load")

    def outside(self) -> list[str]:
        return [url for url in self.requests if not url.startswith(("file:", "data:"))]


@pytest.fixture(scope="module")
def browser():
    sync_playwright = _chromium()
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield chromium
        chromium.close()


def test_a_real_runs_report_in_chromium(browser, tmp_path: Path) -> None:
    # numpy, torch and a softmax without the max shift (NaN on equal_large: an unexpected
    # failure with a reproducer), accuracy and the quick throughput sweep.
    done = subprocess.run(
        [sys.executable, "-m", "softmax_suite.runner.cli",
         "run", "--backend", "numpy,torch,tests.bad_softmax:NoMaxShift",
         "--case", "glossary,equal_large,nan,random_n31_s3", "--dtype", "float16,float32",
         "--out", str(tmp_path), "-n", "0"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    report = tmp_path / "report.html"
    assert f"report in {report}" in done.stdout

    shown = Page(browser, report)
    page = shown.page
    assert shown.errors == [] and shown.outside() == []
    assert page.locator("header.verdict h1").inner_text().startswith("FAIL")
    # The charts are drawn: elements exist and have a size on screen.
    for selector, least in (("svg.heatmap rect.cell", 40), ("svg.histogram rect.bar", 8),
                            ("svg.lines path.line", 4), ("svg.scatter .point", 4)):
        assert page.locator(selector).count() >= least, selector
        box = page.locator(selector).first.bounding_box()
        assert box and box["width"] > 0 and box["height"] >= 0, selector
    # Clicking the failing cell explains it and leads to its reproducer.
    cell = page.locator("svg.heatmap rect.cell.fail").first
    cell.scroll_into_view_if_needed()
    cell.click()
    assert page.locator("#details").is_visible()
    assert "NoMaxShift" in page.locator("#details-title").inner_text()
    assert "max ULP" in page.locator("#details-rows").inner_text() or "NaN" in page.locator(
        "#details-rows").inner_text()
    page.locator("#details-anchor").click()
    failure = page.locator("details.failure.fail").first
    assert failure.get_attribute("open") is not None
    assert "softmax_suite.backends.registry" in failure.locator("pre.snippet").inner_text()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "report-failure.png"))
    page.goto(report.as_uri())
    page.screenshot(path=str(ARTIFACTS / "report.png"), full_page=True)
    assert shown.errors == [] and shown.outside() == []


def test_a_hostile_results_file_runs_no_script(browser, tmp_path: Path) -> None:
    # Names and messages made of markup: in a browser nothing runs (no alert dialog) and the
    # text shows as text.
    results = [accuracy(backend=HOSTILE, case=HOSTILE, status="fail", max_ulp=9.0, message=HOSTILE),
               accuracy(backend=HOSTILE, status="error", max_ulp=None, message="</script>" + HOSTILE)]
    path = tmp_path / "hostile.html"
    html.write_report([{**HEADER, "command": [HOSTILE]}], results, path, reproducer=snippet)
    shown = Page(browser, path)
    shown.page.locator("svg.heatmap rect.cell").first.click()
    assert shown.dialogs == [] and shown.errors == [] and shown.outside() == []
    assert HOSTILE in shown.page.locator("#details-title").inner_text()
    assert HOSTILE in shown.page.locator("#environment").inner_text()
