"""The `softmax-suite` command: run the suite, list the backends and the cases, manage the oracle cache.

`run` is pytest over the suites package with the same selection options: accuracy and
invariants in parallel into OUT/results.jsonl, then throughput in one process (pytest-benchmark
times nothing under pytest-xdist) into OUT/throughput.jsonl and pytest-benchmark's
OUT/benchmark.json, and the HTML report of both in OUT/report.html; exit status 0 when nothing
unexpected failed, 1 when something did (or regressed against --baseline), 2 on usage errors.
`run --resume DIR` continues a run that was killed or interrupted (softmax_suite.runner.resume).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import signal
import subprocess
import sys
import warnings
from dataclasses import replace
from pathlib import Path

import pytest

from softmax_suite import suites as suites_package
from softmax_suite.backends.builtin import OPT_IN
from softmax_suite.backends.calls import DEFAULT_CASE_TIMEOUT
from softmax_suite.backends.isolation import Isolated
from softmax_suite.backends.registry import backend_names, check_names, load
from softmax_suite.ops import is_vjp
from softmax_suite.oracle import store
from softmax_suite.protocol import DTYPES, OPS, STANDARD_DTYPES, Backend
from softmax_suite.reports import baseline as baseline_io
from softmax_suite.reports import gate as gate_rules
from softmax_suite.reports import html
from softmax_suite.reports.results import ResultsFileError, capabilities_of, read_results
from softmax_suite.reports.verdict import format_verdict
from softmax_suite.runner import reproduce, resume
from softmax_suite.runner.config import ConfigError, load_settings
from softmax_suite.runner.environment import COMMAND_VARIABLE
from softmax_suite.runner.options import (
    DEFAULT_CASE_TIMEOUT_TEXT,
    FAULTS,
    SELECTION,
    any_project,
    backend_help,
)
from softmax_suite.runner.selection import dtype_names, no_match, split, suggestion
from softmax_suite.suites import corpus
from softmax_suite.suites.cases import CATALOGUE, select_cases
from softmax_suite.suites.cotangents import COTANGENTS
from softmax_suite.suites.hunt import search as hunting
from softmax_suite.suites.throughput import SWEEPS

# The pytest modules of the checks, wherever the package is installed.
SUITES_DIR = Path(suites_package.__file__).resolve().parent
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
DEFAULT_OUT = "softmax-suite-out"
STEP_WORDS = {"run": "to run", "resume": "to continue", "done": "complete"}
# Named, so that a run needs no entry-point plugin loading (PYTEST_DISABLE_PLUGIN_AUTOLOAD).
PLUGINS = ("-p", "softmax_suite.runner.entry", "-p", "softmax_suite.runner.plugin")
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a Ctrl-C
CHILD_GRACE_S = 5.0  # for a pass in its own process to stop after a Ctrl-C or SIGTERM, before SIGKILL


def throughput_sweep(text: str) -> str:
    """--throughput's value: a sweep's name or off. Not argparse's choices=, whose message names no
    closest match."""
    valid = [*SWEEPS, "off"]
    if text not in valid:
        raise argparse.ArgumentTypeError(no_match("throughput sweep", [text], valid))
    return text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="softmax-suite",
        description="Accuracy of softmax, log_softmax and logsumexp backends against an exact oracle.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="run the suite and write OUT/results.jsonl",
                              description="Run the suite over the selected backends (default: every "
                                          "installed one) and write OUT/results.jsonl.")
    for flag, kwargs in (*SELECTION, *FAULTS):
        if flag == "--backend":  # the command's own help names the installed plugins too
            kwargs = {**kwargs, "help": backend_help(f"{', '.join(backend_names())} (built-in and "
                                                     "installed plugins)")}
        run.add_argument(flag, **kwargs)
    run.add_argument("--out", default=DEFAULT_OUT, metavar="DIR",
                     help=f"output folder (default: {DEFAULT_OUT})")
    run.add_argument("--resume", metavar="DIR", default=None,
                     help="continue the run in DIR that was killed or interrupted: keep the results its "
                          "files hold and run only the rest, with the recorded selection when none is "
                          "given (a different one is refused)")
    workers = run.add_mutually_exclusive_group()
    workers.add_argument("-n", "--workers", default="auto", metavar="N",
                         help="pytest-xdist worker processes: a number, 'auto' (default: one per CPU) "
                              "or 0 for one process; without pytest-xdist the run is serial")
    workers.add_argument("--serial", dest="workers", action="store_const", const="0",
                         help="run in one process (the same as -n 0); the oracle's progress bar "
                              "(SOFTMAX_SUITE_PROGRESS) is drawn only in a serial run")
    run.add_argument("--oracle-cache", metavar="DIR", default=None,
                     help="oracle cache folder ('off': none; default: $SOFTMAX_SUITE_ORACLE_CACHE or "
                          "~/.cache/softmax-suite/oracle)")
    run.add_argument("--throughput", type=throughput_sweep, default="quick", metavar="SWEEP",
                     help="the throughput sweep after the accuracy run: quick, full or off (default: "
                          "quick; full: rows of 2^10 .. 2^24 and batches of 4096 x 128 .. 32768; off: none)")
    run.add_argument("--baseline", metavar="FILE", default=None,
                     help="gate the run's results against this baseline (exit 1 on a regression)")
    run.add_argument("pytest_args", nargs="*", metavar="-- PYTEST_ARGS",
                     help="further arguments for pytest, after --")

    backends = commands.add_parser("backends", help="list backends: version, devices, dtypes, or why not")
    backends.add_argument("--backend", action="append", metavar="NAMES",
                          help="also describe these (package.module:attr)")

    cache_parser = commands.add_parser("cache", help="the oracle cache: where, how big, its limit "
                                                     "($SOFTMAX_SUITE_ORACLE_CACHE_LIMIT); or empty it")
    cache_parser.add_argument("action", choices=("info", "clear"))
    cache_parser.add_argument("--oracle-cache", metavar="DIR", default=None,
                              help="the cache folder (default as for run)")

    baseline = commands.add_parser("baseline", help="save the baseline of results files")
    baseline.add_argument("action", choices=("save",))
    baseline.add_argument("results", nargs="+", metavar="RESULTS", help="results files (.jsonl)")
    baseline.add_argument("-o", "--output", required=True, metavar="FILE",
                          help="the baseline to write (JSON)")

    gate = commands.add_parser("gate", help="compare results with a baseline: exit 1 on a regression")
    gate.add_argument("results", nargs="+", metavar="RESULTS", help="results files (.jsonl)")
    gate.add_argument("--baseline", required=True, metavar="FILE",
                      help="a baseline from `baseline save`")
    gate.add_argument("--config", metavar="PATH", default=None,
                      help="pyproject.toml with [tool.softmax-suite.gate] (default: ./pyproject.toml)")

    report = commands.add_parser("report", help="render results files as one offline HTML report")
    report.add_argument("results", nargs="+", metavar="RESULTS", help="results files (.jsonl)")
    report.add_argument("-o", "--output", default="report.html", metavar="FILE",
                        help="the HTML file to write (default: report.html)")
    report.add_argument("--baseline", metavar="FILE", default=None,
                        help="also show the deltas against this baseline (as `gate` judges them; the "
                             "exit status stays 0: the verdict is `gate`'s)")
    report.add_argument("--config", metavar="PATH", default=None,
                        help="pyproject.toml with [tool.softmax-suite.gate] (default: ./pyproject.toml)")

    merge = commands.add_parser("merge", help="merge results files of several hosts into one")
    merge.add_argument("results", nargs="+", metavar="RESULTS", help="results files (.jsonl)")
    merge.add_argument("-o", "--output", required=True, metavar="FILE", help="the merged results file")

    cases = commands.add_parser("cases", help="list the case catalogue")
    cases.add_argument("--case", action="append", metavar="GLOBS", help="comma-separated globs")
    cases.add_argument("--dtype", metavar="NAME", help="only cases that apply to this dtype")

    hunt = commands.add_parser(
        "hunt", help="search for the logits a backend gets most wrong; save them to the corpus",
        description="An evolutionary search over rows of logits for the largest error relative to the "
                    "budget (a semantic difference ranks above any finite error), then the worst rows "
                    "shrunk and saved to the corpus, where the catalogue finds them as 'found' cases. "
                    "The same --seed and --evaluations reproduce a hunt exactly. Exit status 0 when "
                    "the hunt ran, 1 when a saved case fails its budget, 2 on usage errors.")
    hunt.add_argument("--backend", required=True, metavar="NAME",
                      help="one backend: a built-in name or package.module:attr")
    hunt.add_argument("--op", required=True, metavar="NAME", help=f"one of {', '.join(OPS)}")
    hunt.add_argument("--dtype", required=True, metavar="NAME", help=f"one of {', '.join(DTYPES)}")
    hunt.add_argument("--cotangent", metavar="KIND", default=None,
                      help="VJPs: the cotangent kind, built for each row as the catalogue builds it "
                           f"(default: {hunting.DEFAULT_COTANGENT})")
    hunt.add_argument("--time", metavar="DURATION", default=None,
                      help="stop at the first generation boundary after this long: 60, 60s, 2m, 1h "
                           f"(default: {hunting.DEFAULT_SECONDS:g}s unless --evaluations is given); "
                           "shrinking the finds comes after")
    hunt.add_argument("--evaluations", metavar="N", type=int, default=None,
                      help="stop at the first generation boundary after N rows (inputs of a loss op) were "
                           "scored")
    hunt.add_argument("--seed", metavar="N", type=int, default=hunting.DEFAULT_SEED,
                      help=f"the search's seed (default: {hunting.DEFAULT_SEED})")
    hunt.add_argument("--corpus", metavar="FILE", default=None,
                      help=f"merge the finds into FILE (default: ${corpus.ENVIRONMENT_VARIABLE} when it "
                           f"names a file, else ./{corpus.DEFAULT_FILE}, which `run` in this folder reads)")
    hunt.add_argument("--keep", metavar="N", type=int, default=3,
                      help="how many of the worst distinct rows to shrink and save (default: 3)")
    hunt.add_argument("--max-length", metavar="N", type=int, default=None,
                      help=f"the longest row to try (default: {hunting.MAX_LENGTH}; for the loss ops "
                           f"{hunting.LOSS_MAX_LENGTH} classes)")
    hunt.add_argument("--device", metavar="NAME", default=None,
                      help="the backend's device (default: its first)")
    hunt.add_argument("--no-attention", action="store_true",
                      help="hunt plain rows only: no search over scale and mask, even where the backend "
                           "lists them in its options (by default a row may carry a scale and a mask)")
    hunt.add_argument("--no-loss-options", action="store_true",
                      help="the loss ops: hunt logits, targets and reductions only, no ignore_index, "
                           "label_smoothing or weight even where the backend lists them in its options")
    faults = dict(FAULTS)  # run's type and default, with the hunt's own help
    hunt.add_argument("--case-timeout", **{**faults["--case-timeout"], "help":
                      "the longest one backend call may take; past it the call failed, its rows are "
                      "scored again one by one and a row that fails alone scores as a failed call "
                      f"(default: {DEFAULT_CASE_TIMEOUT_TEXT}; 0: no limit). In this process Python code "
                      "is stopped at the limit and C code when it returns; under --isolate the worker "
                      "process is killed"})
    hunt.add_argument("--isolate", **{**faults["--isolate"], "help":
                      "load and run the backend in a worker process of its own, started afresh after a "
                      "crash (segfault, abort, exit), which then costs only that call"})
    return parser


def _xdist_installed() -> bool:
    # Found, not imported: an import here would keep pytest from rewriting the plugin's asserts.
    try:
        return importlib.util.find_spec("xdist") is not None
    except ImportError:
        return False


def run_command(args: argparse.Namespace) -> int:
    steps = None
    if args.resume:
        try:
            if args.out not in (DEFAULT_OUT, args.resume):
                raise ValueError(f"--resume {args.resume} continues the run in that folder; --out {args.out} "
                                 "names another")
            steps = resume.plan(Path(args.resume), args)
        except ValueError as error:
            print(f"softmax-suite: {error}", file=sys.stderr)
            return EXIT_USAGE
        args.out = args.resume
        print(f"softmax-suite: resuming {args.resume}: accuracy {STEP_WORDS[steps.accuracy]}, throughput "
              f"{STEP_WORDS[steps.throughput]}")
    if args.baseline:  # a missing or broken baseline is said before the run, not after it
        try:
            _load_gate(args.baseline, None)
        except InputError as error:
            print(f"softmax-suite: {error}", file=sys.stderr)
            return EXIT_USAGE
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        print(f"softmax-suite: cannot create output folder {out}: {error.strerror}", file=sys.stderr)
        return EXIT_USAGE
    # Each pass draws one progress line (runner.terminal), -- -v or not: no letter, line or traceback
    # per item (the verdict at the end names the unexpected results, the report says why); pytest
    # lists only the errors that leave no result (-rE).
    selection = [str(SUITES_DIR), *PLUGINS, "-p", "softmax_suite.runner.terminal",
                 "--no-header", "-o", "verbosity_test_cases=-1", "-o", "console_output_style=classic",
                 "--tb=no", "-rE"]
    for flag, options in SELECTION:
        value = getattr(args, flag.removeprefix("--"))
        if options["action"] == "append":
            selection += [part for item in value or [] for part in (flag, item)]
        elif value:
            selection.append(flag)
    if args.oracle_cache:
        selection += ["--oracle-cache", args.oracle_cache]
    results = out / "results.jsonl"
    if args.case_timeout is not None:
        selection += ["--case-timeout", repr(args.case_timeout)]
    # pytest-benchmark times nothing in this pass (its items are the throughput pass's); not
    # loaded, it does not warn once per xdist process that xdist disables it.
    accuracy = [*selection, "-p", "no:benchmark", "-m", "not throughput", "--results", str(results),
                *(["--isolate"] if args.isolate else []), *(["--resume"] if steps else [])]
    if args.workers != "0":
        if _xdist_installed():
            # The plugin's scheduler keeps each case and dtype on one worker (runner.scheduling).
            accuracy += ["-n", args.workers]
        else:
            print("softmax-suite: pytest-xdist is not installed: running in one process", file=sys.stderr)
    done = steps is not None and steps.accuracy == "done"
    # Spelled as any project's pytest takes them (--softmax-suite-backend): the run needs no conftest.
    codes = [pytest.ExitCode.OK if done else pytest.main(any_project([*accuracy, *args.pytest_args]))]
    written = [results]
    stopped = (pytest.ExitCode.USAGE_ERROR, pytest.ExitCode.INTERRUPTED)
    if args.isolate and args.throughput != "off":
        print("softmax-suite: no throughput pass under --isolate: a call timed through the worker process's "
              "pipe times the copies, not the backend; run without --isolate to time it", file=sys.stderr)
        args.throughput = "off"
    timings = out / "throughput.jsonl"
    if args.throughput != "off" and codes[0] not in stopped and (steps is None or steps.throughput != "done"):
        # A process of its own: timings free of what the accuracy run left (memory, threads).
        command = [sys.executable, "-m", "pytest", *selection, "-m", "throughput", "-p", "no:xdist",
                   "--sweep", args.throughput, "--results", str(timings),
                   *(["--earlier-results", str(results)] if results.exists() else []),
                   "--benchmark-json", str(out / "benchmark.json"),
                   "--benchmark-columns", "min,median,max,rounds", "--benchmark-sort", "fullname",
                   *(["--resume"] if steps else []), *args.pytest_args]
        # Not a worker of any xdist run this command may itself be inside: pytest-benchmark
        # reads PYTEST_XDIST_WORKER and would time nothing.
        environment = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_XDIST")}
        environment[COMMAND_VARIABLE] = json.dumps([Path(sys.argv[0]).name, *sys.argv[1:]])
        returned = _run_child(any_project(command), environment)
        known = {code.value for code in pytest.ExitCode}
        codes.append(pytest.ExitCode(returned) if returned in known else pytest.ExitCode.INTERNAL_ERROR)
        if args.baseline and timings.exists():
            written += _confirm_slower(timings, args, environment)
    if args.throughput != "off" and codes[0] not in stopped:
        written += [timings, out / "benchmark.json"]
    if steps is None and all(code == pytest.ExitCode.NO_TESTS_COLLECTED for code in codes):
        print("softmax-suite: the selection matched nothing to run", file=sys.stderr)
        return EXIT_USAGE
    if pytest.ExitCode.USAGE_ERROR in codes:
        return EXIT_USAGE
    if pytest.ExitCode.INTERRUPTED in codes:
        return EXIT_INTERRUPTED
    ran_clean = (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED)
    code = EXIT_OK if all(code in ran_clean for code in codes) else EXIT_FAILED
    finished = [path for path in written if path.suffix == ".jsonl" and path.exists()]
    try:
        read = _read(finished)  # every pass's results, a resumed run's kept ones too
    except InputError:
        read = None  # said by _gate_and_report, which reads the files again
    if read is not None:
        print(format_verdict(read[1], capabilities=capabilities_of(read[0])))
    print(f"softmax-suite: results in {', '.join(map(str, written))}")
    if steps is not None and _failed_before(finished):
        code = EXIT_FAILED  # a failure recorded before the resume, which this run did not repeat
    return max(code, _gate_and_report(finished, args.baseline, None, out / "report.html", read))


def _terminated(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def _run_child(command: list[str], environment: dict[str, str], **streams: int) -> int:
    """A pass in a process of its own, and its exit status. When this command is stopped meanwhile (a
    Ctrl-C, or a SIGTERM, which Python's default would answer by dying at once) the child is ended
    too, never left timing on: given CHILD_GRACE_S to stop on its own (a terminal's Ctrl-C reached
    it as well), then SIGTERM, then SIGKILL. The interruption then goes on up (main: status 130;
    a SIGTERM: 143)."""
    process = subprocess.Popen(command, env=environment, **streams)
    previous = signal.signal(signal.SIGTERM, _terminated)
    try:
        return process.wait()
    except KeyboardInterrupt:
        _waited(process, CHILD_GRACE_S)
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
        if process.poll() is None:
            process.terminate()
            if not _waited(process, CHILD_GRACE_S):
                process.kill()
                process.wait()


def _waited(process: subprocess.Popen, seconds: float) -> bool:
    """Whether the process ended within seconds."""
    try:
        process.wait(seconds)
    except subprocess.TimeoutExpired:
        return False
    return True


def _confirm_slower(timings: Path, args: argparse.Namespace, environment: dict) -> list[Path]:
    """Time again, in a process of its own, every op the gate would fail as slower than the
    baseline (a busy machine slows a spell of benchmarks; a slower op stays slower): the gate then
    takes the better of the two measurements of each. The second file, or none."""
    again = timings.with_name("throughput-again.jsonl")
    again.unlink(missing_ok=True)  # an earlier run's second timing is not this run's
    before, rules = _load_gate(args.baseline, None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a partial file is said by _gate_and_report
        try:
            _, records = read_results(timings)
        except ResultsFileError:
            return []
    current, _ = baseline_io.entries(records)
    slower = sorted({gate_rules.group_of(f.key) for f in gate_rules.gate(before, current, rules)
                     if f.severity == gate_rules.FAIL and f.key.startswith("throughput/")})
    if not slower:
        return []
    print(f"softmax-suite: {len(slower)} op(s) slower than the baseline; timing them again before the gate "
          "decides: " + ", ".join(slower))
    # A key names a backend by its own name; the run loads it by its spec.
    specs = {record["backend"]: record.get("backend_spec") or record["backend"] for record in records}
    groups = [key.split("/")[1:5] for key in slower]
    groups = [[specs.get(group[0], group[0]), *group[1:]] for group in groups]
    chosen = [part for index, flag in enumerate(("--backend", "--device", "--dtype", "--op"))
              for part in (flag, ",".join(sorted({group[index] for group in groups})))]
    command = [sys.executable, "-m", "pytest", str(SUITES_DIR), *PLUGINS, "-q",
               *chosen, "-m", "throughput", "-p", "no:xdist", "--sweep", args.throughput,
               "--results", str(again), *args.pytest_args]
    _run_child(any_project(command), environment, stdout=subprocess.DEVNULL)
    return [again] if again.exists() else []


def _failed_before(paths: list[Path]) -> bool:
    """Whether the results files hold a failure or an error."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # reported by _gate_and_report, which reads them next
        try:
            _, records = baseline_io.read_many(paths)
        except baseline_io.BaselineError:
            return False  # reported by _gate_and_report
    return any(record["status"] in ("fail", "error") for record in records)


class InputError(Exception):
    """A results file, baseline or configuration that cannot be used: exit 2 with the message."""


def _read(paths: list) -> tuple[list[dict], list[dict]]:
    """Headers and records of the results files; a truncated last line is one warning line."""
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            read = baseline_io.read_many(paths)
    except baseline_io.BaselineError as error:
        raise InputError(str(error)) from None
    for warning in caught:
        print(f"softmax-suite: warning: {warning.message}", file=sys.stderr)
    return read


def _settings(config: str | None) -> Path:
    """The pyproject.toml that --config names (which must exist), else ./pyproject.toml if any."""
    if config is not None and not Path(config).is_file():
        raise InputError(f"--config {config}: no such file")
    return Path(config or "pyproject.toml")


def _load_gate(baseline_path: str, config: str | None) -> tuple[dict, gate_rules.GateRules]:
    """The baseline's entries and the gate's rules, read before any results file."""
    try:
        return baseline_io.load(baseline_path)["entries"], load_settings(_settings(config)).gate
    except (ConfigError, baseline_io.BaselineError) as error:
        raise InputError(str(error)) from None


def _findings(records: list[dict], before: dict, rules: gate_rules.GateRules, partial: bool,
              capabilities: list[dict]) -> tuple[list[gate_rules.Finding], int]:
    """The gate's findings for these records against the baseline's entries (what the runs could not
    ask named by their capability tables), and how many results both hold."""
    current, conflicts = baseline_io.entries(records)
    if conflicts:
        raise InputError("the results disagree on the same key:\n  " + "\n  ".join(conflicts))
    return (gate_rules.gate(before, current, rules, partial, capabilities),
            len(set(before) & set(current)))


def _print_findings(findings: list[gate_rules.Finding], compared: int, partial: bool) -> int:
    """Print the gate's table (and the Markdown summary into $GITHUB_STEP_SUMMARY); its exit code."""
    print(gate_rules.format_table(findings, compared))
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        with open(summary, "a", encoding="utf-8") as file:
            file.write(gate_rules.format_markdown(findings, compared, partial))
    return EXIT_FAILED if any(f.severity == gate_rules.FAIL for f in findings) else EXIT_OK


def _gate_and_report(paths: list, baseline: str | None, config: str | None, report: Path | None,
                     read: tuple[list[dict], list[dict]] | None = None) -> int:
    """Gate the results files against the baseline (when given) and write the report (when
    asked); exit 1 on a regression, 2 on a file that cannot be used. Partial results (a run that
    did not finish) are said so, and judged on what they hold. read: the files' headers and
    records where the caller has read them already (a default run's take seconds to read)."""
    try:
        gate_input = _load_gate(baseline, config) if baseline else None
        headers, records = read if read is not None else _read(paths)
        partial = baseline_io.partial_files(headers)
        findings, compared = (_findings(records, *gate_input, bool(partial), capabilities_of(headers))
                              if gate_input else (None, 0))
    except InputError as error:
        print(f"softmax-suite: {error}", file=sys.stderr)
        return EXIT_USAGE
    if partial:
        judged = "; the gate judges" if findings is not None else ", with"
        print(f"softmax-suite: PARTIAL results: the run of {', '.join(partial)} did not finish (killed or "
              f"interrupted){judged} the {len(records)} results it holds; `softmax-suite run --resume DIR` "
              "runs the rest")
    code = _print_findings(findings, compared, bool(partial)) if findings is not None else EXIT_OK
    if report is not None:
        try:
            html.write_report(headers, records, report, findings, reproducer=reproduce.snippet)
        except OSError as error:
            print(f"softmax-suite: cannot write the report {report}: {error.strerror}", file=sys.stderr)
            return EXIT_USAGE
        print(f"softmax-suite: report in {report}")
    return code


def gate_command(args: argparse.Namespace) -> int:
    return _gate_and_report(args.results, args.baseline, args.config, None)


def report_command(args: argparse.Namespace) -> int:
    """Exit 0 when the report is written, 2 when it cannot be. A baseline's comparison is shown in
    the report; the verdict on it is `gate`'s (and `run --baseline`'s), and an exit 1 here would read
    as a report that was not made."""
    code = _gate_and_report(args.results, args.baseline, args.config, Path(args.output))
    if code == EXIT_FAILED:
        print("softmax-suite: the report shows the regressions against the baseline; `softmax-suite gate` "
              "is the verdict that fails on them")
    return EXIT_USAGE if code == EXIT_USAGE else EXIT_OK


def baseline_command(args: argparse.Namespace) -> int:
    try:
        saved = baseline_io.save(args.results, args.output)
    except (baseline_io.BaselineError, OSError) as error:
        print(f"softmax-suite: {error}", file=sys.stderr)
        return EXIT_USAGE
    print(f"softmax-suite: baseline of {len(saved['entries'])} results in {args.output}")
    return EXIT_OK


def merge_command(args: argparse.Namespace) -> int:
    try:
        count, conflicts = baseline_io.merge(args.results, args.output)
    except (baseline_io.BaselineError, OSError) as error:
        print(f"softmax-suite: {error}", file=sys.stderr)
        return EXIT_USAGE
    if conflicts:
        print("softmax-suite: conflicts (the same result with different values; nothing written):\n  "
              + "\n  ".join(conflicts), file=sys.stderr)
        return EXIT_FAILED
    print(f"softmax-suite: {count} results from {len(args.results)} files in {args.output}")
    return EXIT_OK


def backends_command(args: argparse.Namespace) -> int:
    known = backend_names()
    names = known + [n for n in split(args.backend) if n not in known]
    try:
        check_names(names)
    except ValueError as error:
        print(f"softmax-suite: {error}", file=sys.stderr)
        return EXIT_USAGE
    for name in names:
        try:
            backend = load(name)
        except Exception as error:  # a user's module:attr that does not load is reported, not raised
            print(f"{name}: cannot load: {error}")
            continue
        if not isinstance(backend, Backend):
            print(f"{name}: unavailable: {backend.reason}")
            continue
        print(f"{backend.name} {backend.version}" + (f" ({OPT_IN[name]})" if name in OPT_IN else ""))
        print(f"  devices: {', '.join(backend.devices) or 'none'}")
        for device, reason in backend.absent_devices.items():
            print(f"  absent:  {device} ({reason})")
        print(f"  dtypes:  {', '.join(backend.dtypes)}")
        print(f"  ops:     {', '.join(op for op in OPS if op in backend.ops)}")
        if backend.options:
            print(f"  options: {', '.join(backend.options)}")
    return EXIT_OK


def cases_command(args: argparse.Namespace) -> int:
    patterns = split(args.case)
    args.dtype = dtype_names([args.dtype])[0] if args.dtype else args.dtype
    if args.dtype and args.dtype not in DTYPES:
        print(f"softmax-suite: unknown dtype {args.dtype!r}: valid are {', '.join(DTYPES)}"
              f"{suggestion(args.dtype, DTYPES)}", file=sys.stderr)
        return EXIT_USAGE
    chosen = [c for c in select_cases(patterns, include_slow=True)
              if not args.dtype or args.dtype in c.dtypes]
    if patterns and not chosen:
        valid = [c.name for c in CATALOGUE if not args.dtype or args.dtype in c.dtypes]
        print(f"softmax-suite: {no_match('case', patterns, valid)}", file=sys.stderr)
        return EXIT_USAGE
    rows = [("case", "shape", "axis", "layout", "dtypes", "tags", "description")]
    for case in chosen:
        shape = case.build(case.dtypes[0]).shape
        dtypes = "all" if case.dtypes == DTYPES else "all but float8" if case.dtypes == STANDARD_DTYPES \
            else ",".join(case.dtypes)
        rows.append((case.name, "x".join(map(str, shape)), str(case.axis), case.layout, dtypes,
                     ",".join(sorted(case.tags)) or "-", case.description))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)) + "  " + row[-1])
    print(f"\n{len(chosen)} of {len(CATALOGUE)} cases")
    return EXIT_OK


