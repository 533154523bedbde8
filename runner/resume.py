"""Continuing a partial run (`softmax-suite run --resume DIR`, `pytest --results PATH --resume`):
refused unless this run would have written the recorded results; what they hold is not run again.

A results header records what decides the items of a run and their outcome: the resolved selection,
what shapes pytest's collection, the backends' versions and the settings. A resumed run must match
all of it, and every recorded node id must be one its collection produces (under pytest-xdist the
controller compares each worker's collection, and the workers pass over the recorded items).
"""

from __future__ import annotations

import argparse
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from softmax_suite.reports.results import ResultsFileError, read_results
from softmax_suite.runner import options as suite_options

if TYPE_CHECKING:
    from softmax_suite.runner.session import SuiteState

# Header fields a resumed run must match; of the settings, what decides a status (not where they came from):
# a case that timed out or crashed under one --case-timeout or --isolate may pass under another.
COMPARED = ("selection", "collection", "backends", "capabilities")
COMPARED_SETTINGS = ("budget", "flush_to_zero", "case_timeout", "isolate")
SHOWN = 3


def recorded(config: pytest.Config, state: SuiteState) -> dict:
    """What a results header records for a later resume: the selection options as given, the
    selection they resolve to (state is the plugin's SuiteState), and the collection's shape."""
    options = {flag.removeprefix("--"): suite_options.value(config, flag)
               for flag, _ in suite_options.SELECTION}
    selection = {"backends": list(state.backends), "devices": state.devices, "ops": state.ops,
                 "dtypes": state.dtypes, "cotangents": state.cotangents,
                 "cases": [case.name for case in state.cases], "sweep": state.sweep}
    collection = {"rootdir": str(config.rootpath), "args": [str(arg) for arg in config.args],
                  "markexpr": config.option.markexpr, "keyword": config.option.keyword,
                  "deselect": list(config.option.deselect or [])}
    return {"options": options, "selection": selection, "collection": collection}


def finished_records(path: str | Path, header: dict) -> list[dict]:
    """The results of the partial file at path, checked to be what a run with this header would
    have written (pytest.UsageError naming the difference otherwise)."""
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            before, records = read_results(path)
    except ResultsFileError as error:
        raise pytest.UsageError(f"--resume: {error}") from None
    for warning in caught:  # a truncated last line, which the resumed file drops
        print(f"softmax-suite: {warning.message}", file=sys.stderr)
    if not before["partial"]:
        raise pytest.UsageError(f"--resume: {path} is complete (it has the end line of a finished run): "
                                "nothing to resume")
    if "merged_from" in before:
        raise pytest.UsageError(f"--resume: {path} is a merge of several runs; resume each host's own file")
    if "selection" not in before:
        raise pytest.UsageError(f"--resume: {path} does not record its selection (written by an older "
                                "softmax-suite): run it again from the start")
    now = {**header, "settings": {k: header["settings"][k] for k in COMPARED_SETTINGS}}
    then = {**before, "settings": {k: (before.get("settings") or {}).get(k) for k in COMPARED_SETTINGS}}
    differences: list[str] = []
    for name in (*COMPARED, "settings"):
        # The first field that differs explains the others (another selection loads other backends).
        differences = differences or _differences(name, then.get(name), now.get(name))
    if differences:
        raise pytest.UsageError(
            f"--resume: this run is not the one that wrote {path}, its results would not be comparable:\n  "
            + "\n  ".join(differences)
            + "\nresume with the options of the original run (softmax-suite run --resume DIR, given no "
              "selection options, takes the recorded ones), or start again with --out")
    return records


