"""Result files: one JSON object per line, written as results are produced.

The first line is the run header ({"kind": "run", ...}: command, environment, start time);
every other line is one result ({"kind": "result", ...}). A finished run ends with the tables
derived from the results ({"kind": "table", "name": "semantics" or "agreement", "table": ...})
and then the end line ({"kind": "end", "finished": time, "results": n, "counts": ...}); a file
without it is partial: its run was killed or interrupted, and it holds every result finished
before. `softmax-suite run --resume` continues such a file, after a {"kind": "resumed"} line.
A line is flushed as soon as it is written, so a run that dies keeps everything it measured;
a truncated last line is skipped with a warning when the file is read.
"""

from __future__ import annotations

import json
import math
import os
import shlex
import tempfile
import time
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from softmax_suite.records import SCHEMA_VERSION, STATUSES, problem

__all__ = ["SCHEMA_VERSION", "STATUSES", "ResultsFileError", "ResultsWriter", "read_results"]

# The lines a resumed run keeps of a partial file: the derived tables are written again at the end.
FINISHED_KINDS = ("run", "resumed", "result")


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


def line(obj: dict) -> str:
    """One line of a results file."""
    return json.dumps(jsonable(obj), sort_keys=True, allow_nan=False) + "\n"


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def end_line(results: list[dict]) -> dict:
    """The last line of a finished run's file, counting every result in it."""
    return {"kind": "end", "finished": now(), "results": len(results), "counts": status_counts(results)}


def make_folder(path: str | os.PathLike) -> None:
    """The folder that will hold the file path, with its parents; a parent that is a file is a
    NotADirectoryError (mkdir alone says "File exists" of it)."""
    folder = Path(path).parent
    for parent in (folder, *folder.parents):
        if parent.exists() and not parent.is_dir():
            raise NotADirectoryError(20, "Not a directory", str(parent))
    folder.mkdir(parents=True, exist_ok=True)


class ResultsWriter:
    """Writes the header and then one line per result, flushing each line to the OS.

    With `resumed` instead of a header it continues the partial file at path: the file is first
    cut back to its header and finished results (a truncated last line dropped), then appended
    to, the `resumed` note written before the first new line."""

    def __init__(self, path: str | os.PathLike, header: dict | None = None, *,
                 resumed: dict | None = None) -> None:
        self.path = Path(path)
        self._pending: list[dict] = []
        if resumed is None:
            make_folder(self.path)
            self._file: TextIO = self.path.open("w", encoding="utf-8")
            self._write({"kind": "run", "schema": SCHEMA_VERSION, **(header or {})})
            return
        _keep_finished_lines(self.path)
        self._file = self.path.open("a", encoding="utf-8")
        # Written with the first new line: a resume refused after this point leaves the file as it was.
        self._pending.append({"kind": "resumed", "at": now(), **resumed})

    def write(self, record: dict) -> None:
        self._write({"kind": "result", **record})

    def write_table(self, name: str, table: Any) -> None:
        self._write({"kind": "table", "name": name, "table": table})

    def finish(self, results: list[dict]) -> None:
        """Mark the file complete: the end line, counting every result in it."""
        self._write(end_line(results))

    def _write(self, obj: dict) -> None:
        wrong = problem(jsonable(obj))
        if wrong is not None:  # the suite's own mistake: no file may hold a line it cannot read
            raise ValueError(f"not written to {self.path}: {wrong} (softmax_suite.records)")
        for pending in self._pending:
            self._file.write(line(pending))
        self._pending.clear()
        self._file.write(line(obj))
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def _keep_finished_lines(path: Path) -> None:
    """Cut a partial file back to its header, resumed notes and results, atomically."""
    kept = []
    for text in path.read_text(encoding="utf-8").splitlines():
        try:
            obj = json.loads(text)
        except json.JSONDecodeError:
            continue  # the truncated last line: read_results has refused any other
        if isinstance(obj, dict) and obj.get("kind") in FINISHED_KINDS:
            kept.append(text + "\n")
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(handle, "w", encoding="utf-8") as file:
        file.writelines(kept)
    os.replace(temporary, path)


class ResultsFileError(ValueError):
    """A results file that cannot be read; the message names the file and line."""