def _hunt_plan(args: argparse.Namespace) -> hunting.Plan:
    """The hunt's plan from its options (ValueError naming a bad one and the valid values)."""
    args.dtype = dtype_names([args.dtype])[0]
    for kind, value, valid in (("op", args.op, OPS), ("dtype", args.dtype, DTYPES)):
        if value not in valid:
            raise ValueError(f"unknown {kind} {value!r}: valid are {', '.join(valid)}"
                             f"{suggestion(value, valid)}")
    vjp = is_vjp(args.op)
    if args.cotangent is not None and not vjp:
        raise ValueError(f"--cotangent applies to the VJPs only, not to {args.op}")
    kind = args.cotangent or (hunting.DEFAULT_COTANGENT if vjp else None)
    if kind is not None and kind not in COTANGENTS:
        raise ValueError(f"unknown cotangent kind {kind!r}: valid are {', '.join(COTANGENTS)}"
                         f"{suggestion(kind, COTANGENTS)}")
    for flag, value in (("--evaluations", args.evaluations), ("--keep", args.keep),
                        ("--max-length", args.max_length)):
        if value is not None and value < 1:
            raise ValueError(f"{flag} {value}: must be at least 1")
    seconds = hunting.parse_duration(args.time) if args.time is not None else None
    if seconds is None and args.evaluations is None:
        seconds = hunting.DEFAULT_SECONDS
    if args.seed < 0:
        raise ValueError(f"--seed {args.seed}: must be >= 0")
    plan = hunting.Plan(args.op, args.dtype, kind, args.seed, args.evaluations, seconds,
                        args.max_length, args.keep, attention=not args.no_attention,
                        loss_options=not args.no_loss_options)
    if args.no_loss_options and not plan.loss:
        raise ValueError(f"--no-loss-options applies to the loss ops only, not to {args.op}")
    return plan


