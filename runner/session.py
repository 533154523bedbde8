"""The pytest session's state: the selection, the loaded backends, the settings and the results
so far (one SuiteState per session, on the config's stash)."""

from __future__ import annotations

import warnings
from dataclasses import replace
from functools import cached_property
from pathlib import Path

import pytest

from softmax_suite.backends.isolation import Isolated
from softmax_suite.backends.registry import Unavailable, backend_names, check_names, load
from softmax_suite.ops import is_vjp
from softmax_suite.protocol import DTYPES, OPS, Backend
from softmax_suite.reports import baseline as baseline_io
from softmax_suite.reports.results import ResultsFileError, ResultsWriter, read_results
from softmax_suite.runner import environment
from softmax_suite.runner.config import ConfigError, Settings, load_settings
from softmax_suite.runner.selection import dtype_names, no_match, split
from softmax_suite.suites import accuracy, throughput
from softmax_suite.suites.accuracy import Target
from softmax_suite.suites.cases import CATALOGUE, select_cases
from softmax_suite.suites.cotangents import ALL as COTANGENT_KINDS
from softmax_suite.suites.deviations import load_deviations

ANY = "any"
NO_ISOLATED_TIMING = ("no throughput under --isolate: a call timed through the worker process's pipe times "
                      "the copies of its input and output, not the backend; time it without --isolate")
# Set by the plugin of `softmax-suite run`'s passes (runner.terminal): the command prints one verdict
# over all of them, so the pass prints none of its own.
COMMAND_VERDICT = pytest.StashKey[bool]()


