"""The softmax-suite command as a user runs it: exit codes, results file, listings."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from softmax_suite.dtypes import DTYPES

REPO = Path(__file__).resolve().parent.parent


def cli(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "softmax_suite.runner.cli", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=600)


def test_run_writes_results_and_exits_zero(tmp_path: Path) -> None:
    done = cli("run", "--backend", "numpy", "--case", "glossary,tied_max", "--out", str(tmp_path),
               "-n", "0")
    assert done.returncode == 0, done.stdout + done.stderr
    lines = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert lines[0]["kind"] == "run"
    results = [line for line in lines if line["kind"] == "result"]
    assert {line["name"] for line in lines if line["kind"] == "table"} == {"semantics", "agreement"}
    # 2 cases x 6 dtypes (both list the float8 ones, which numpy declares) x (3 forward ops + 3 VJPs
    # x 4 cotangent kinds + the invariants of the 3 forward ops), all passing for the numpy adapter.
    assert len(results) == 2 * 6 * (3 + 3 * 4 + 3)
    assert sum(r["check"] == "invariants" for r in results) == 2 * 6 * 3
    assert {r["status"] for r in results} == {"pass"}
    # One verdict over both passes: each dtype's 18 results of each case and its 18 timings.
    terminal = done.stdout.splitlines()
    assert "verdict: nothing unexpected; 324 passed, 0 known failures (324 results)" in terminal
    assert [line.split()[:5] for line in terminal if line.startswith("numpy ")] == [
        ["numpy", dtype, "54", "0", "0"] for dtype in DTYPES]
    # pytest-benchmark wrote its file (below) but printed neither its table nor where it wrote it.
    assert "benchmark:" not in done.stdout and "Wrote benchmark data" not in done.stdout + done.stderr
    # Then throughput, in a process of its own: 6 dtypes x 6 ops x the 3 shapes of the quick
    # sweep, in the suite's records and in pytest-benchmark's JSON with the same numbers.
    timings = [json.loads(line) for line in (tmp_path / "throughput.jsonl").read_text().splitlines()]
    timed = [line for line in timings if line["kind"] == "result"]
    # Both headers name the command as typed; the throughput process's pytest arguments beside it.
    assert lines[0]["command"][1:4] == timings[0]["command"][1:4] == ["run", "--backend", "numpy"]
    assert "throughput" in timings[0]["pytest_args"] and "--softmax-suite-results" in lines[0]["pytest_args"]
    # The throughput process reads the accuracy pass's results: its stale report judges both.
    earlier = timings[0]["pytest_args"].index("--softmax-suite-earlier-results")
    assert timings[0]["pytest_args"][earlier + 1] == str(tmp_path / "results.jsonl")
    assert len(timed) == 6 * 6 * 3 and {r["status"] for r in timed} == {"pass"}
    benchmarks = json.loads((tmp_path / "benchmark.json").read_text())["benchmarks"]
    assert len(benchmarks) == len(timed)
    by_id = {(r["op"], r["dtype"], r["case"]): r for r in timed}
    for entry in benchmarks:
        record = by_id[entry["extra_info"]["op"], entry["extra_info"]["dtype"], entry["extra_info"]["case"]]
        assert entry["stats"]["median"] == record["timing"]["median_s"]
        assert entry["extra_info"]["roofline_fraction"] == record["roofline_fraction"]
    # And the report of both files (tests/test_report*.py look inside it).
    assert (tmp_path / "report.html").stat().st_size > 0
    assert f"report in {tmp_path / 'report.html'}" in done.stdout


def test_the_long_tables_show_with_verbose_only(tmp_path: Path) -> None:
    # NaN is a special input: the special-value table has a row for it; two backends that answer
    # it alike make an agreement matrix.
    selection = ("run", "--backend", "numpy,tests.bad_softmax:Float64Upcast", "--case", "nan", "--op",
                 "softmax", "--dtype", "float32", "--throughput", "off", "-n", "0")
    done = cli(*selection, "--out", str(tmp_path / "quiet"))
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    # pytest's opening, collection and closing lines and a blank one; the verdict (a headline, a
    # header and its rule, a row per backend); where the results and the report are.
    assert len(lines) == 4 + 5 + 2, done.stdout
    assert lines[4] == "verdict: nothing unexpected; 4 passed, 0 known failures (4 results)"
    assert lines[7].split() == ["numpy", "float32", "2", "0", "0"]
    assert "special values vs policy" not in done.stdout and "bit-for-bit agreement" not in done.stdout
    verbose = cli(*selection, "--out", str(tmp_path / "verbose"), "--", "-v")
    assert verbose.returncode == 0, verbose.stdout + verbose.stderr
    assert "special values vs policy: numpy (cpu)" in verbose.stdout
    # And the counts of each backend and check by dtype.
    assert "bit-for-bit agreement" in verbose.stdout and "invariants:" in verbose.stdout
    # The verdict still closes the run, once.
    assert verbose.stdout.count("verdict: ") == 1 and lines[4] in verbose.stdout.splitlines()


def test_throughput_off_runs_accuracy_alone(tmp_path: Path) -> None:
    done = cli("run", "--backend", "numpy", "--case", "glossary", "--op", "softmax", "--dtype", "float32",
               "--throughput", "off", "--out", str(tmp_path), "-n", "0")
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "results.jsonl").exists() and not (tmp_path / "throughput.jsonl").exists()


def test_run_exits_one_when_a_case_fails(tmp_path: Path) -> None:
    # exp(x)/sum(exp(x)) overflows on equal_large (x = 1e4): NaN where a number is expected.
    done = cli("run", "--backend", "tests.bad_softmax:NoMaxShift", "--case", "equal_large",
               "--dtype", "float32", "--op", "softmax", "--out", str(tmp_path), "-n", "0")
    assert done.returncode == 1, done.stdout + done.stderr
    record = json.loads((tmp_path / "results.jsonl").read_text().splitlines()[1])
    assert record["status"] == "fail" and record["failure"] == "semantic"


def test_unknown_names_exit_two_with_the_valid_ones(tmp_path: Path) -> None:
    done = cli("run", "--backend", "numpi", "--out", str(tmp_path))
    assert done.returncode == 2
    assert "did you mean 'numpy'" in done.stdout + done.stderr
    done = cli("run", "--backend", "numpy", "--dtype", "float61", "--out", str(tmp_path))
    assert done.returncode == 2
    assert "float16, bfloat16, float32, float64" in done.stdout + done.stderr
    assert cli("frobnicate").returncode == 2


def test_unwritable_output_folder_is_a_usage_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    done = cli("run", "--backend", "numpy", "--out", str(blocker / "out"))
    assert done.returncode == 2
    assert "cannot create output folder" in done.stderr


def test_backends_and_cases_listings() -> None:
    backends = cli("backends")
    assert backends.returncode == 0
    assert "numpy" in backends.stdout and "dtypes:" in backends.stdout
    cases = cli("cases", "--dtype", "float32")
    assert cases.returncode == 0
    assert "glossary" in cases.stdout
    # The 65536-element rows apply to float16 and bfloat16 only.
    assert "long_equal_n65k" not in cases.stdout
    assert cli("cases", "--case", "nothing_like_this").returncode == 2


def test_other_libraries_dtype_names_are_accepted(tmp_path) -> None:
    # bf16, fp32, half, f64: the names other libraries use select the same dtypes (the records keep ours).
    from softmax_suite.runner.selection import dtype_names

    assert dtype_names(["bf16", "FP32", "half", "f64", "float16"]) == [
        "bfloat16", "float32", "float16", "float64", "float16"]
    done = subprocess.run([sys.executable, "-m", "softmax_suite.runner.cli", "cases", "--dtype", "bf16",
                           "--case", "glossary"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "glossary" in done.stdout, done.stderr


def test_the_options_name_the_case_timeout_the_calls_use() -> None:
    # runner.options writes the default as text so that declaring the options imports no numpy.
    from softmax_suite.backends.calls import DEFAULT_CASE_TIMEOUT
    from softmax_suite.runner.options import DEFAULT_CASE_TIMEOUT_TEXT

    assert f"{DEFAULT_CASE_TIMEOUT:g}" == DEFAULT_CASE_TIMEOUT_TEXT