def hunt_command(args: argparse.Namespace) -> int:
    limit = DEFAULT_CASE_TIMEOUT if args.case_timeout is None else args.case_timeout
    try:
        plan = _hunt_plan(args)
        check_names([args.backend])
        backend = Isolated.load(args.backend, limit) if args.isolate else load(args.backend)
    except Exception as error:  # a bad option, or a user's module:attr that does not load
        print(f"softmax-suite: {error}", file=sys.stderr)
        return EXIT_USAGE
    if not isinstance(backend, Backend):
        print(f"softmax-suite: backend {args.backend} is unavailable: {backend.reason}", file=sys.stderr)
        return EXIT_USAGE
    device = args.device or backend.devices[0]
    problem = backend.why_unsupported(plan.op, plan.dtype)
    if device not in backend.devices:
        problem = f"no device {device!r} for {args.backend}: valid are {', '.join(backend.devices)}" \
            f"{suggestion(device, backend.devices)}"
    path = corpus.hunt_location(args.corpus)
    try:
        if problem:
            raise ValueError(problem)
        settings = replace(load_settings(Path("pyproject.toml")), case_timeout=limit)
        corpus.check_writable(path)
    except (ValueError, ConfigError, corpus.CorpusError) as error:
        print(f"softmax-suite: {error}", file=sys.stderr)
        return EXIT_USAGE
    unit = "inputs" if plan.loss else "rows"
    limits = " or ".join(filter(None, [plan.seconds and f"{plan.seconds:g} s",
                                       plan.evaluations and f"{plan.evaluations} {unit}"]))
    seed_note = " (the default)" if plan.seed == hunting.DEFAULT_SEED else ""
    question = plan.op + (f" with {plan.cotangent} cotangents" if plan.cotangent else "")
    searched = hunting.attention_options(backend, plan)
    over = f" over rows, {' and '.join(searched)}" if searched else ""
    if plan.loss:
        over = " over logits, targets, " + ", ".join(["reductions", *hunting.loss_options(backend, plan)])
    print(f"hunting {args.backend} {question} in {plan.dtype} on {device}{over} for {limits}, "
          f"seed {plan.seed}{seed_note}", flush=True)
    outcome = hunting.hunt(backend, args.backend, device, settings, plan)
    try:
        added = corpus.merge(path, [found.entry for found in outcome.found])
    except corpus.CorpusError as error:
        print(f"softmax-suite: {error}", file=sys.stderr)
        return EXIT_USAGE
    print(f"scored {outcome.evaluations} {unit} in {outcome.generations} generations, "
          f"{outcome.seconds:.1f} s ({outcome.evaluations / max(outcome.seconds, 1e-9):.0f} {unit}/s); "
          f"shrinking scored {outcome.shrink_evaluations} more")
    if outcome.failed_calls:
        counts = ", ".join(f"{count} {kind}" for kind, count in sorted(outcome.failed_calls.items()))
        why = "an input whose call failed" if plan.loss else \
            "a batch's rows scored again one by one; a row whose own call failed"
        print(f"failed backend calls: {counts} ({why} scored above any error)")
    if outcome.unanswered:
        print(f"the oracle could not answer {outcome.unanswered} inputs (scored as refused, never saved)")
    print(hunting.format_report(outcome))
    plain = "".join(flag for flag, off in ((" --no-attention", not plan.attention),
                                           (" --no-loss-options", not plan.loss_options)) if off)
    print(f"saved {len(added)} new of {len(outcome.found)} cases to {path}; reproduce this hunt with "
          f"--seed {plan.seed} --evaluations {outcome.evaluations}{plain}")
    return EXIT_FAILED if any(found.fails for found in outcome.found) else EXIT_OK


