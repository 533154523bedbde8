"""pytest wiring: selection options, the `target` parametrization, and the results collector.

Test functions named test_<op> that take the `target` fixture are parametrized over the
selected backend x device x dtype x case; ids read `test_softmax[torch-cpu-float32-glossary]`.
Each item leaves one result record on its report; the controlling process (also under
pytest-xdist) writes the records to the results file as the reports arrive.
"""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

import pytest

from softmax_suite.backends.isolation import shutdown
from softmax_suite.oracle import cache, progress, store
from softmax_suite.protocol import DTYPES, OPS, Backend
from softmax_suite.reports import baseline as baseline_io
from softmax_suite.reports import gate as gate_rules
from softmax_suite.reports.agreement import agreement_matrix, format_agreement
from softmax_suite.reports.results import ResultsWriter, jsonable
from softmax_suite.reports.semantics import format_semantics, semantics_table
from softmax_suite.reports.summary import format_summary
from softmax_suite.reports.verdict import format_verdict
from softmax_suite.runner import environment, options, resume
from softmax_suite.runner.config import Settings
from softmax_suite.runner.session import COMMAND_VERDICT, SuiteState, earlier_results
from softmax_suite.suites import accuracy, invariants, judging, throughput
from softmax_suite.suites.accuracy import Target
from softmax_suite.suites.cases import CASES
from softmax_suite.suites.deviations import stale
from softmax_suite.suites.items import MARK

