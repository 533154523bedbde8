"""A pytest plugin for benchmarks/run_time.py: where a pass's time goes, per process.

Loaded with `-p benchmarks.phase_probe` (in every xdist worker too), it wraps the suite's steps
(backend calls, the oracle's computation, disk reads and writes, judging, invariants, the results
file) in timers that count each step's own time, not the steps nested in it, and times every
test item whole. At the end of the session each process writes one JSON file into
$SOFTMAX_SUITE_PHASE_PROBE: its role, its wall time, the items' time and the steps' totals. The
suite itself carries no timers: this is measurement, loaded only by the benchmark.
"""

from __future__ import annotations

import functools
import json
import os
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

IMPORTED = time.perf_counter()
VARIABLE = "SOFTMAX_SUITE_PHASE_PROBE"
_seconds: Counter[str] = Counter()
_calls: Counter[str] = Counter()
_nested: list[float] = []  # per open step: the time of the steps inside it


def _timed(step: str, function: Callable) -> Callable:
    @functools.wraps(function)
    def timed(*args, **kwargs):
        started = time.perf_counter()
        _nested.append(0.0)
        try:
            return function(*args, **kwargs)
        finally:
            elapsed = time.perf_counter() - started
            _seconds[step] += elapsed - _nested.pop()
            _calls[step] += 1
            if _nested:
                _nested[-1] += elapsed
    return timed


def _steps() -> list[tuple[object, str, str]]:
    """(module or class, attribute, step): each place a step is called through."""
    from softmax_suite.oracle import cache, store
    from softmax_suite.reports.results import ResultsWriter
    from softmax_suite.suites import accuracy, invariants

    return [
        (accuracy, "call_backend", "backend calls"),
        (invariants, "call_backend", "backend calls"),
        (cache, "reference", "oracle: memory"),
        (cache, "forward_references", "oracle: computed"),
        (cache, "vjp_references", "oracle: computed"),
        (store, "load", "oracle: disk read"),
        (store, "save", "oracle: disk write"),
        (accuracy, "judge", "judging"),
        (accuracy, "judged", "judging"),
        (accuracy, "special_values", "judging"),
        (accuracy, "run", "accuracy item: inputs, digests, record"),
        (invariants, "run", "invariants"),
        (ResultsWriter, "write", "results file"),
    ]


def pytest_configure(config: pytest.Config) -> None:
    for owner, attribute, step in _steps():
        if hasattr(owner, attribute):  # an earlier revision may lack one
            setattr(owner, attribute, _timed(step, getattr(owner, attribute)))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None):
    started = time.perf_counter()
    yield
    _seconds["items"] += time.perf_counter() - started
    _calls["items"] += 1


def process_age() -> float:
    """Seconds since this process started (its interpreter and imports included), from /proc;
    since this module was imported where there is none."""
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return uptime - int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return time.perf_counter() - IMPORTED


def pytest_unconfigure(config: pytest.Config) -> None:
    folder = os.environ.get(VARIABLE)
    if not folder:
        return
    role = "worker" if hasattr(config, "workerinput") else (
        "controller" if getattr(config.option, "numprocesses", None) else "single")
    Path(folder, f"{os.getpid()}.json").write_text(json.dumps({
        "role": role, "markexpr": config.option.markexpr, "wall_s": process_age(),
        "seconds": dict(_seconds), "calls": dict(_calls)}))
