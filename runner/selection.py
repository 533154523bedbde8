"""The selection options shared by `pytest suites` and `softmax-suite run`, their parsing, and the
message for a name that matches nothing."""

from __future__ import annotations

import difflib

from softmax_suite.backends.registry import BUILTIN
from softmax_suite.formats import DTYPE_ALIASES
from softmax_suite.ops import OP_SYNONYMS
from softmax_suite.protocol import DTYPES, OPS
from softmax_suite.suites.cotangents import COTANGENTS


def backend_help(names: str) -> str:
    """--backend's help, naming the backends as names says."""
    return (f"backends, comma-separated: {names}, array-api:<module> or package.module:attr (default: "
            "every built-in and plugin backend)")


# (flag, keyword arguments) for argparse and pytest's parser alike. No scan of the installed
# plugins for a help text (the CLI's own help does it: runner.cli.build_parser).
SELECTION_OPTIONS: tuple[tuple[str, dict], ...] = (
    ("--backend", {"action": "append", "metavar": "NAMES",
                   "help": backend_help(f"{', '.join(BUILTIN)} or an installed plugin's name "
                                        "(softmax-suite backends lists them)")}),
    ("--device", {"action": "append", "metavar": "NAMES",
                  "help": "devices, comma-separated: cpu, cuda, mps, gpu, tpu (default: all)"}),
    ("--dtype", {"action": "append", "metavar": "NAMES",
                 "help": f"dtypes, comma-separated: {', '.join(DTYPES)} (default: all)"}),
    ("--op", {"action": "append", "metavar": "NAMES",
              "help": f"ops, comma-separated: {', '.join(OPS)} (default: all)"}),
    ("--cotangent", {"action": "append", "metavar": "NAMES",
                     "help": f"cotangent kinds of the VJP cases, comma-separated: {', '.join(COTANGENTS)} "
                             "(default: every kind a case lists)"}),
    ("--case", {"action": "append", "metavar": "GLOBS",
                "help": "case-name globs, comma-separated (default: every case but slow ones)"}),
    ("--slow", {"action": "store_true", "default": False,
                "help": "include slow cases (rows of 2^22 elements)"}),
)


def split(values: list[str] | None) -> list[str]:
    """Repeated, comma-separated option values as one flat list of names."""
    return [part.strip() for value in values or [] for part in value.split(",") if part.strip()]


def suggestion(given: str, valid: list[str] | tuple[str, ...]) -> str:
    """"; did you mean 'x'?" for the valid name another library gives that name, else the valid
    name closest to it, or nothing."""
    named = OP_SYNONYMS.get(given.lower())
    close = [named] if named in valid else difflib.get_close_matches(given, list(valid), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def dtype_names(chosen: list[str]) -> list[str]:
    """The dtypes as given, other libraries' names for them (bf16, fp32, half, ...) made ours."""
    return [DTYPE_ALIASES.get(name.lower(), name) for name in chosen]


def no_match(kind: str, given: list[str], valid: list[str]) -> str:
    """The message for names that match nothing: the valid ones, and the closest to the first."""
    hint = suggestion(given[0], valid) if given else ""
    return f"no {kind} matches {', '.join(map(repr, given))}: valid are {', '.join(valid) or 'none'}{hint}"