RESULT_PROPERTY = "softmax_suite_result"
RECORD_KEY = pytest.StashKey[dict]()
STATE_KEY = pytest.StashKey["SuiteState"]()
# The options: --softmax-suite-NAME in any project (and --NAME in this checkout, its conftest.py).
pytest_plugins = ["softmax_suite.runner.entry"]
FINISHED = (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED, pytest.ExitCode.NO_TESTS_COLLECTED)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: a case with rows of 2^22 elements")
    config.addinivalue_line("markers", "throughput: a benchmark (pytest-benchmark; runs serially)")
    state = SuiteState(config)
    config.stash[STATE_KEY] = state
    try:
        cache.use_disk(store.folder_for(options.value(config, "--oracle-cache")), store.limit())
        progress.setting()
    except ValueError as error:
        raise pytest.UsageError(str(error)) from None
    # The oracle's progress bar draws past pytest's capture; xdist workers have no terminal.
    capture = config.pluginmanager.getplugin("capturemanager")
    progress.set_output_guard(capture.global_and_fixture_disabled if capture is not None else None,
                              terminal=not hasattr(config, "workerinput"))
    results_path = options.value(config, "--results")
    if options.value(config, "--resume") and not results_path:
        raise pytest.UsageError(f"{options.spelled(config, '--resume')} continues the file of "
                                f"{options.spelled(config, '--results')} PATH; give it")
    resuming = bool(options.value(config, "--resume") and Path(results_path).exists())
    if results_path and not hasattr(config, "workerinput"):
        header = {
            "command": environment.invoked_command(),
            "pytest_args": [str(arg) for arg in config.invocation_params.args],
            "cwd": os.getcwd(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "machine": platform.machine(),
            "processor": platform.processor(),
            "cpu_count": os.cpu_count(),
            "environment": state.environment,
            "backends": {name: {**({"version": b.version, "devices": list(b.devices),
                                    "absent_devices": dict(b.absent_devices)}
                                   if isinstance(b, Backend) else {"unavailable": b.reason}),
                                **({"spec": state.spec_of(name)} if state.spec_of(name) else {})}
                         for name, b in state.backends.items()},
            "settings": {"budget": state.settings.budget.as_dict(),
                         "flush_to_zero": state.settings.flush_to_zero,
                         "source": state.settings.source,
                         "case_timeout": state.settings.case_timeout, "isolate": state.isolate},
            "capabilities": state.capabilities,
            # Accuracy and invariants only: the throughput pass judges no subnormal.
            **({} if config.getoption("markexpr") == "throughput" else {"flush_probe": state.flush_table()}),
            **resume.recorded(config, state),
        }
        try:
            if resuming:
                state.results = resume.finished_records(results_path, header)
                state.writer = ResultsWriter(results_path, resumed={
                    "command": header["command"], "pytest_args": header["pytest_args"],
                    "kept": len(state.results)})
            else:
                state.writer = ResultsWriter(results_path, header)
        except OSError as error:
            raise pytest.UsageError(f"--results {results_path}: cannot write ({error.strerror})"
                                    ) from None
    if resuming:
        finished = resume.finished_ids(results_path) if hasattr(config, "workerinput") else \
            {record["nodeid"] for record in state.results}
        config.pluginmanager.register(resume.Resumption(results_path, finished), "softmax-suite-resume")
    if not hasattr(config, "workerinput"):
        state.earlier = earlier_results(options.value(config, "--earlier-results"))
        config.pluginmanager.register(ResultsCollector(state), "softmax-suite-results")


def pytest_unconfigure(config: pytest.Config) -> None:
    progress.set_output_guard(None)
    shutdown()  # the backends' worker processes (--isolate) end with the session


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """-n N without --dist (or --dist load): items of one case and dtype on one worker (runner.scheduling);
    any --dist the user gives is theirs."""
    if config.getoption("dist") == "load":
        from softmax_suite.runner.scheduling import CaseScheduling

        return CaseScheduling(config, log)
    return None


def _op_of(metafunc: pytest.Metafunc) -> tuple[str, str]:
    """(op, check) of a test that takes `target`, as suites.items made it from the op table."""
    marked = getattr(metafunc.function, MARK, None)
    if marked is None:
        raise pytest.UsageError(
            f"{metafunc.function.__name__} takes `target` but was not made from the op table: make the "
            "suite's test functions with softmax_suite.suites.items.check_functions(check, ops)")
    return marked


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "target" not in metafunc.fixturenames:
        return
    state = metafunc.config.stash[STATE_KEY]
    op, check = _op_of(metafunc)
    params = state.targets(op, check) if op in state.ops else []
    metafunc.parametrize("target", params or [pytest.param(None, id="deselected")])


def _order(item: pytest.Item) -> tuple:
    """Items grouped by case, dtype and op so that the oracle of one input is reused at once; the
    long rows first, so that pytest-xdist's workers do not wait for one of them at the end.
    Benchmarks come last, size by size: the sizes of one op are timed a third of the sweep apart,
    so that a spell of a busy machine (it slowed a run of consecutive benchmarks by up to 40%
    here) does not hit every size of one op, which is what the gate fails (reports.gate)."""
    target = getattr(getattr(item, "callspec", None), "params", {}).get("target")
    if target is None:
        return (-1,)
    if target.check == "throughput":
        shape_rank = list(throughput.SHAPES).index(target.case) if target.case in throughput.SHAPES else -1
        return (True, len(CASES) + 1 + shape_rank, DTYPES.index(target.dtype) if target.dtype in DTYPES
                else -1, OPS.index(target.op), target.check, "", target.backend, target.device)
    case = CASES.get(target.case)
    case_rank = list(CASES).index(target.case) if case else -1
    dtype_rank = DTYPES.index(target.dtype) if target.dtype in DTYPES else -1
    return (case is None or "long" not in case.tags, case_rank, dtype_rank, OPS.index(target.op),
            target.check, target.cotangent or "",
            target.backend, target.device)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    deselected = [item for item in items
                  if getattr(item, "callspec", None) and "target" in item.callspec.params
                  and item.callspec.params["target"] is None]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [item for item in items if item not in deselected]
    items.sort(key=_order)
    state: SuiteState = config.stash[STATE_KEY]
    for item in items:
        target = getattr(getattr(item, "callspec", None), "params", {}).get("target")
        if isinstance(target, Target) and target.check == "throughput":
            state.group_last[gate_rules.group_of(baseline_io.key(target.identity()))] = item.nodeid


def _checker(request: pytest.FixtureRequest, run):
    state: SuiteState = request.config.stash[STATE_KEY]

    def check(target: Target) -> None:
        backend = state.backends[target.backend]
        record = run(target, backend, state.settings, state.deviations)
        request.node.stash[RECORD_KEY] = record
        if state.baseline is not None:
            _gate_record(state, record, request.node.nodeid)
        status = record["status"]
        if status == "unsupported":
            pytest.skip(f"unsupported: {record['message']}")
        # A known failure becomes an xfail in pytest_runtest_makereport: raised here, pytest would
        # format a full traceback for each (6 s of a warm run), only to show the reason.
        if status in ("fail", "error"):
            pytest.fail(f"{target.op}[{target.id}] {status}: {record['message']}", pytrace=False)

    return check


@pytest.fixture
def check_accuracy(request: pytest.FixtureRequest):
    """Run the item's accuracy target and turn its record into a pytest outcome."""
    return _checker(request, accuracy.run)


@pytest.fixture
def check_invariants(request: pytest.FixtureRequest):
    """Measure the item's invariants and turn the record into a pytest outcome."""
    return _checker(request, invariants.run)


@pytest.fixture
def check_throughput(request: pytest.FixtureRequest, benchmark):
    """Time the item's op with pytest-benchmark and turn the record into a pytest outcome."""
    if benchmark.disabled:
        pytest.skip("pytest-benchmark is disabled (under pytest-xdist, or --benchmark-disable): "
                    "throughput runs in one process; softmax-suite run does it after the accuracy "
                    "run, or use pytest -n 0")
    state: SuiteState = request.config.stash[STATE_KEY]
    def run(target: Target, backend: Backend, settings: Settings, deviations: tuple) -> dict:
        return judging.judged(throughput.run(target, backend, benchmark, state.sweep, state.environment,
                                              settings.case_timeout), deviations)

    return _checker(request, run)


def _gate_record(state: SuiteState, record: dict, nodeid: str) -> None:
    """Compare one result with its baseline entry; a regression fails the item (and so shows in
    JUnit XML) after the record keeps what regressed. A throughput result is judged with the
    other sizes of its op (softmax_suite.reports.gate.consistent): at the group's last item, which fails for
    every size that regressed."""
    name = baseline_io.key(record)
    before = state.baseline.get(name)
    if before is None:
        return
    after = baseline_io.entries([record])[0][name]
    findings = gate_rules.compare(name, before, after, state.settings.gate)
    group = gate_rules.group_of(name)
    if group in state.group_last:
        befores, afters = state.throughput_groups.setdefault(group, ({}, {}))
        befores[name], afters[name] = before, after
        if nodeid != state.group_last[group]:
            if findings:
                record["gate"] = [finding.as_dict() for finding in findings]
            return
        findings = gate_rules.gate(befores, afters, state.settings.gate)  # the op's sizes together
    if findings:
        record["gate"] = [finding.as_dict() for finding in findings]
    failed = [f for f in findings if f.severity == gate_rules.FAIL]
    if failed:
        pytest.fail("; ".join(f"regressed against the baseline: {f.rule} ({f.before} -> {f.after}, "
                              f"threshold {f.threshold}){'' if f.key == name else f' at {f.key}'}"
                              for f in failed), pytrace=False)


def _skip_record(target: Target, reason: str) -> dict:
    case = CASES.get(target.case)
    return {**target.identity(), "status": "skip", "message": reason,
            "axis": case.axis if case else None}


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    report = yield
    target = getattr(getattr(item, "callspec", None), "params", {}).get("target")
    if not isinstance(target, Target):
        return report
    record = item.stash.get(RECORD_KEY, None)
    if call.when == "setup" and report.skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        record = _skip_record(target, reason.removeprefix("Skipped: "))
    elif call.when == "call" and record is None and report.failed:
        cause = call.excinfo.exconly() if call.excinfo else report.longreprtext
        record = {**target.identity(), "status": "error", "message": f"suite error: {cause}"}
    elif call.when == "call" and record is not None and record["status"] == "known_failure" \
            and report.passed:
        report.outcome, report.wasxfail = "skipped", record["message"]
    elif call.when != "call":
        return report
    if record is not None:
        report.user_properties.append((RESULT_PROPERTY, jsonable({**record, "nodeid": item.nodeid})))
    return report


class ResultsCollector:
    """Registered on the controlling process only: gathers records, writes them as they come."""

    def __init__(self, state: SuiteState) -> None:
        self.state = state

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        for name, record in report.user_properties:
            if name == RESULT_PROPERTY:
                self.state.results.append(record)
                if self.state.writer is not None:
                    self.state.writer.write(record)

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        finished = exitstatus in FINISHED and not (session.shouldfail or session.shouldstop)
        self.state.complete = self.state.complete and finished
        if self.state.writer is not None:
            # Killed, interrupted or stopped early (-x), the file stays partial: no tables, no end line.
            if finished:
                # Derived from the records above; kept in the file so that a reader needs no code.
                self.state.writer.write_table("semantics", semantics_table(self.state.results))
                self.state.writer.write_table("agreement", agreement_matrix(self.state.results))
                self.state.writer.finish(self.state.results)
            self.state.writer.close()

    def pytest_terminal_summary(self, terminalreporter) -> None:
        """The verdict, with -v after the long tables (per-cell counts, special values, agreement),
        which the results file and the report hold in any case; `softmax-suite run` prints one
        verdict over its passes itself (softmax_suite.runner.terminal)."""
        state = self.state
        if not state.results:
            return
        config = terminalreporter.config
        own_verdict = not config.stash.get(COMMAND_VERDICT, False)
        blocks = []
        if config.get_verbosity() > 0:
            blocks.append(format_summary(state.results))
            semantics = semantics_table(state.results)
            if semantics:
                blocks.append(format_semantics(semantics))
            matrix = agreement_matrix(state.results)
            if matrix:
                blocks.append(format_agreement(matrix))
        if own_verdict:
            # pytest's own summary lists the failures' ids.
            blocks.append(format_verdict(state.results, list_unexpected=False,
                                         capabilities=state.capabilities))
        warnings = []
        judged = [*state.earlier, *state.results]
        for deviation in stale(state.deviations, judged) if state.complete else []:
            warnings.append(f"stale known deviation (it explains no failure of this run; remove it from "
                            f"{state.settings.known_deviations}): {deviation.reason}")
        if state.baseline is not None:
            missing = set(state.baseline) - {baseline_io.key(record) for record in state.results}
            cannot = {name: why for name in sorted(missing)
                      if (why := gate_rules.cannot_ask(name, state.capabilities)) is not None}
            if cannot:
                first = next(iter(cannot))
                warnings.append(f"{len(cannot)} results of the baseline cannot be asked here, e.g. {first}: "
                                f"{cannot[first]}")
            absent = sorted(missing - set(cannot))
            if absent:
                warnings.append(f"{len(absent)} results of the baseline were not in this run (a narrower "
                                f"selection, or removed), e.g. {absent[0]}")
        if not blocks and not warnings:
            return
        terminalreporter.section("softmax-suite")
        if blocks:
            terminalreporter.write_line("\n\n".join(blocks))
        for warning in warnings:
            terminalreporter.write_line(warning, yellow=True)
        if own_verdict and state.writer is not None:
            terminalreporter.write_line(f"results: {state.writer.path}")