def read_results(path: str | os.PathLike) -> tuple[dict, list[dict]]:
    """(header, results) from a results file. header["partial"] is True when the file lacks the
    end line of a finished run; header["resumed"] lists the runs that continued it; the derived
    tables, where the run wrote them, are in header["tables"] by name."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        why = error.strerror if isinstance(error, OSError) else "not UTF-8 text"
        raise ResultsFileError(f"cannot read results file {path}: {why}") from None
    if lines and lines[0].lstrip().lower().startswith(("<!doctype html", "<html")):
        raise ResultsFileError(f"{path} is an HTML report, not a results file: give the results.jsonl "
                               "(and throughput.jsonl) of the run it shows, in the same folder")
    last = max((number for number, text in enumerate(lines, start=1) if text.strip()), default=0)
    header: dict = {}
    results: list[dict] = []
    end: tuple[int, dict] | None = None
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        where = f"{path}:{number}"
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as error:
            if number == last and header:
                warnings.warn(f"{where}: truncated last line skipped (the run was cut short while "
                              "writing it)", stacklevel=2)
                continue
            raise ResultsFileError(f"{where}: not a JSON line ({error.msg}){_not_lines(lines)}") from None
        kind = obj.get("kind") if isinstance(obj, dict) else None
        if end is not None:
            raise ResultsFileError(f"{where}: a line after the end line (files joined? use "
                                   "`softmax-suite merge`)")
        if not header and kind != "run":
            raise ResultsFileError(f"{where}: no run header before this line (is this a softmax-suite "
                                   "results file?)")
        if kind == "run":
            if header:
                raise ResultsFileError(f"{where}: a second run header (files joined? use "
                                       "`softmax-suite merge`)")
            if obj.get("schema") != SCHEMA_VERSION:
                raise ResultsFileError(
                    f"{where}: results schema {obj.get('schema')!r}, this softmax-suite "
                    f"reads schema {SCHEMA_VERSION}; re-run the suite to regenerate it")
            header = obj
        elif kind == "result":
            _check_result(obj, where)
            results.append(obj)
        elif kind == "table":
            header.setdefault("tables", {})[obj.get("name")] = obj.get("table")
        elif kind == "resumed":
            header.setdefault("resumed", []).append(obj)
        elif kind == "end":
            end = number, obj
        else:
            raise ResultsFileError(f"{where}: a line that is neither a run header nor a result (is "
                                   "this a softmax-suite results file?)")
    if not header:
        raise ResultsFileError(f"{path}: empty, not even a run header")
    if end is not None and end[1].get("results") != len(results):
        raise ResultsFileError(f"{path}:{end[0]}: the end line counts {end[1].get('results')!r} results, "
                               f"the file holds {len(results)} (lines lost or added since)")
    header["partial"] = end is None
    if end is not None:
        header["finished"] = end[1].get("finished")
    return header, results


def _check_result(record: dict, where: str) -> None:
    """What every reader of a result relies on: softmax_suite.records' fields and types."""
    wrong = problem(record)
    if wrong is not None:
        raise ResultsFileError(f"{where}: {wrong}")


def _not_lines(lines: list[str]) -> str:
    """Why a line before the last is no JSON: the file is one JSON document (a baseline, say), or
    damaged (a killed run cuts its last line only)."""
    try:
        json.loads("\n".join(lines))
    except json.JSONDecodeError:
        return "; the file is damaged there (a killed run cuts only its last line)"
    return "; the file is one JSON document, not JSON lines (a baseline? results files are written by " \
           "`softmax-suite run`)"


def status_counts(results: Iterable[dict]) -> dict[str, int]:
    counts = dict.fromkeys(STATUSES, 0)
    for result in results:
        counts[result["status"]] = counts.get(result["status"], 0) + 1
    return counts


def rerun_command(record: dict) -> str | None:
    """The shell command that re-runs the result's own test, from the folder it ran in (a checkout of
    softmax-suite, or any project: the id names the catalogue's file); None without a node id."""
    nodeid = record.get("nodeid")
    backend = record.get("backend_spec") or record.get("backend")
    if not isinstance(nodeid, str) or not isinstance(backend, str):
        return None
    return f"python -m pytest {shlex.quote(nodeid)} --softmax-suite-backend {shlex.quote(backend)}"


def loss_words(summary: object) -> str | None:
    """A loss record's "loss" (softmax_suite.suites.losses.summary) in words: "mean over 24 rows,
    ignore_index -1 (8 rows ignored), label_smoothing 0.1, class weights (10 zero)"; None for a
    record without one (or with one that is not a dict)."""
    if not isinstance(summary, dict) or not summary:
        return None
    parts = [f"{summary.get('reduction', '?')} over {summary.get('rows', '?')} rows"
             if summary.get("reduction") != "none" else f"per row ({summary.get('rows', '?')} rows)"]
    if "ignore_index" in summary:
        ignored = summary.get("ignored_rows", "?")
        parts.append(f"ignore_index {summary['ignore_index']} ({ignored} rows ignored)")
    if "label_smoothing" in summary:
        parts.append(f"label_smoothing {summary['label_smoothing']}")
    if "zero_weights" in summary:
        parts.append(f"class weights ({summary['zero_weights']} zero)")
    return ", ".join(str(part) for part in parts)


def capabilities_of(headers: list[dict]) -> list[dict]:
    """The capability tables of the runs behind these headers (merged files keep each run's), each
    entry once: what the backends could not be asked, and why."""
    entries: dict[tuple, dict] = {}
    for header in headers:
        for run in header.get("merged_from") or [header]:
            for entry in run.get("capabilities") or []:
                key = tuple(str(entry.get(k)) for k in ("backend", "device", "op", "dtype", "option"))
                entries.setdefault(key, entry)
    return list(entries.values())