def cache_command(args: argparse.Namespace) -> int:
    folder = store.folder_for(args.oracle_cache)
    if folder is None:
        print("softmax-suite: --oracle-cache off names no folder", file=sys.stderr)
        return EXIT_USAGE
    if args.action == "clear":
        try:
            removed = store.clear(folder)
        except OSError as error:
            print(f"softmax-suite: cannot clear {folder}: {error.strerror}", file=sys.stderr)
            return EXIT_USAGE
        print(f"removed {removed} entries from {folder}")
        return EXIT_OK
    try:
        limit = store.limit()
    except ValueError as error:
        print(f"softmax-suite: {error}", file=sys.stderr)
        return EXIT_USAGE
    described = store.info(folder)
    print(f"folder:  {described['folder']}")
    print(f"entries: {described['entries']}")
    print(f"size:    {described['bytes'] / 1e6:.1f} MB")
    print(f"limit:   {_limit_line(limit, described['bytes'])}")
    print(f"oracle version: {described['oracle_version']}")
    return EXIT_OK


def _limit_line(limit: int | None, size: int) -> str:
    given = os.environ.get(store.LIMIT_VARIABLE)
    source = f"${store.LIMIT_VARIABLE}={given}" if given else f"the default; ${store.LIMIT_VARIABLE} sets it"
    if limit is None:
        return f"none ({source})"
    full = f"{size / limit:.0%} full"
    if size > limit:
        full += f": the next entry written evicts the least recently used down to {store.LOW_WATER:.0%} of it"
    unit, scale = next((unit, scale) for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3), ("B", 1))
                       if limit >= scale or unit == "B")
    return f"{limit / scale:g} {unit}, {full} ({source})"


COMMANDS = {"run": run_command, "backends": backends_command, "cases": cases_command,
            "cache": cache_command, "baseline": baseline_command, "gate": gate_command,
            "merge": merge_command, "report": report_command, "hunt": hunt_command}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return EXIT_USAGE if exit_.code else EXIT_OK
    try:
        return COMMANDS[args.command](args)
    except corpus.CorpusError as error:
        # The catalogue reads the corpus at first use, which any command may be.
        print(f"softmax-suite: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:  # between pytest's passes (each answers its own Ctrl-C) or in a child's
        print("softmax-suite: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
