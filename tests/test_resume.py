"""A run killed with SIGKILL halfway costs only itself: its results file reads back as partial,
`report` and `gate` accept it and say so, and `run --resume` completes it to exactly the records of
an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest

from softmax_suite.reports.results import SCHEMA_VERSION, end_line, read_results
from softmax_suite.runner import cli, resume

REPO = Path(__file__).resolve().parents[1]
# numpy and numpy's softmax slowed by 0.05 s a call (tests/slow_backend.py): 32 results (4 cases x
# 2 dtypes x accuracy and invariants x 2 backends) over about 3 s, long enough to be killed halfway.
SELECTION = ["--backend", "numpy,tests.slow_backend:softmax", "--op", "softmax",
             "--case", "glossary,tied_max,equal_large,neg_inf_mask", "--dtype", "float32,float64"]
EXPECTED_RESULTS = 4 * 2 * 2 * 2
KILL_AFTER = 4


def command(*args: str, cache: Path, workers: str = "0") -> list[str]:
    return [sys.executable, "-m", "softmax_suite.runner.cli", *args, "-n", workers, "--throughput", "off",
            "--oracle-cache", str(cache)]


def outcomes(path: Path) -> list[tuple[str, str]]:
    """(node id, status) of every result, in file order."""
    return [(record["nodeid"], record["status"]) for record in read_results(path)[1]]


def main(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str]:
    """runner.cli.main in this process (report, gate and baseline start no pytest): code, output."""
    code = cli.main(list(args))
    captured = capsys.readouterr()
    return code, captured.out + captured.err


@pytest.fixture(scope="module")
def full(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted run's folder, and beside it the oracle cache the other runs share."""
    base = tmp_path_factory.mktemp("resume")
    done = subprocess.run(command("run", *SELECTION, "--out", str(base / "full"), cache=base / "cache"),
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return base / "full"


def kill_halfway(out: Path, cache: Path) -> None:
    """Start the run of `full` into out and SIGKILL it once KILL_AFTER results are on disk."""
    process = subprocess.Popen(command("run", *SELECTION, "--out", str(out), cache=cache), cwd=REPO,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    results = out / "results.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if results.exists() and results.read_text().count('"kind": "result"') >= KILL_AFTER:
            break
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    # -9: killed, not finished first (the run would then have nothing to resume).
    assert process.wait(timeout=60) == -signal.SIGKILL


def test_a_killed_run_reads_back_partial_and_resumes_to_the_full_records(full: Path, capsys,
                                                                        monkeypatch) -> None:
    base = full.parent
    killed = base / "killed"
    kill_halfway(killed, base / "cache")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        header, records = read_results(killed / "results.jsonl")
    # Every line whole, or only the last one cut and skipped with its warning.
    assert all("truncated last line skipped" in str(w.message) for w in caught) and len(caught) <= 1
    assert header["partial"] is True and "finished" not in header
    expected = outcomes(full / "results.jsonl")
    assert len(expected) == EXPECTED_RESULTS and len(set(expected)) == EXPECTED_RESULTS
    assert KILL_AFTER <= len(records) < EXPECTED_RESULTS
    assert {(r["nodeid"], r["status"]) for r in records} <= set(expected)

    # report and gate read it, say it is partial, and judge what is there: exit 0 (nothing
    # regressed), the results not reached counted as not run yet rather than warned as missing.
    code, said = main(capsys, "report", str(killed / "results.jsonl"), "-o", str(base / "partial.html"))
    assert code == 0 and "PARTIAL results" in said
    assert 'id="partial"' in (base / "partial.html").read_text()
    code, said = main(capsys, "baseline", "save", str(full / "results.jsonl"), "-o", str(base / "base.json"))
    assert code == 0, said
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(base / "summary.md"))
    code, said = main(capsys, "gate", str(killed / "results.jsonl"), "--baseline", str(base / "base.json"))
    assert code == 0 and "PARTIAL results" in said
    assert "**Partial results**" in (base / "summary.md").read_text()
    monkeypatch.delenv("GITHUB_STEP_SUMMARY")
    assert f"{EXPECTED_RESULTS - len(records)} result(s) of the baseline not run yet (partial run)" in said
    assert "missing from the run" not in said
    # A baseline must not be saved from it: its missing entries would go ungated.
    code, said = main(capsys, "baseline", "save", str(killed / "results.jsonl"), "-o", str(base / "b.json"))
    assert code == 2 and "partial results" in said

    # Another selection cannot continue it, and leaves it as it was.
    before = (killed / "results.jsonl").read_bytes()
    refused = subprocess.run(command("run", "--resume", str(killed), *SELECTION[:4], "--case", "glossary",
                                     cache=base / "cache"), cwd=REPO, capture_output=True, text=True,
                             timeout=300)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "selection.cases: lacks equal_large, neg_inf_mask, tied_max" in refused.stderr
    assert (killed / "results.jsonl").read_bytes() == before

    # Without selection options the resume takes the recorded ones, and runs only what is missing.
    resumed = subprocess.run(command("run", "--resume", str(killed), cache=base / "cache"), cwd=REPO,
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"{EXPECTED_RESULTS - len(records)} passed" in resumed.stdout
    header, _ = read_results(killed / "results.jsonl")
    assert header["partial"] is False and len(header["resumed"]) == 1
    final = outcomes(killed / "results.jsonl")
    assert sorted(final) == sorted(expected)  # none missing, none twice
    code, said = main(capsys, "gate", str(killed / "results.jsonl"), "--baseline", str(base / "base.json"))
    # every result of the resumed run against the uninterrupted one's: nothing changed, missing or new
    assert code == 0 and said.strip() == f"gate: 0 regressions, 0 improvements, {len(expected)} unchanged"


def test_a_serial_run_resumes_under_xdist(full: Path) -> None:
    # Each worker must pass over exactly the recorded items.
    cut = full.parent / "cut"
    cut.mkdir()
    kept = (full / "results.jsonl").read_text().splitlines(keepends=True)[:1 + KILL_AFTER]
    (cut / "results.jsonl").write_text("".join(kept))
    done = subprocess.run(command("run", "--resume", str(cut), cache=full.parent / "cache", workers="2"),
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert sorted(outcomes(cut / "results.jsonl")) == sorted(outcomes(full / "results.jsonl"))


@pytest.mark.parametrize(("given", "difference"), [
    (["--isolate"], "settings.isolate: recorded False, this run True"),
    (["--case-timeout", "5"], "settings.case_timeout: recorded 600.0, this run 5.0"),
])
def test_a_resume_under_another_isolate_or_case_timeout_is_refused(full: Path, tmp_path: Path,
                                                                   given: list[str], difference: str) -> None:
    # A case that timed out or crashed under one may pass under the other: the kept records and the
    # new ones would not be comparable, so the difference is named and the file left as it was.
    kept = (full / "results.jsonl").read_text().splitlines(keepends=True)[:1 + KILL_AFTER]
    (tmp_path / "results.jsonl").write_text("".join(kept))
    refused = subprocess.run(command("run", "--resume", str(tmp_path), *given, cache=full.parent / "cache"),
                             cwd=REPO, capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert difference in refused.stderr
    assert (tmp_path / "results.jsonl").read_text() == "".join(kept)


def test_a_resume_given_neither_takes_the_recorded_isolate_and_case_timeout(tmp_path: Path) -> None:
    # Not given, they are the killed run's: the resume keeps its crash safety and time limit.
    write(tmp_path / "results.jsonl", 3, False, settings={"isolate": True, "case_timeout": 5.0})
    args = cli.build_parser().parse_args(["run", "--resume", str(tmp_path)])
    resume.plan(tmp_path, args)
    assert (args.isolate, args.case_timeout) == (True, 5.0)


def children(pid: int) -> dict[int, str]:
    """The processes whose parent is pid: their command lines, by process id (Linux's /proc)."""
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])  # after "pid (name) state"
            if parent == pid:
                found[int(stat.parent.name)] = (stat.parent / "cmdline").read_text().replace("\0", " ")
        except (OSError, IndexError, ValueError):  # a process that ended while it was read
            continue
    return found


def running(pid: int) -> bool:
    """Whether the process exists and has not ended (a zombie, not yet reaped, has ended)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the process table from /proc")
@pytest.mark.parametrize(("stop", "status"), [(signal.SIGINT, 128 + signal.SIGINT),
                                             (signal.SIGTERM, 128 + signal.SIGTERM)])
def test_stopping_run_ends_its_throughput_child_too(tmp_path: Path, stop: signal.Signals,
                                                    status: int) -> None:
    # The throughput pass runs in a child process, here for a minute a call (tests/slow_backend.py):
    # a SIGTERM or a Ctrl-C to `softmax-suite run` alone must not leave it running, timing on.
    said = tmp_path / "said.txt"  # not a pipe: a child left running would hold it open
    with said.open("w") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "softmax_suite.runner.cli", "run",
             "--backend", "tests.slow_backend:slow_to_time", "--op", "softmax", "--dtype", "float32",
             "--case", "glossary", "-n", "0", "--throughput", "quick",
             "--oracle-cache", str(tmp_path / "cache"), "--out", str(tmp_path / "out")],
            cwd=REPO, stdout=output, stderr=subprocess.STDOUT, preexec_fn=as_from_a_terminal)
    child = None
    try:
        deadline = time.monotonic() + 120
        while child is None and time.monotonic() < deadline and process.poll() is None:
            child = next((pid for pid, line in children(process.pid).items() if "throughput.jsonl" in line),
                         None)
            time.sleep(0.05)
        assert child is not None, said.read_text()
        process.send_signal(stop)
        process.wait(timeout=60)
        deadline = time.monotonic() + 5
        while running(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not running(child), "the throughput child outlived softmax-suite run"
        assert process.returncode == status, said.read_text()
        assert "Traceback" not in said.read_text()
    finally:
        process.kill()
        if child is not None and running(child):
            os.kill(child, signal.SIGKILL)


def as_from_a_terminal() -> None:
    # A shell without job control starts a background job with SIGINT ignored, and Python keeps an
    # ignored SIGINT ignored: the tests run that way (`pytest &`, CI) would send a Ctrl-C that nobody
    # hears. A terminal's Ctrl-C reaches a process whose SIGINT is the default.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def write(path: Path, records: int, finished: bool, **header: object) -> None:
    results = [{"status": "pass", "backend": "numpy", "op": "softmax", "nodeid": f"t[{i}]"}
               for i in range(records)]
    lines = [{"kind": "run", "schema": SCHEMA_VERSION, **header}, *({"kind": "result", **r} for r in results)]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines + [end_line(results)] * finished))


@pytest.mark.parametrize(("accuracy", "timings", "expected"), [
    # Killed during the accuracy run: continue it, then the throughput run from the start.
    ((3, False), None, ("resume", "run")),
    # Killed during the throughput run: continue that alone, with the sweep it was started with.
    ((3, True), (2, False), ("done", "resume")),
    ((3, True), (2, True), ("done", "done")),
])
def test_resume_plans_each_file_from_its_end_line(tmp_path: Path, accuracy, timings, expected) -> None:
    write(tmp_path / "results.jsonl", *accuracy, options={"case": ["glossary"], "slow": False})
    if timings:
        write(tmp_path / "throughput.jsonl", *timings, selection={"sweep": "full"})
    args = cli.build_parser().parse_args(["run", "--resume", str(tmp_path)])
    assert resume.plan(tmp_path, args) == resume.Steps(*expected)
    # No selection given: the recorded one; the throughput file's sweep where it has one.
    assert args.case == ["glossary"] and args.throughput == ("full" if timings else "quick")


@pytest.mark.parametrize(("finished", "partial"), [((True, True), False), ((True, False), True)])
def test_a_merge_is_partial_when_a_source_is(tmp_path: Path, capsys, finished, partial) -> None:
    sources = [str(tmp_path / f"{host}.jsonl") for host in ("cpu", "gpu")]
    for source, done in zip(sources, finished, strict=True):
        write(Path(source), 2, done)
    code, said = main(capsys, "merge", *sources, "-o", str(tmp_path / "all.jsonl"))
    assert code == 0, said
    header, records = read_results(tmp_path / "all.jsonl")
    assert header["partial"] is partial and len(records) == 4
    assert [run["partial"] for run in header["merged_from"]] == [not done for done in finished]


def test_nothing_to_resume_is_a_usage_error(tmp_path: Path, capsys) -> None:
    code, said = main(capsys, "run", "--resume", str(tmp_path))
    assert code == 2 and "no results.jsonl there, nothing to resume" in said
