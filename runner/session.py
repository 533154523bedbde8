"""The pytest session's state: the selection, the loaded backends, the settings and the results
so far (one SuiteState per session, on the config's stash)."""

from __future__ import annotations

import warnings
from dataclasses import replace
from functools import cached_property
from pathlib import Path

import pytest

from softmax_suite.backends.builtin import OPT_IN
from softmax_suite.backends.isolation import Isolated
from softmax_suite.backends.registry import Unavailable, backend_names, check_names, load
from softmax_suite.protocol import DTYPES, OPS, Backend
from softmax_suite.reports import baseline as baseline_io
from softmax_suite.reports.results import ResultsFileError, ResultsWriter, read_results
from softmax_suite.runner import environment, options
from softmax_suite.runner.config import ConfigError, Settings, load_settings
from softmax_suite.runner.selection import dtype_names, no_match, split
from softmax_suite.runner.targets import Selection, capabilities, questions
from softmax_suite.suites import accuracy, throughput
from softmax_suite.suites.cases import CATALOGUE, select_cases
from softmax_suite.suites.cotangents import ALL as COTANGENT_KINDS
from softmax_suite.suites.deviations import load_deviations

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
        self.case_patterns = split(options.value(config, "--case"))
        self.include_slow = options.value(config, "--slow")
        try:
            self.shapes = throughput.sweep(options.value(config, "--sweep"))
        except ValueError as error:
            raise pytest.UsageError(f"--sweep: {error}") from None
        self.sweep = options.value(config, "--sweep")
        self.cases = select_cases(self.case_patterns, self.include_slow)
        if self.case_patterns and not self.cases:
            raise pytest.UsageError(no_match("case", self.case_patterns, [c.name for c in CATALOGUE]))
        self.isolate = options.value(config, "--isolate")
        self.backend_names = split(options.value(config, "--backend"))
        # The --backend spec that loaded each backend, by its name: what reloads it (reproducers, workers).
        self.specs: dict[str, str] = {}
        self.devices = split(options.value(config, "--device"))
        config_path = options.value(config, "--suite-config")
        if config_path and not Path(config_path).is_file():
            raise pytest.UsageError(f"--suite-config {config_path}: no such file")
        try:
            self.settings: Settings = load_settings(
                Path(config_path) if config_path else Path.cwd() / "pyproject.toml")
            timeout = options.value(config, "--case-timeout")
            if timeout is not None:
                self.settings = replace(self.settings, case_timeout=timeout)
            self.deviations = load_deviations(self.settings.known_deviations)
        except ConfigError as error:
            raise pytest.UsageError(str(error)) from None
        baseline_path = options.value(config, "--baseline")
        try:
            self.baseline = baseline_io.load(baseline_path)["entries"] if baseline_path else None
        except baseline_io.BaselineError as error:
            raise pytest.UsageError(f"--baseline: {error}") from None
        # A session that selects backends or devices, or writes results, resolves them now (a
        # misspelt name is a usage error before anything runs); any other (the self-tests under
        # this plugin) loads them only if an item asks, so that no framework is imported for nothing.
        # After the settings: --isolate loads each within the case timeout.
        if self.backend_names or self.devices or self.isolate or options.value(config, "--results"):
            self.backends  # noqa: B018

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
                             or any(split(options.value(config, f"--{option}"))
                                    for option in ("op", "dtype", "cotangent")))

    @cached_property
    def backends(self) -> dict[str, Backend | Unavailable]:
        """The selected backends, loaded (an absent one as Unavailable, with why), on first use."""
        specs = self.backend_names or [name for name in backend_names() if name not in OPT_IN]
        # Not asked by name: an opt-in built-in is one "not run" entry that says how to ask for it.
        loaded: dict[str, Backend | Unavailable] = {} if self.backend_names else {
            name: Unavailable(name, why, opt_in=True) for name, why in OPT_IN.items()}
        try:
            check_names(specs)
            for spec in specs:
                # Under --isolate in its worker process alone: a crash while it loads costs only itself.
                backend = Isolated.load(spec, self.settings.case_timeout) if self.isolate else load(spec)
                # Known by its own name (a user's object's `name`) in ids, records and tables.
                if backend.name in loaded:
                    raise ValueError(f"two backends are named {backend.name!r}: {self.specs[backend.name]} "
                                     f"and {spec}; give one of them another `name` attribute")
                loaded[backend.name], self.specs[backend.name] = backend, spec
        except ValueError as error:
            raise pytest.UsageError(str(error)) from None
        known_devices = {d for b in loaded.values() if isinstance(b, Backend)
                         for d in (*b.devices, *b.absent_devices)}
        for device in self.devices:
            if device not in known_devices:
                raise pytest.UsageError(no_match("device", [device], sorted(known_devices)))
        return loaded

    def spec_of(self, name: str) -> str | None:
        """The spec that loaded the backend of this name, where it is not the name itself."""
        spec = self.specs.get(name, name)
        return spec if spec != name else None

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
        """The parameters of test_<op> (or test_<op>_invariants): the questions the backends can answer."""
        params = []
        for name, backend in self.backends.items():
            for question in questions(name, backend, op, check, self.selection, self.spec_of(name)):
                marks = [pytest.mark.slow] if question.slow else []
                if check == "throughput":
                    marks.append(pytest.mark.throughput)
                    if self.isolate:
                        marks.append(pytest.mark.skip(reason=NO_ISOLATED_TIMING))
                params.append(pytest.param(question.target, id=question.target.id, marks=marks))
        return params

    @property
    def selection(self) -> Selection:
        return Selection(self.devices, self.dtypes, self.cases, self.cotangents, self.shapes)

    @cached_property
    def capabilities(self) -> list[dict]:
        """What the selected backends cannot answer here, once per (backend, device, op, dtype), with
        why: decided before collection, recorded in the run header, never a test item."""
        return [entry for name, backend in self.backends.items()
                for entry in capabilities(name, backend, self.ops, self.selection)]


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
    chosen = split(options.value(config, f"--{option}"))
    if option == "dtype":
        chosen = dtype_names(chosen)
    for name in chosen:
        if name not in valid:
            raise pytest.UsageError(no_match(option, [name], list(valid)))
    return [name for name in valid if not chosen or name in chosen]
