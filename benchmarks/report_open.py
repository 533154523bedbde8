"""How big the HTML report of a run is and how fast it is made and opened: reading the results
files, building the sections, rendering, and Chromium's load of the file (headless, offline,
via Playwright), the median of a few openings.

    softmax-suite run --out out            # a full default run
    python -m benchmarks.report_open out/results.jsonl out/throughput.jsonl [--opens 5]

Target (issue 7): a full default run's report opens quickly; here "quickly" is read as under
one second to the load event.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from softmax_suite.reports import html
from softmax_suite.reports.baseline import read_many
from softmax_suite.runner.reproduce import snippet
from tests.test_report_browser import CHROMIUM, FLAGS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", nargs="+", help="results files (.jsonl)")
    parser.add_argument("--opens", type=int, default=5, help="times Chromium opens the report (default 5)")
    args = parser.parse_args()

    started = time.perf_counter()
    headers, results = read_many(args.results)
    read = time.perf_counter()
    model = html.build(headers, results, reproducer=snippet)
    built = time.perf_counter()
    text = html.render(model)
    rendered = time.perf_counter()
    print(f"{len(results)} results: read {read - started:.2f} s, build {built - read:.2f} s, "
          f"render {rendered - built:.2f} s; {len(text.encode()) / 1e6:.2f} MB, "
          f"{len(model['failures'])} reproducers, {len(model['details']['entries'])} explained elements")

    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as folder, sync_playwright() as playwright:
        path = Path(folder) / "report.html"
        path.write_text(text, encoding="utf-8")
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        loads = []
        for _ in range(args.opens):
            page = browser.new_context(offline=True).new_page()
            page.goto(path.as_uri(), wait_until="load")
            # Navigation Timing of the page itself: from the start of navigation to the load event's end.
            loads.append(page.evaluate("performance.getEntriesByType('navigation')[0].loadEventEnd") / 1e3)
            page.context.close()
        browser.close()
    print(f"Chromium load event after {statistics.median(loads):.3f} s (median of {args.opens}; "
          f"min {min(loads):.3f}, max {max(loads):.3f})")


if __name__ == "__main__":
    main()
