"""The suite's options, declared once for pytest (as --softmax-suite-NAME in any project, and as --NAME in
this checkout) and for `softmax-suite run`; plain data, so that declaring them imports no array library."""

from __future__ import annotations

import argparse
import math
from typing import Any

from softmax_suite.backends.builtin import BUILTIN, FRAMEWORKS, OPT_IN
from softmax_suite.dtypes import DTYPES
from softmax_suite.ops import OPS

PREFIX = "--softmax-suite-"
# calls.DEFAULT_CASE_TIMEOUT, named here as a number: the help is built without importing numpy.
DEFAULT_CASE_TIMEOUT_TEXT = "600"


def seconds(text: str) -> float:
    """--case-timeout's value: a number of seconds >= 0 (0: no limit)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds >= 0 (0: no limit)")
    return value


def backend_help(names: str) -> str:
    """--backend's help, naming the backends as names says."""
    return (f"backends, comma-separated: {names}; FRAMEWORK:package.module:attr for your own function or "
            f"object on a framework's arrays (FRAMEWORK: {', '.join(FRAMEWORKS)}); package.module:attr on "
            "numpy arrays; array-api:<module> (default: every built-in and plugin backend but "
            f"{', '.join(OPT_IN)}, asked by name only)")


# (flag, keyword arguments) for argparse and pytest's parser alike. No scan of the installed
# plugins for a help text (the CLI's own help does it: runner.cli.build_parser).
SELECTION: tuple[tuple[str, dict], ...] = (
    ("--backend", {"action": "append", "metavar": "NAMES",
                   "help": backend_help(f"{', '.join(BUILTIN)} or an installed plugin's name "
                                        "(softmax-suite backends lists them)")}),
    ("--device", {"action": "append", "metavar": "NAMES",
                  "help": "devices, comma-separated: cpu, cuda, mps, gpu, tpu (default: all)"}),
    ("--dtype", {"action": "append", "metavar": "NAMES",
                 "help": f"dtypes, comma-separated: {', '.join(DTYPES)} (default: all; the float8 "
                         "ones where a backend declares them, on the cases that list them)"}),
    ("--op", {"action": "append", "metavar": "NAMES",
              "help": f"ops, comma-separated: {', '.join(OPS)} (default: all)"}),
    ("--cotangent", {"action": "append", "metavar": "NAMES",
                     "help": "cotangent kinds of the VJP cases, comma-separated (default: every kind a case "
                             "lists; docs/cases.md names them)"}),
    ("--case", {"action": "append", "metavar": "GLOBS",
                "help": "case-name globs, comma-separated (default: every case but slow ones)"}),
    ("--slow", {"action": "store_true", "default": False,
                "help": "include slow cases (rows of 2^22 elements)"}),
)

FAULTS: tuple[tuple[str, dict], ...] = (
    ("--case-timeout", {"type": seconds, "default": None, "metavar": "SECONDS",
                        "help": "the longest one backend call of a case may take; past it the case is an "
                                f"error 'timeout' and the run goes on (default: {DEFAULT_CASE_TIMEOUT_TEXT}; "
                                "0: no limit). In the suite's process Python code is stopped at the limit "
                                "and C code when it returns; under --isolate the worker process is killed"}),
    ("--isolate", {"action": "store_true", "default": False,
                   "help": "run each backend in a worker process of its own, started afresh after a crash "
                           "(segfault, abort, exit), which then costs only its case; no throughput (a "
                           "call timed through a pipe would time the pipe)"}),
)

# pytest's only: `softmax-suite run` sets these itself.
SESSION: tuple[tuple[str, dict], ...] = (
    ("--results", {"metavar": "PATH", "default": None,
                   "help": "write one JSON line per result to PATH as results are produced"}),
    ("--resume", {"action": "store_true", "default": False,
                  "help": "with --results: continue the partial file there (a run killed or interrupted): "
                          "keep its results, run only the items it lacks, refuse a different selection"}),
    ("--earlier-results", {"metavar": "PATH", "default": None,
                           "help": "the results file of an earlier pass with the same selection "
                                   "(softmax-suite run gives its throughput pass the accuracy pass's): "
                                   "the stale known-deviations report judges its results and this run's "
                                   "together"}),
    ("--oracle-cache", {"metavar": "DIR", "default": None,
                        "help": "keep exact references in DIR for later runs and other workers ('off': in "
                                "memory only; default: $SOFTMAX_SUITE_ORACLE_CACHE or "
                                "~/.cache/softmax-suite/oracle)"}),
    ("--sweep", {"default": "quick", "metavar": "NAME",
                 "help": "throughput shapes: quick or full (default: quick: rows of 2^12 and 2^20 and a "
                         "4096 x 256 batch; full: rows of 2^10 .. 2^24 and batches of 4096 x 128 .. 32768)"}),
    ("--baseline", {"metavar": "FILE", "default": None,
                    "help": "fail an item whose result regressed against this baseline (softmax-suite "
                            "baseline save); rules from [tool.softmax-suite.gate]"}),
    ("--suite-config", {"metavar": "PATH", "default": None,
                        "help": "pyproject.toml holding [tool.softmax-suite] (default: ./pyproject.toml)"}),
)

PYTEST_OPTIONS = (*SELECTION, *FAULTS, *SESSION)


def dest(flag: str) -> str:
    """Where pytest keeps an option's value, whichever of its two spellings was given."""
    return "softmax_suite_" + flag.removeprefix("--").replace("-", "_")


def prefixed(flag: str) -> str:
    """The spelling of --NAME in any project: --softmax-suite-NAME."""
    return PREFIX + flag.removeprefix("--")


def add_options(parser: Any, short: bool) -> None:
    """The suite's pytest options, one group: --softmax-suite-NAME (short False), or this checkout's
    --NAME for the same values (short True)."""
    group = parser.getgroup("softmax-suite", "softmax-suite (the catalogue runs when one of these is given)")
    for flag, kwargs in PYTEST_OPTIONS:
        group.addoption(flag if short else prefixed(flag), dest=dest(flag), **kwargs)


def value(config: Any, flag: str) -> Any:
    """The option's value in a pytest session."""
    return config.getoption(dest(flag))


def spelled(config: Any, flag: str) -> str:
    """The flag as this session spells the suite's options: --softmax-suite-NAME where the command line
    uses that spelling, else --NAME."""
    return prefixed(flag) if given([str(arg) for arg in config.invocation_params.args]) else flag


def any_project(args: list[str]) -> list[str]:
    """Command-line arguments with the suite's --NAME (this checkout's spelling) made --softmax-suite-NAME,
    which any project's pytest takes; every other argument as it is."""
    short = {flag for flag, _ in PYTEST_OPTIONS}
    spelled = []
    for arg in args:
        flag, equals, rest = arg.partition("=")
        spelled.append(prefixed(flag) + equals + rest if flag in short else arg)
    return spelled


def given(args: list[str]) -> list[str]:
    """The --softmax-suite-NAME options among command-line arguments."""
    return [arg.partition("=")[0] for arg in args if isinstance(arg, str) and arg.startswith(PREFIX)]
