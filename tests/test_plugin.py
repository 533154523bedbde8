"""The suite run as a user runs it (pytest in a subprocess): ids, selection, usage errors, skips, the
results file, known deviations, settings and pytest-xdist."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest

from softmax_suite.backends.registry import Unavailable, load
from softmax_suite.formats import DTYPES
from softmax_suite.ops import SOFTMAX_FORWARD_OPS as FORWARD_OPS
from softmax_suite.runner.config import ConfigError, load_settings
from softmax_suite.runner.options import any_project
from softmax_suite.suites.cases import CASES
from softmax_suite.suites.deviations import load_deviations, stale

pytest_plugins = ["pytester"]

REPO = Path(__file__).resolve().parents[1]
SUITE = str(REPO / "suites" / "test_forward.py")
NO_SHIFT = "tests.bad_softmax:NoMaxShift"
RECORD_KEYS = {"backend", "backend_version", "device", "dtype", "op", "case", "shape", "seed", "status",
               "metrics", "bound", "message"}


@pytest.fixture
def suite(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch):
    """Run the suite's test module in a fresh pytest process, from pytester's empty directory (so
    no ./pyproject.toml settings apply unless a test writes one)."""
    # The checkout, for tests.bad_softmax and the -p plugins in tests/plugins_for_tests.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))

    def run(*args: str, module: str = SUITE) -> pytest.RunResult:
        # hypothesis' plugin costs 0.5 s of imports per process and the suite does not use it.
        return pytester.runpytest_subprocess(module, "-p", "no:cacheprovider", "-p", "no:hypothesispytest",
                                             *any_project(args))

    return run


def collected(result: pytest.RunResult) -> list[str]:
    """Test ids (the part after ::) from `--collect-only -q` output."""
    return [line.split("::", 1)[1] for line in result.outlines if "::" in line]


def read(path: Path) -> tuple[dict, list[dict]]:
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert lines[0]["kind"] == "run"
    # Results as they came, then the two tables derived from them and the end line of a finished run.
    assert [line["kind"] for line in lines[-3:]] == ["table", "table", "end"]
    assert [line["name"] for line in lines[-3:-1]] == ["semantics", "agreement"]
    assert all(line["kind"] == "result" for line in lines[1:-3])
    assert lines[-1]["results"] == len(lines) - 4
    return lines[0], lines[1:-3]


def test_ids_are_readable(suite) -> None:
    result = suite("--collect-only", "-q", "--backend", "numpy", "--case", "glossary")
    assert result.ret == 0
    assert "suites/test_forward.py::test_softmax[numpy-cpu-float32-glossary]" in result.outlines
    # Ordered by case, then dtype, then op: one input's oracle is computed once and reused at once.
    assert collected(result) == [f"test_{op}[numpy-cpu-{dtype}-glossary]"
                                 for dtype in DTYPES for op in FORWARD_OPS]


def test_results_file_has_a_header_and_one_line_per_result(suite, pytester: pytest.Pytester) -> None:
    path = pytester.path / "out" / "results.jsonl"
    result = suite("--backend", "numpy", "--case", "glossary", "--results", str(path))
    result.assert_outcomes(passed=18)
    # The terminal ends with the verdict: three forward ops of each dtype, float8 included (pytest
    # lists failures itself).
    verdict = "verdict: nothing unexpected; 18 passed, 0 known failures (18 results)"
    assert verdict in result.outlines
    assert [line.split() for line in result.outlines if line.startswith("numpy ")] == [
        ["numpy", dtype, "3", "0", "0"] for dtype in DTYPES]
    assert f"results: {path}" in result.outlines
    header, records = read(path)
    assert header["backends"]["numpy"]["version"] == np.__version__
    assert header["settings"]["source"] == "defaults"
    assert {"command", "started", "python", "platform", "cpu_count"} <= set(header)
    assert len(records) == 18
    assert {(r["op"], r["dtype"]) for r in records} == {(o, d) for o in FORWARD_OPS for d in DTYPES}
    for record in records:
        assert set(record) >= RECORD_KEYS, RECORD_KEYS - set(record)
        assert (record["backend"], record["backend_version"], record["device"], record["case"]) == (
            "numpy", np.__version__, "cpu", "glossary")
        assert record["shape"] == [4] and record["seed"] == CASES["glossary"].resolved_seed
        assert record["status"] == "pass" and record["metrics"]["max_ulp"] <= record["bound"]["budget_ulp"]


@pytest.mark.parametrize("spelling", [
    ["--backend", f"numpy,{NO_SHIFT}", "--dtype", "float16,bfloat16", "--op", "softmax",
     "--case", "glossary,equal_large"],
    # Repeating an option is the same as a comma-separated list.
    ["--backend", "numpy", "--backend", NO_SHIFT, "--dtype", "float16", "--dtype", "bfloat16",
     "--op", "softmax", "--case", "glossary", "--case", "equal_*"],
])
def test_comma_separated_selection_is_exactly_the_product(suite, spelling: list[str]) -> None:
    result = suite("--collect-only", "-q", *spelling)
    assert result.ret == 0
    assert sorted(collected(result)) == sorted(
        f"test_softmax[{backend}-cpu-{dtype}-{case}]" for backend in ("numpy", NO_SHIFT)
        for dtype in ("float16", "bfloat16") for case in ("glossary", "equal_large"))


@pytest.mark.parametrize(("args", "words"), [
    (["--backend", "numpi"], ["unknown backend 'numpi'", "numpy, scipy, torch, jax",
                              "package.module:attr", "did you mean 'numpy'?"]),
    (["--op", "softmx"], ["no op matches 'softmx'", "valid are softmax, log_softmax, logsumexp",
                          "did you mean 'softmax'?"]),
    (["--dtype", "flaot32"], ["no dtype matches 'flaot32'", "valid are float16, bfloat16, float32, float64",
                              "did you mean 'float32'?"]),
    (["--case", "glosary"], ["no case matches 'glosary'", "glossary, random_n2,",
                             "did you mean 'glossary'?"]),
    (["--backend", "numpy", "--device", "cpy"], ["no device matches 'cpy': valid are cpu",
                                                 "did you mean 'cpu'?"]),
])
def test_unknown_names_are_usage_errors(suite, args: list[str], words: list[str]) -> None:
    result = suite("--collect-only", *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    message = result.stderr.str()
    for word in words:
        assert word in message


def test_an_uninstalled_backend_is_one_capability_entry(suite, pytester: pytest.Pytester) -> None:
    path = pytester.path / "results.jsonl"
    result = suite("-p", "tests.plugins_for_tests.block_jax", "--backend", "numpy,jax", "--case",
                   "glossary", "--dtype", "float32", "--results", str(path), "-rs")
    # numpy still runs; jax asks nothing (no item, no crash of the run) and is named once, with why.
    result.assert_outcomes(passed=3)
    assert any(line.startswith("not run: jax") for line in result.outlines), result.stdout.str()
    header, records = read(path)
    assert "jax is not installed" in header["backends"]["jax"]["unavailable"]
    assert not [r for r in records if r["backend"] == "jax"]
    (entry,) = [e for e in header["capabilities"] if e["backend"] == "jax"]
    assert (entry["device"], entry["op"], entry["dtype"]) == ("any", "any", "any")
    assert entry["reason"].startswith("jax is not installed")


def test_absent_devices_are_one_entry_each(suite, pytester: pytest.Pytester) -> None:
    pytest.importorskip("torch")
    torch_backend = load("torch")
    assert not isinstance(torch_backend, Unavailable)
    absent = dict(torch_backend.absent_devices)
    # A machine has at most one of cuda and mps, so at least one is absent here.
    assert absent
    path = pytester.path / "results.jsonl"
    result = suite("--backend", "torch", "--case", "glossary", "--dtype", "float32", "--results",
                   str(path), "-rs")
    result.assert_outcomes(passed=len(FORWARD_OPS))
    header, records = read(path)
    assert {r["device"] for r in records} == {"cpu"}
    assert {e["device"]: e["reason"] for e in header["capabilities"] if e["op"] == "any"} == absent


DEVIATIONS = f"""
[[deviation]]
backend = "{NO_SHIFT}"
op = "softmax"
dtype = "float32"
case = "equal_large"
failure = "semantic"
reason = "no max shift: exp(1e4) overflows"

