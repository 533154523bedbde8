"""Result files: one JSON object per line, written as results are produced.

The first line is the run header ({"kind": "run", ...}: command, environment, start time);
every other line is one result ({"kind": "result", ...}), and at the end of a run come the
tables derived from them ({"kind": "table", "name": "semantics" or "agreement", "table": ...}).
A line is flushed as soon as it is written, so a run that dies keeps everything it measured;
a truncated last line is skipped with a warning when the file is read.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TextIO

import numpy as np

SCHEMA_VERSION = 1
STATUSES: tuple[str, ...] = ("pass", "fail", "known_failure", "error", "unsupported", "skip")


def jsonable(value: Any) -> Any:
    """Plain JSON types only: numpy scalars and str subclasses (torch's version) become plain
    Python values, and non-finite floats the strings "nan", "inf" and "-inf"."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, str):
        return str(value)
    return value


class ResultsWriter:
    """Writes the header and then one line per result, flushing each line to the OS."""

    def __init__(self, path: str | os.PathLike, header: dict) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file: TextIO = self.path.open("w", encoding="utf-8")
        self._write({"kind": "run", "schema": SCHEMA_VERSION, **header})

    def write(self, record: dict) -> None:
        self._write({"kind": "result", **record})

    def write_table(self, name: str, table: Any) -> None:
        self._write({"kind": "table", "name": name, "table": table})

    def _write(self, obj: dict) -> None:
        self._file.write(json.dumps(jsonable(obj), sort_keys=True, allow_nan=False) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


class ResultsFileError(ValueError):
    """A results file that cannot be read; the message names the file and line."""


def read_results(path: str | os.PathLike) -> tuple[dict, list[dict]]:
    """(header, results) from a results file; the derived tables, where the run wrote them, are
    in header["tables"] by name."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as error:
        raise ResultsFileError(f"cannot read results file {path}: {error.strerror}") from None
    header: dict = {}
    results: list[dict] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as error:
            if number == len(lines):
                warnings.warn(f"{path}:{number}: truncated last line skipped (the run was cut "
                              "short while writing it)", stacklevel=2)
                continue
            raise ResultsFileError(f"{path}:{number}: not a JSON line ({error.msg})") from None
        if obj.get("kind") == "run":
            if obj.get("schema") != SCHEMA_VERSION:
                raise ResultsFileError(
                    f"{path}:{number}: results schema {obj.get('schema')!r}, this softmax-suite "
                    f"reads schema {SCHEMA_VERSION}; re-run the suite to regenerate it")
            header = obj
        elif obj.get("kind") == "result":
            results.append(obj)
        elif obj.get("kind") == "table":
            header.setdefault("tables", {})[obj.get("name")] = obj.get("table")
        else:
            raise ResultsFileError(f"{path}:{number}: a line that is neither a run header nor a "
                                   "result (is this a softmax-suite results file?)")
    return header, results


def status_counts(results: Iterable[dict]) -> dict[str, int]:
    counts = dict.fromkeys(STATUSES, 0)
    for result in results:
        counts[result["status"]] = counts.get(result["status"], 0) + 1
    return counts