class SuiteState:
    """What the session knows: the selection, loaded backends, settings and the results."""

    def __init__(self, config: pytest.Config) -> None:
        self.ops = _selection(config, "op", OPS)
        self.dtypes = _selection(config, "dtype", DTYPES)
        self.cotangents = _selection(config, "cotangent", COTANGENT_KINDS)
        self.case_patterns = split(config.getoption("case"))
        self.include_slow = config.getoption("slow")
        try:
            self.shapes = throughput.sweep(config.getoption("sweep"))
        except ValueError as error:
            raise pytest.UsageError(f"--sweep: {error}") from None
        self.sweep = config.getoption("sweep")
        self.cases = select_cases(self.case_patterns, self.include_slow)
        if self.case_patterns and not self.cases:
            raise pytest.UsageError(no_match("case", self.case_patterns, [c.name for c in CATALOGUE]))
        self.isolate = config.getoption("isolate")
        self.backend_names = split(config.getoption("backend"))
        self.devices = split(config.getoption("device"))
        # A session that selects backends or devices, or writes results, resolves them now (a
        # misspelt name is a usage error before anything runs); any other (the self-tests under
        # this plugin) loads them only if an item asks, so that no framework is imported for nothing.
        if self.backend_names or self.devices or self.isolate or config.getoption("results"):
            self.backends  # noqa: B018
        config_path = config.getoption("suite_config")
        if config_path and not Path(config_path).is_file():
            raise pytest.UsageError(f"--suite-config {config_path}: no such file")
        try:
            self.settings: Settings = replace(load_settings(
                Path(config_path) if config_path else Path.cwd() / "pyproject.toml"),
                case_timeout=config.getoption("case_timeout"))
            self.deviations = load_deviations(self.settings.known_deviations)
        except ConfigError as error:
            raise pytest.UsageError(str(error)) from None
        baseline_path = config.getoption("baseline")
        try:
            self.baseline = baseline_io.load(baseline_path)["entries"] if baseline_path else None
        except baseline_io.BaselineError as error:
            raise pytest.UsageError(f"--baseline: {error}") from None

        self.results: list[dict] = []
        self.writer: ResultsWriter | None = None
        # For --baseline: the last item of each throughput group (reports.gate.group_of), and the
        # group's baseline entries and results so far.
        self.group_last: dict[str, str] = {}
        self.throughput_groups: dict[str, tuple[dict, dict]] = {}
        self.earlier: list[dict] = []
        # Staleness of a known deviation can only be judged on the whole catalogue (and, see
        # pytest_sessionfinish, on a session that ran to its end).
        self.complete = not (self.case_patterns or self.devices or config.option.keyword
                             or config.option.deselect
                             or any(split(config.getoption(option))
                                    for option in ("op", "dtype", "cotangent")))

    @cached_property
    def backends(self) -> dict[str, Backend | Unavailable]:
        """The selected backends, loaded (an absent one as Unavailable, with why), on first use."""
        names = self.backend_names or backend_names()
        try:
            check_names(names)
            loaded: dict[str, Backend | Unavailable] = {name: load(name) for name in names}
        except ValueError as error:
            raise pytest.UsageError(str(error)) from None
        if self.isolate:
            # Loaded here too: the parametrization needs their devices and dtypes.
            loaded = {name: Isolated.of(name, b) if isinstance(b, Backend) else b
                      for name, b in loaded.items()}
        known_devices = {d for b in loaded.values() if isinstance(b, Backend)
                         for d in (*b.devices, *b.absent_devices)}
        for device in self.devices:
            if device not in known_devices:
                raise pytest.UsageError(no_match("device", [device], sorted(known_devices)))
        return loaded

    @cached_property
    def environment(self) -> dict:
        return environment.describe(self.backends)

    def flush_table(self) -> dict:
        """{backend/device: {dtype: {op: evidence}}}: the flush-to-zero probe (suites.flushing) of
        every selected backend, device, dtype and op, for the run header."""
        table: dict[str, dict] = {}
        for name, backend in self.backends.items():
            if not isinstance(backend, Backend):
                continue
            for device in backend.devices:
                if self.devices and device not in self.devices:
                    continue
                table[f"{name}/{device}"] = {
                    dtype: {op: accuracy.flush_evidence(backend, device, dtype, op, self.settings)
                            for op in self.ops if not backend.why_unsupported(op, dtype)}
                    for dtype in self.dtypes if dtype in backend.dtypes}
        return table

    def targets(self, op: str, check: str = "accuracy") -> list:
        """The parameters of test_<op> (or test_<op>_invariants): runnable targets, plus one skip
        per unavailable backend or absent device."""
        params = []
        for name, backend in self.backends.items():
            if isinstance(backend, Unavailable):
                target = Target(op, name, ANY, ANY, ANY, check=check)
                params.append(pytest.param(target, id=target.id,
                                           marks=pytest.mark.skip(reason=backend.reason)))
                continue
            for device, reason in backend.absent_devices.items():
                if not self.devices or device in self.devices:
                    target = Target(op, name, device, ANY, ANY, check=check)
                    params.append(pytest.param(target, id=target.id,
                                               marks=pytest.mark.skip(reason=reason)))
            for device in backend.devices:
                if self.devices and device not in self.devices:
                    continue
                if check == "throughput":
                    marks = [pytest.mark.throughput, *([pytest.mark.skip(reason=NO_ISOLATED_TIMING)]
                                                       if self.isolate else [])]
                    params += [pytest.param(target, id=target.id, marks=marks)
                               for dtype in self.dtypes for shape in self.shapes
                               for target in [Target(op, name, device, dtype, shape.name, None, check)]]
                    continue
                for case in self.cases:
                    kinds = [k for k in case.cotangents if k in self.cotangents] \
                        if is_vjp(op) else [None]
                    for dtype in self.dtypes:
                        if dtype not in case.dtypes:
                            continue
                        # One worker per (case, dtype) under `--dist loadgroup`: the oracle of
                        # an input is then computed once per run, not once per worker.
                        marks = [pytest.mark.xdist_group(f"{case.name}-{dtype}")]
                        if "slow" in case.tags:
                            marks.append(pytest.mark.slow)
                        for kind in kinds:
                            target = Target(op, name, device, dtype, case.name, kind, check)
                            params.append(pytest.param(target, id=target.id, marks=marks))
        return params


def earlier_results(path: str | None) -> list[dict]:
    """The records of an earlier pass's results file, for the stale report; none from a pass
    that did not finish, whose records are not its whole selection."""
    if path is None:
        return []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a truncated last line: the file is partial, not used
            header, records = read_results(path)
    except ResultsFileError as error:
        raise pytest.UsageError(f"--earlier-results: {error}") from None
    return [] if header["partial"] else records


def _selection(config: pytest.Config, option: str, valid: tuple[str, ...]) -> list[str]:
    chosen = split(config.getoption(option))
    if option == "dtype":
        chosen = dtype_names(chosen)
    for name in chosen:
        if name not in valid:
            raise pytest.UsageError(no_match(option, [name], list(valid)))
    return [name for name in valid if not chosen or name in chosen]
