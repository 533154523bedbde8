"""The selection options' values parsed (comma-separated names, other libraries' dtype names), and the
message for a name that matches nothing."""

from __future__ import annotations

import difflib

from softmax_suite.dtypes import DTYPE_ALIASES
from softmax_suite.ops import OP_SYNONYMS


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
