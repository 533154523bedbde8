"""A bad backend costs only itself: each planted fault of tests/faulty_backend.py loses the one case it
strikes, recorded as an error with its reason, and the run goes on; in the suite's process, under
--isolate, and under pytest-xdist. Plus the isolation layer's wire and shutdown."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

from softmax_suite.backends import isolation
from softmax_suite.backends.calls import CallTimeout, limited
from softmax_suite.backends.registry import load
from softmax_suite.runner.cli import EXIT_USAGE, main
from softmax_suite.suites import accuracy

REPO = Path(__file__).resolve().parent.parent
CASES = ("glossary", "tied_max", "nan")
FAULTY_CASE = "nan"  # each planted backend goes wrong only for an input holding a NaN
LIMIT = 2  # seconds; a fault must cost about this, never the 600 s default
# fault -> (the record's failure, what its message says after the call's label), in the suite's process.
IN_PROCESS = {
    "Raises": ("error", "raised ValueError: planted: no softmax for a row with a NaN"),
    "WrongShape": ("error", "returned shape (4, 5), expected (4, 6)"),  # the case `nan` is 4 x 6
    "WrongDtype": ("error", "returned float64 for float32 input"),
    "ReturnsNone": ("error", "returned None, not an array (numpy.ndarray, as to_device makes)"),
    "ReturnsList": ("error", "returned a list, not an array (numpy.ndarray, as to_device makes)"),
    "ReturnsFloat": ("error", "returned a float, not an array (numpy.ndarray, as to_device makes)"),
    "WrongDevice": ("error", "returned an array on device cuda:0 for an input on cpu"),
    # A sleep is Python: SIGALRM stops it at the limit.
    "Hangs": ("timeout", f"timed out: stopped at the case timeout of {LIMIT} s; "
                         "--case-timeout SECONDS raises the limit"),
    # A C call holding the GIL runs to its end (SPIN_S = 4 s) and the timeout comes late, "it returned
    # after 4 s, past the case timeout"; or at the limit, when a busy machine ended a call early.
    "SpinsInC": ("timeout", "timed out: "),
}
KILLED = ("timeout", f"timed out: no result within the case timeout of {LIMIT} s; its worker process was "
                     "killed")
# Under --isolate a hang is killed at the limit, and a dying interpreter is one more failure.
ISOLATED = {
    **IN_PROCESS, "Hangs": KILLED, "SpinsInC": KILLED,
    "Segfault": ("crash", "crashed: the backend process died with SIGSEGV (signal 11)"),
    "Aborts": ("crash", "crashed: the backend process died with SIGABRT (signal 6)"),
    "ExitsInterpreter": ("crash", "crashed: the backend process exited with status 3"),
}
EXPECTED = {"in-process": IN_PROCESS, "isolated": ISOLATED}
# Backends whose loading kills the process that loads it, and how their worker process died.
DIES_WHEN_LOADED = {"SegfaultsWhenLoaded": "died with SIGSEGV (signal 11)",
                    "ExitsWhenLoaded": "exited with status 3"}
# The suite's call labels: the accuracy check's one call, and the invariants' first of several.
LABELS = {"accuracy": "softmax", "invariants": "softmax(x)"}


def start(faults: list[str], out: Path, *options: str, others: tuple[str, ...] = ()) -> subprocess.Popen:
    """softmax-suite run over the planted backends (and others), as a user types it (from the checkout,
    so that `tests.` imports)."""
    backends = ",".join([*others, *(f"tests.faulty_backend:{fault}" for fault in faults)])
    return subprocess.Popen(
        [sys.executable, "-m", "softmax_suite.runner.cli",
         "run", "--backend", backends, "--case", ",".join(CASES),
         "--dtype", "float32", "--op", "softmax", "--throughput", "off", "--case-timeout", str(LIMIT),
         "--oracle-cache", "off", "--out", str(out), *options],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(process: subprocess.Popen, out: Path) -> dict:
    output, _ = process.communicate(timeout=300)
    # Every line is one JSON value: a crash of a backend leaves no torn line.
    lines = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert lines[0]["kind"] == "run"
    return {"code": process.returncode, "output": output,
            "records": [line for line in lines if line["kind"] == "result"]}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """One run per mode, over every fault the mode survives; the two run side by side (each mostly
    waits for its timeouts)."""
    out = {mode: tmp_path_factory.mktemp(mode) for mode in EXPECTED}
    started = {"in-process": start(list(IN_PROCESS), out["in-process"], "-n", "0"),
               "isolated": start(list(ISOLATED), out["isolated"], "-n", "0", "--isolate")}
    return {mode: finish(process, out[mode]) for mode, process in started.items()}


@pytest.mark.parametrize("mode", EXPECTED)
def test_the_run_goes_on_and_exits_one(runs: dict, mode: str) -> None:
    run = runs[mode]
    assert run["code"] == 1, run["output"]  # something failed; not 2 (usage) nor a crash of the suite
    assert "Traceback (most recent call last)" not in run["output"]
    assert "INTERNALERROR" not in run["output"]
    # Every backend x case x check has its record: accuracy and the invariants of softmax.
    assert len(run["records"]) == len(EXPECTED[mode]) * len(CASES) * 2


@pytest.mark.parametrize(("mode", "fault"), [(mode, fault) for mode in EXPECTED for fault in EXPECTED[mode]])
def test_a_fault_costs_its_case_only(runs: dict, mode: str, fault: str) -> None:
    failure, text = EXPECTED[mode][fault]
    mine = [r for r in runs[mode]["records"] if r["backend"] == f"tests.faulty_backend:{fault}"]
    assert sorted((r["case"], r["check"]) for r in mine) == sorted(
        (case, check) for case in CASES for check in LABELS)
    for record in mine:
        if record["case"] != FAULTY_CASE:
            # Right elsewhere: Float64Upcast passes these cases, and so must the backend.
            assert record["status"] == "pass", record["message"]
            continue
        assert (record["status"], record["failure"]) == ("error", failure), record["message"]
        label = LABELS[record["check"]]
        assert record["message"].startswith(f"{label} ") and text in record["message"], record["message"]
        if mode == "isolated" and failure != "error" and fault != "ExitsInterpreter":
            # faulthandler's dump from the worker: where the backend was when it died or was killed.
            assert "faulty_backend.py" in record["traceback"], record["traceback"]


def test_a_segfault_under_xdist_costs_one_case(tmp_path: Path) -> None:
    # Each xdist worker has its own backend workers; the crash costs the case `nan`, in each of its
    # two checks, on whichever xdist worker ran it, and nothing else.
    run = finish(start(["Segfault"], tmp_path, "-n", "2", "--isolate"), tmp_path)
    assert run["code"] == 1, run["output"]
    assert "Traceback (most recent call last)" not in run["output"]
    lost = {(r["case"], r["check"]) for r in run["records"] if r["status"] != "pass"}
    assert lost == {(FAULTY_CASE, check) for check in LABELS}
    assert {r["failure"] for r in run["records"] if r["status"] != "pass"} == {"crash"}
    assert len(run["records"]) == len(CASES) * 2


def test_a_backend_that_crashes_while_loaded_costs_only_itself_under_isolate(tmp_path: Path) -> None:
    # The suite's process never loads it: its worker process dies, and it is an unavailable backend
    # (asked nothing; the capability table says what happened) while numpy runs; the exit status is
    # numpy's (0: all passed).
    run = finish(start(list(DIES_WHEN_LOADED), tmp_path, "-n", "0", "--isolate", others=("numpy",)), tmp_path)
    assert run["code"] == 0, run["output"]
    assert "Traceback (most recent call last)" not in run["output"]
    numpy = [r for r in run["records"] if r["backend"] == "numpy"]
    assert len(numpy) == len(CASES) * 2 and {r["status"] for r in numpy} == {"pass"}
    header = json.loads((tmp_path / "results.jsonl").read_text().splitlines()[0])
    for fault, death in DIES_WHEN_LOADED.items():
        name = f"tests.faulty_backend:{fault}"
        reason = header["backends"][name]["unavailable"]
        assert reason.startswith(f"crashed: the backend process {death} while it loaded the backend"), reason
        assert not [r for r in run["records"] if r["backend"] == name]
        assert [e["reason"] for e in header["capabilities"] if e["backend"] == name] == [reason]
        assert name in run["output"].partition("not run: ")[2]  # the verdict's list of what did not run
    # Where the segfault struck, from faulthandler in the worker.
    stack = header["backends"]["tests.faulty_backend:SegfaultsWhenLoaded"]["unavailable"]
    assert "faulty_backend.py" in stack and "__init__" in stack, stack


def test_arrays_cross_the_pipe_with_their_bits_and_layout() -> None:
    # bfloat16 goes by name; a strided input keeps its strides (the case's layout is its question).
    wide = np.arange(40, dtype=np.float32).reshape(4, 10).astype(ml_dtypes.bfloat16)
    arrays = [wide[:, ::2], np.asfortranarray(np.linspace(-3, 3, 12, dtype=np.float16).reshape(3, 4)),
              np.float64(np.pi) * np.ones(()), np.zeros((3, 0), dtype=np.float32)]
    here, there = isolation.CONTEXT.Pipe()
    isolation.send(here, {"op": "softmax"}, arrays)
    header, got = isolation.receive(there)
    assert header["op"] == "softmax"
    for sent, came in zip(arrays, got, strict=True):
        assert (came.dtype, came.shape) == (sent.dtype, sent.shape)
        assert came.strides == sent.strides or not sent.size
        assert came.tobytes() == sent.tobytes()
        assert not came.flags.writeable  # as the suite's inputs are


def test_an_isolated_backend_answers_as_in_process_and_is_shut_down() -> None:
    x = np.linspace(-20, 20, 64, dtype=np.float32).reshape(4, 16).astype(ml_dtypes.bfloat16)[:, ::2]
    backend = load("numpy")
    isolated = isolation.Isolated.load("numpy", LIMIT)
    # Known by what its worker process said of it: the same as the copy loaded here.
    assert (isolated.name, isolated.version, isolated.devices, isolated.dtypes, set(isolated.ops)) == (
        backend.name, backend.version, backend.devices, backend.dtypes, set(backend.ops))
    assert isolated.describe("cpu") == json.loads(json.dumps(dict(backend.describe("cpu"))))
    expected = accuracy.call_backend(backend, "log_softmax", "cpu", -1, [x], x.shape)
    got = accuracy.call_backend(isolated, "log_softmax", "cpu", -1, [x], x.shape, limit=LIMIT)
    assert got.tobytes() == expected.tobytes()
    process = isolated.worker.process
    isolation.shutdown()  # what the plugin does at the end of the session
    assert not process.is_alive() and isolated.worker.process is None


def test_a_python_hang_in_process_is_stopped_at_the_limit() -> None:
    started = time.monotonic()
    with pytest.raises(CallTimeout, match=r"stopped at the case timeout of 0\.2 s"):
        limited(0.2, lambda: time.sleep(30))
    assert time.monotonic() - started < 2


@pytest.mark.parametrize("value", ["-1", "nan", "soon"])
def test_a_case_timeout_that_is_no_number_of_seconds_is_a_usage_error(value: str,
                                                                      capsys: pytest.CaptureFixture) -> None:
    assert main(["run", "--backend", "numpy", "--case-timeout", value]) == EXIT_USAGE
    assert "is not a number of seconds >= 0" in capsys.readouterr().err