def finished_ids(path: str | Path) -> set[str]:
    """The node ids the file at path holds results of (read on pytest-xdist's workers, after the
    controller checked the file)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the controller warned of a truncated last line
        return {record["nodeid"] for record in read_results(path)[1]}


def _differences(name: str, then: object, now: object, shown: int = SHOWN) -> list[str]:
    """One line per field of the header's `name` that differs: recorded (then) against this run (now)."""
    if then == now:
        return []
    if then is None or now is None:
        return [f"{name}: {'not in the recorded run' if then is None else 'not in this run'}"]
    if isinstance(then, dict) and isinstance(now, dict):
        return [line for key in dict.fromkeys([*then, *now])
                for line in _differences(f"{name}.{key}", then.get(key), now.get(key), shown)]
    if isinstance(then, list) and isinstance(now, list):
        if set(map(str, then)) == set(map(str, now)):
            return []  # the same names in another order select the same items
        added = [str(v) for v in now if v not in then]
        lacking = [str(v) for v in then if v not in now]
        parts = [f"{label} {', '.join(values[:shown])}{' ...' if len(values) > shown else ''}"
                 for label, values in (("this run adds", added), ("lacks", lacking)) if values]
        return [f"{name}: {'; '.join(parts)}"]
    return [f"{name}: recorded {then!r}, this run {now!r}"]


class Resumption:
    """A pytest plugin for a resumed run: the recorded items are deselected (passed over on
    pytest-xdist's workers, which must all collect alike), and a recorded item that this run does
    not collect refuses the resume."""

    def __init__(self, path: str | Path, finished: set[str]) -> None:
        self.path = path
        self.finished = finished

    def _check(self, collected: set[str]) -> None:
        stale = sorted(self.finished - collected)
        if stale:
            raise pytest.UsageError(
                f"--resume: {len(stale)} results in {self.path} are of items this run does not collect, "
                f"e.g. {stale[0]}; resume with the command (test paths, -k, -m) and folder of the "
                "original run")

    def pytest_collection_modifyitems(self, config: pytest.Config, items: list[pytest.Item]) -> None:
        if hasattr(config, "workerinput"):
            return
        self._check({item.nodeid for item in items})
        done = [item for item in items if item.nodeid in self.finished]
        if done:
            config.hook.pytest_deselected(items=done)
            items[:] = [item for item in items if item.nodeid not in self.finished]

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_node_collection_finished(self, node, ids: list[str]) -> None:
        self._check({nodeid for nodeid in ids})

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_protocol(self, item: pytest.Item, nextitem: pytest.Item | None) -> bool | None:
        if hasattr(item.config, "workerinput") and item.nodeid in self.finished:
            return True
        return None


@dataclass(frozen=True)
class Steps:
    """What `run --resume` does with each file of the folder: "run" it afresh, "resume" it, or
    nothing, as it is "done"."""

    accuracy: str
    throughput: str


def plan(out: Path, args: argparse.Namespace) -> Steps:
    """The steps of `softmax-suite run --resume out`. args without selection options take the
    recorded ones, without --isolate or --case-timeout the recorded run's, and throughput.jsonl goes
    on with its recorded sweep (unless --throughput off); ValueError when there is nothing to resume
    or a file cannot be read."""
    results, timings = out / "results.jsonl", out / "throughput.jsonl"
    if not results.is_file():
        raise ValueError(f"--resume {out}: no {results.name} there, nothing to resume (start a run with "
                         f"--out {out})")
    header = _header(results)
    if not any(getattr(args, flag.removeprefix("--")) for flag, _ in suite_options.SELECTION):
        for name, value in (header.get("options") or {}).items():
            setattr(args, name, value)
    settings = header.get("settings") or {}
    args.isolate = args.isolate or bool(settings.get("isolate"))
    if args.case_timeout is None:
        args.case_timeout = settings.get("case_timeout")
    throughput = "done" if args.throughput == "off" else "run"
    if throughput == "run" and timings.is_file():
        recorded_timings = _header(timings)
        args.throughput = (recorded_timings.get("selection") or {}).get("sweep") or args.throughput
        throughput = "resume" if recorded_timings["partial"] else "done"
    return Steps("resume" if header["partial"] else "done", throughput)


def _header(path: Path) -> dict:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a truncated last line: the resumed run warns of it
            return read_results(path)[0]
    except ResultsFileError as error:
        raise ValueError(str(error)) from None
