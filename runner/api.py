"""The Python API, for another project's tests: `check` asks the catalogue's accuracy questions of a
function or backend and returns the records and the verdict; `assert_accurate` fails with a compact table.

    import softmax_suite
    from mykernels import softmax
    softmax_suite.assert_accurate(softmax, framework="torch")

The same questions, judged the same way, as `softmax-suite run` and the pytest plugin ask them.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from softmax_suite.backends.custom import wrap
from softmax_suite.backends.registry import Unavailable, check_names, load
from softmax_suite.ops import OPS, is_vjp
from softmax_suite.oracle import cache, store
from softmax_suite.protocol import DTYPES, Backend, BackendUnavailable
from softmax_suite.reports.verdict import format_verdict
from softmax_suite.runner.config import load_settings
from softmax_suite.runner.reproduce import ReproduceError, snippet
from softmax_suite.runner.selection import dtype_names, no_match, split
from softmax_suite.runner.targets import Selection, capabilities, questions
from softmax_suite.suites import accuracy
from softmax_suite.suites import invariants as invariant_checks
from softmax_suite.suites.accuracy import Target
from softmax_suite.suites.cases import CATALOGUE, select_cases
from softmax_suite.suites.cotangents import COTANGENTS
from softmax_suite.suites.deviations import load_deviations
from softmax_suite.suites.items import MARK

UNEXPECTED = ("fail", "error")
SHOWN_FAILURES = 10


@dataclass
class Checked:
    """What check() found: every result record (the results file's), and the verdict on them."""

    backend: str
    spec: str | None
    records: list[dict] = field(default_factory=list)
    # What the backend cannot be asked here, once per (device, op, dtype), and why.
    capabilities: list[dict] = field(default_factory=list)

    @property
    def failures(self) -> list[dict]:
        """The unexpected results: a failed budget or invariant, or an error."""
        return [record for record in self.records if record["status"] in UNEXPECTED]

    @property
    def passed(self) -> bool:
        """Nothing unexpected, and something was answered: every result passed or is a known deviation
        (what the backend cannot be asked is in capabilities)."""
        return not self.failures and self.answered > 0

    @property
    def answered(self) -> int:
        """How many questions the backend answered (passed, failed, or known to deviate)."""
        return sum(record["status"] in ("pass", "fail", "known_failure") for record in self.records)

    def worst(self, count: int = 5) -> list[dict]:
        """The failed results with the largest error for their budget first (errors after them)."""
        def ratio(record: dict) -> float:
            return float((record.get("bound") or {}).get("ratio") or 0.0)
        return sorted(self.failures, key=lambda record: (record["status"] != "fail", -ratio(record)))[:count]

    def reproducer(self, record: dict) -> str:
        """A standalone script that rebuilds the record's input, calls the backend again and exits 1 while
        it still fails (ReproduceError when the backend cannot be loaded by name: a function defined in
        a test or in __main__)."""
        if self.spec is None:
            raise ReproduceError(f"{self.backend} was given as a function or object that cannot be imported "
                                 "by name (defined in __main__ or inside a function): define it in a module")
        return snippet({**record, "backend_spec": self.spec})

    def summary(self) -> str:
        """The verdict: a row per dtype, then the worst unexpected results with their ids and why."""
        lines = [format_verdict(self.records, list_unexpected=False, capabilities=self.capabilities)]
        if not self.answered:
            why = "; ".join(dict.fromkeys(entry["reason"] for entry in self.capabilities))
            lines.append(f"nothing was answered: {why or 'the selection asks nothing'}")
        shown = self.worst(SHOWN_FAILURES)
        if shown:
            lines += ["", f"{len(self.failures)} unexpected result(s); the worst:"]
            lines += [f"  {record['nodeid']}: {record['message']}" for record in shown]
            if self.spec is not None:
                lines.append(f"re-run one: python -m pytest '<id>' --softmax-suite-backend {self.spec}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()


def check(backend: Any, *, framework: str | None = None, ops: Iterable[str] | str | None = None,
          dtypes: Iterable[str] | str | None = None, cases: Iterable[str] | str | None = None,
          devices: Iterable[str] | str | None = None, cotangents: Iterable[str] | str | None = None,
          invariants: bool = True, slow: bool = False, config: str | Path | None = None) -> Checked:
    """Ask the catalogue's accuracy questions (and the forward ops' invariants) of backend, judged by the
    suite's budgets against the exact oracle.

    backend: a backend's name or spec as --backend takes it ("torch", "torch:mykernels:softmax"), a
    Backend, or a softmax function f(x, axis) or an object with op methods on the arrays of framework
    ("numpy" when not given; "torch", "jax", "mlx", "cupy"). ops, dtypes, cases (globs), devices and
    cotangents narrow the questions (comma-separated strings or lists; default: all but slow cases);
    config is a pyproject.toml with [tool.softmax-suite] (default: ./pyproject.toml where it exists).
    Raises ValueError for a name that matches nothing or a bad $SOFTMAX_SUITE_ORACLE_CACHE_LIMIT,
    BackendUnavailable for a backend not installed.
    """
    spec, loaded = _backend(backend, framework)
    chosen_ops = _chosen("op", ops, OPS)
    selection = Selection(devices=_chosen("device", devices, (*loaded.devices, *loaded.absent_devices)),
                          dtypes=_chosen("dtype", dtype_names(_names(dtypes)), DTYPES),
                          cases=_cases(cases, slow), cotangents=_chosen("cotangent", cotangents, COTANGENTS))
    settings = load_settings(Path(config) if config else Path.cwd() / "pyproject.toml")
    deviations = load_deviations(settings.known_deviations)
    cache.use_disk(store.folder_for(None), store.limit())
    checked = Checked(loaded.name, spec,
                      capabilities=capabilities(loaded.name, loaded, chosen_ops, selection))
    asked = [(op, "accuracy") for op in chosen_ops]
    asked += [(op, "invariants") for op in chosen_ops if invariants and not is_vjp(op)]
    for op, kind in asked:
        for question in questions(loaded.name, loaded, op, kind, selection,
                                  spec if spec != loaded.name else None):
            record = (accuracy.run if kind == "accuracy" else invariant_checks.run)(
                question.target, loaded, settings, deviations)
            checked.records.append({"kind": "result", **record, "nodeid": _nodeid(question.target)})
    return checked


def assert_accurate(backend: Any, **selection: Any) -> Checked:
    """check(backend, **selection), raising AssertionError with its summary when a result is unexpected."""
    checked = check(backend, **selection)
    if not checked.passed:
        raise AssertionError(f"softmax-suite: {checked.backend} is not accurate\n{checked.summary()}")
    return checked


def _backend(backend: Any, framework: str | None) -> tuple[str | None, Backend]:
    """(spec, Backend): the spec that loads it again by name (None where there is none)."""
    if isinstance(backend, Backend):
        if framework is not None:
            raise ValueError("framework= applies to a function or object, not to a Backend")
        return None, backend
    if isinstance(backend, str):
        if framework is not None:
            raise ValueError(f"framework= applies to a function or object; give the spec as "
                             f"'{framework}:{backend}'")
        check_names([backend])
        loaded = load(backend)
        if isinstance(loaded, Unavailable):
            raise BackendUnavailable(f"backend {backend!r} is unavailable: {loaded.reason}")
        return backend, loaded
    spec = _importable(backend, framework)
    return spec, wrap(backend, default_name=spec or _qualname(backend), framework=framework)


def _qualname(target: Any) -> str:
    return getattr(target, "__qualname__", None) or type(target).__qualname__


def _importable(target: Any, framework: str | None) -> str | None:
    """[framework:]module:qualname where importing that gives this very object back, else None."""
    module, name = getattr(target, "__module__", None), getattr(target, "__qualname__", None)
    if not isinstance(module, str) or not isinstance(name, str) or module == "__main__" or "<locals>" in name:
        return None
    try:
        found: Any = importlib.import_module(module)
    except ImportError:
        return None
    for part in name.split("."):
        found = getattr(found, part, None)
    if found is not target:
        return None
    return f"{framework}:{module}:{name}" if framework else f"{module}:{name}"


def _names(values: Iterable[str] | str | None) -> list[str]:
    return split([values] if isinstance(values, str) else list(values or []))


def _chosen(kind: str, values: Iterable[str] | str | None, valid: Iterable[str]) -> list[str]:
    valid = list(valid)
    chosen = _names(values)
    for name in chosen:
        if name not in valid:
            raise ValueError(no_match(kind, [name], valid))
    return [name for name in valid if not chosen or name in chosen]


def _cases(patterns: Iterable[str] | str | None, slow: bool) -> list:
    globs = _names(patterns)
    chosen = select_cases(globs, slow)
    if globs and not chosen:
        raise ValueError(no_match("case", globs, [case.name for case in CATALOGUE]))
    return chosen


def _nodeid(target: Target) -> str:
    """The catalogue's pytest id of the target (test_forward.py::test_softmax[...]), which pytest runs
    again with --softmax-suite-backend SPEC."""
    return f"{_test_files()[(target.op, target.check)]}[{target.id}]"


def _test_files() -> dict[tuple[str, str], str]:
    """(op, check) -> "test_forward.py::test_softmax": the catalogue's test functions by what they ask."""
    if not _FILES:
        suites = Path(importlib.import_module("softmax_suite.suites").__file__).parent
        for path in sorted(suites.glob("test_*.py")):
            module = importlib.import_module(f"softmax_suite.suites.{path.stem}")
            for name, function in vars(module).items():
                if getattr(function, MARK, None):
                    _FILES[getattr(function, MARK)] = f"{path.name}::{name}"
    return _FILES


_FILES: dict[tuple[str, str], str] = {}