[[deviation]]
backend = "tests.bad_softmax:*"
op = "softmax"
dtype = "*"
case = "glossary"
reason = "an entry for a result that passes"
"""


def test_a_known_deviation_is_an_xfail_and_an_unused_one_is_stale(suite, pytester: pytest.Pytester) -> None:
    selection = ["--backend", NO_SHIFT, "--op", "softmax", "--dtype", "float32", "--case",
                 "glossary,equal_large"]
    # Without the deviations file, NoMaxShift fails equal_large (NaN from inf / inf).
    plain = suite(*selection)
    plain.assert_outcomes(passed=1, failed=1)
    config = pytester.path / "project"
    config.mkdir()
    (config / "pyproject.toml").write_text('[tool.softmax-suite]\nknown_deviations = "dev.toml"\n')
    (config / "dev.toml").write_text(DEVIATIONS)
    path = pytester.path / "results.jsonl"
    result = suite(*selection, "--suite-config", str(config / "pyproject.toml"), "--results", str(path))
    result.assert_outcomes(passed=1, xfailed=1)
    assert result.ret == 0
    # A partial selection cannot tell a stale entry from one whose failing cases were not run,
    # so the terminal says nothing; on the records of the run the unused entry is found.
    assert not [line for line in result.outlines if "stale known deviation" in line]
    unused = stale(load_deviations(config / "dev.toml"), read(path)[1])
    assert [d.reason for d in unused] == ["an entry for a result that passes"]
    header, records = read(path)
    assert header["settings"]["source"] == str(config / "pyproject.toml")
    by_case = {r["case"]: r for r in records}
    assert by_case["glossary"]["status"] == "pass"
    known = by_case["equal_large"]
    assert known["status"] == "known_failure" and known["failure"] == "semantic"
    assert known["known_deviation"]["entry"] == 1
    assert known["message"].startswith("known deviation: no max shift: exp(1e4) overflows [")


MALFORMED = [
    ('[tool.softmax-suite]\nflush_to_zero = "note"\ntolerance = 3\n',
     ["unknown key 'tolerance'", "valid keys are budget, flush_to_zero, gate, known_deviations"]),
    ("[tool.softmax-suite.budget]\nc0 = -1.0\n", ["budget.c0 = -1.0: must be a number >= 0"]),
    ('[tool.softmax-suite.budget]\nc_sum = "two"\n', ["budget.c_sum = 'two': must be a number >= 0"]),
    ("[tool.softmax-suite.budget]\nc_sum = true\n", ["budget.c_sum = True: must be a number >= 0"]),
    ("[tool.softmax-suite.budget]\nc1 = 2.0\n", ["unknown constant 'c1'", "c0, c_exp, c_sum"]),
    ('[tool.softmax-suite]\nflush_to_zero = "yes"\n', ["flush_to_zero = 'yes': must be one of note, fail"]),
    ('[tool.softmax-suite]\nknown_deviations = "missing.toml"\n', ["known_deviations = 'missing.toml'"]),
    ("[tool.softmax-suite\n", ["not valid TOML"]),
]


@pytest.mark.parametrize(("table", "words"), MALFORMED)
def test_malformed_settings_name_the_key(tmp_path: Path, table: str, words: list[str]) -> None:
    config = tmp_path / "pyproject.toml"
    config.write_text(table)
    with pytest.raises(ConfigError) as raised:
        load_settings(config)
    assert str(config) in str(raised.value)
    for word in words:
        assert word in str(raised.value)


@pytest.mark.parametrize(("table", "words"), MALFORMED[:2])
def test_malformed_settings_are_usage_errors(suite, pytester: pytest.Pytester, table: str,
                                             words: list[str]) -> None:
    config = pytester.path / "pyproject.toml"
    config.write_text(table)
    result = suite("--backend", "numpy", "--case", "glossary", "--suite-config", str(config))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    message = result.stderr.str()
    assert str(config) in message
    for word in words:
        assert word in message


def test_xdist_gives_the_same_results_as_a_serial_run(suite, pytester: pytest.Pytester) -> None:
    selection = ["--backend", f"numpy,{NO_SHIFT}", "--case", "glossary,equal_large,pos_inf,nan,empty",
                 "--dtype", "bfloat16,float32"]
    runs = {}
    for name, extra in (("serial", []), ("xdist", ["-n", "2"])):
        path = pytester.path / f"{name}.jsonl"
        result = suite(*selection, "--results", str(path), *extra)
        # NoMaxShift fails equal_large and pos_inf: exit code 1 either way.
        assert result.ret == pytest.ExitCode.TESTS_FAILED
        _, records = read(path)
        runs[name] = [(r["backend"], r["dtype"], r["op"], r["case"], r["status"]) for r in records]
    assert len(runs["serial"]) == 2 * 5 * 2 * 3
    assert len(set(runs["xdist"])) == len(runs["xdist"]), "a result was written twice"
    assert sorted(runs["xdist"]) == sorted(runs["serial"])
    assert {status for *_, status in runs["serial"]} == {"pass", "fail"}


def test_the_slow_case_needs_slow(suite) -> None:
    selection = ["--collect-only", "-q", "--backend", "numpy", "--op", "softmax", "--dtype", "float32"]
    default = collected(suite(*selection))
    with_slow = collected(suite(*selection, "--slow"))
    slow_ids = ["test_softmax[numpy-cpu-float32-long_random_n4M]",
                *(f"test_softmax[numpy-cpu-float32-ladder_{rows}_n16777217]"
                  for rows in ("uniform", "near_uniform", "random"))]
    assert not set(slow_ids) & set(default)
    assert sorted(with_slow) == sorted([*default, *slow_ids])
    # long_*_n65k are 16-bit only: --dtype float32 must not pull them in.
    assert not any(re.search(r"n65k", test_id) for test_id in default)


# -- gradients -----------------------------------------------------------------------------------

GRADIENTS = str(REPO / "suites" / "test_gradients.py")


def test_vjp_ids_name_the_cotangent_and_records_carry_it(pytester: pytest.Pytester, suite) -> None:
    path = pytester.path / "vjp.jsonl"
    result = suite("--backend", "numpy,scipy", "--case", "glossary", "--dtype", "float32",
                   "--cotangent", "constant,one_hot", "--results", str(path), "-v", module=GRADIENTS)
    # numpy: 3 VJPs x 2 kinds pass; scipy has no gradients: no item asks it.
    result.assert_outcomes(passed=6)
    assert any("test_softmax_vjp[numpy-cpu-float32-glossary-constant] PASSED" in line
               for line in result.outlines)
    header, records = read(path)
    numpy_records = [r for r in records if r["backend"] == "numpy"]
    assert {(r["op"], r["cotangent"]) for r in numpy_records} == {
        (op, kind) for op in ("softmax_vjp", "log_softmax_vjp", "logsumexp_vjp")
        for kind in ("constant", "one_hot")}
    constant = next(r for r in numpy_records if (r["op"], r["cotangent"]) == ("softmax_vjp", "constant"))
    # A constant cotangent: the exact softmax VJP is 0 everywhere, so every element cancels and
    # none is in the ULP statistics; the scaled error stays a few u.
    assert constant["metrics"]["n_cancellation"] == 4 and constant["metrics"]["max_ulp"] is None
    assert constant["metrics"]["max_scaled"] < 4
    assert constant["bound"]["theory"]["ratio"] < 1 and constant["bound"]["theory"]["n"] == 4
    # ... and the capability table says why, once per VJP in the one dtype asked.
    assert {(e["op"], e["dtype"], e["reason"]) for e in header["capabilities"]} == {
        (op, "float32", f"scipy has no {op}") for op in ("softmax_vjp", "log_softmax_vjp", "logsumexp_vjp")}


def test_an_unknown_cotangent_is_a_usage_error(suite) -> None:
    result = suite("--cotangent", "onehot", module=GRADIENTS)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*no cotangent matches 'onehot'*valid are random, one_hot, constant, "
                                 "mixed, ones; did you mean 'one_hot'?*"])
