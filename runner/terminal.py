"""The terminal of `softmax-suite run`'s pytest passes (loaded with -p by the command): one progress
line, redrawn in place on a terminal, in place of pytest's rows of dots (over 200 lines for the
16,000 items of a default run), and no verdict of the pass's own: the command prints one over all
its passes.

pytest still counts every outcome for its closing line. pytest-benchmark's table and its "Wrote
benchmark data" line are left to -v; its JSON file is written all the same.
"""

from __future__ import annotations

import time
from collections.abc import Generator

import pytest

from softmax_suite.runner.session import COMMAND_VERDICT

REDRAW_S = 0.2  # a pass reports thousands of items a second at times; a terminal needs far fewer frames


@pytest.hookimpl(tryfirst=True)  # before pytest-benchmark's, which reads its options once
def pytest_configure(config: pytest.Config) -> None:
    config.stash[COMMAND_VERDICT] = True
    if config.get_verbosity() <= 0 and hasattr(config.option, "benchmark_quiet"):
        config.option.benchmark_quiet = True
    if not hasattr(config, "workerinput"):  # pytest-xdist's workers have no terminal
        config.pluginmanager.register(ProgressLine(config), "softmax-suite-progress-line")


@pytest.hookimpl(wrapper=True)
def pytest_report_teststatus(report: pytest.TestReport,
                             config: pytest.Config) -> Generator[None, tuple, tuple]:
    """No letter for any outcome: the progress line counts them (the word stays, for pytest's
    summary lines)."""
    category, _, word = yield
    return category, "", word


class ProgressLine:
    """Items done of those collected, and how many failed, redrawn at most every REDRAW_S on a
    terminal and cleared at the end of the run (pytest's closing line says the same); nothing when
    the output is no terminal, or when pytest writes a line per item itself."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.session: pytest.Session | None = None
        self.done = 0
        self.failed: set[str] = set()
        self.drawn = 0.0
        # The command's two passes: accuracy and invariants together, then throughput.
        self.label = "throughput" if config.getoption("markexpr") == "throughput" else "accuracy, invariants"

    def _reporter(self) -> pytest.TerminalReporter | None:
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        # isatty is a bool in pytest 8.0 and a callable bool later.
        shown = reporter is not None and bool(reporter.isatty) and \
            self.config.get_verbosity(pytest.Config.VERBOSITY_TEST_CASES) <= 0
        return reporter if shown else None

    def pytest_sessionstart(self, session: pytest.Session) -> None:
        self.session = session

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.failed:
            self.failed.add(report.nodeid)

    def pytest_runtest_logfinish(self) -> None:
        self.done += 1
        reporter = self._reporter()
        now = time.monotonic()
        if reporter is None or now - self.drawn < REDRAW_S:
            return
        self.drawn = now
        # Read late: under pytest-xdist the collection is counted when the workers report it.
        total = self.session.testscollected if self.session else 0
        failed = f", {len(self.failed)} failed" if self.failed else ""
        reporter.rewrite(f"{self.label}: {self.done}/{total}{failed}", erase=True)
        reporter.flush()

    @pytest.hookimpl(wrapper=True)
    def pytest_runtestloop(self, session: pytest.Session) -> Generator[None, object, object]:
        result = yield
        reporter = self._reporter()
        if reporter is not None and self.drawn:
            reporter.rewrite("", erase=True)
            reporter.rewrite("")
        return result
