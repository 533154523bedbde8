"""Baselines and merged results: one entry per (check, backend, device, dtype, op, case,
cotangent) holding what the gate compares, in a JSON file with a stable key order for review.

An entry keeps the status and semantic differences of every result; for accuracy the gated
error (max_ulp, or for a VJP whose ULPs are undefined under cancellation max_scaled, in units of
u times the natural scale); for throughput each run's speed the gate compares and its basis (entry()
says which; a baseline saved from several runs of one machine keeps each run's), whether the
timing was resolvable and the median call time (what the gate's resolution rules read), with
GB/s and the copy's kept for information.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from softmax_suite.reports.results import (
    SCHEMA_VERSION,
    STATUSES,
    ResultsFileError,
    end_line,
    line,
    make_folder,
    read_results,
)

BASELINE_SCHEMA = 2
SCHEMA_KEY = '"schema"'
KEY_FIELDS = ("check", "backend", "device", "dtype", "op", "case", "cotangent")


class BaselineError(ValueError):
    """A baseline that cannot be read or results that cannot be merged; the message says why."""


def key(record: dict) -> str:
    """check/backend/device/dtype/op/case[/cotangent] of a result record."""
    values = {**{name: record.get(name) for name in KEY_FIELDS}, "check": record.get("check") or "accuracy"}
    return "/".join(str(values[name]) for name in KEY_FIELDS if name != "cotangent" or values[name])


def accuracy_metric(record: dict) -> tuple[str, float] | None:
    """(name, value) of the gated error of an accuracy record, or None where nothing was measured."""
    metrics = record.get("metrics") or {}
    for name in ("max_ulp", "max_scaled"):
        if metrics.get(name) is not None:
            return name, float(metrics[name])
    return None


def entry(record: dict) -> dict:
    """What the gate needs of one result."""
    kept = {"status": record["status"], "semantic": sorted(record.get("semantic") or {})}
    check = record.get("check") or "accuracy"
    if check == "accuracy":
        metric = accuracy_metric(record)
        if metric is not None:
            kept["metric"], kept["value"] = metric
    elif check == "throughput" and record["status"] == "pass":
        kept.update(median_s=record["timing"]["median_s"], gb_per_s=record["gb_per_s"],
                    copy_gb_per_s=record["copy"]["gb_per_s"], resolvable=record.get("resolvable", True))
        # What the gate compares (softmax_suite.suites.throughput). On the CPU, for an op on one thread, the
        # fastest round's CPU time: a round another process preempted keeps it, where its wall time
        # grew 2x with both cores busy. On several threads the fastest round's wall time (their CPU
        # time would count the threads' waiting for each other), gated only where the cores were
        # free. Elsewhere, against the copy interleaved with it, its roofline fraction.
        threads = (record.get("contention") or {}).get("threads", 1)
        if record["device"] == "cpu" and threads == 1 and record.get("cpu_gb_per_s"):
            kept.update(speed=record["cpu_gb_per_s"], basis="fastest round's CPU time, GB/s")
        elif record["device"] == "cpu":
            kept.update(speed=record["gb_per_s"], basis="fastest round, GB/s")
        elif record.get("roofline_fraction") is not None:
            kept.update(speed=record["roofline_fraction"], basis="fastest rounds, fraction of the copy")
    return kept


def read_many(paths: list[str | os.PathLike]) -> tuple[list[dict], list[dict]]:
    """(headers, results) of several results files, each header with its "file" and "partial";
    a file's problem is a BaselineError."""
    headers, results = [], []
    for path in paths:
        try:
            header, records = read_results(path)
        except ResultsFileError as error:
            raise BaselineError(str(error)) from None
        headers.append({"file": str(path), **{k: v for k, v in header.items() if k != "tables"}})
        results += records
    return headers, results


def partial_files(headers: list[dict]) -> list[str]:
    """The files among these headers' whose run did not finish."""
    return [header["file"] for header in headers if header.get("partial")]


def entries(results: list[dict]) -> tuple[dict[str, dict], list[str]]:
    """The entries of results by key, and the conflicts: a key given twice with different status
    or error. A benchmark given several times (runs of one machine) pools its rounds and keeps
    each run's median fraction: the gate allows the drift between them."""
    found: dict[str, dict] = {}
    conflicts = []
    for record in results:
        name, value = key(record), entry(record)
        if name not in found:
            found[name] = {**value, "run_speeds": [value["speed"]]} if "speed" in value else value
        elif _comparable(found[name]) != _comparable(value):
            conflicts.append(f"{name}: {_comparable(found[name])} and {_comparable(value)}")
        elif "median_s" in value:
            pooled = found[name]
            pooled["run_speeds"] = pooled.get("run_speeds", []) + (
                [value["speed"]] if "speed" in value else [])
            pooled["median_s"] = min(pooled["median_s"], value["median_s"])
            pooled["resolvable"] = pooled["resolvable"] and value["resolvable"]
    return found, conflicts


def _comparable(value: dict) -> dict:
    # Two runs of one benchmark never time alike: a conflict is a different status or error.
    return {k: v for k, v in value.items() if k in ("status", "semantic", "metric", "value")}


def save(paths: list[str | os.PathLike], output: str | os.PathLike) -> dict:
    """Write the baseline of these results files; returns it."""
    headers, results = read_many(paths)
    partial = partial_files(headers)
    if partial:
        # A baseline lacking entries would leave them ungated in every later run.
        raise BaselineError(f"{', '.join(partial)}: partial results (the run did not finish); complete "
                            "them with `softmax-suite run --resume DIR` before saving a baseline")
    found, conflicts = entries(results)
    if conflicts:
        raise BaselineError("the results disagree on the same key (merge them per host first):\n  "
                            + "\n  ".join(conflicts))
    baseline = {"schema": BASELINE_SCHEMA, "runs": headers, "entries": found}
    _write(output, json.dumps(baseline, indent=1, sort_keys=True, allow_nan=False) + "\n", "baseline")
    return baseline


def _write(output: str | os.PathLike, text: str, what: str) -> None:
    try:
        make_folder(output)
        Path(output).write_text(text, encoding="utf-8")
    except OSError as error:
        raise BaselineError(f"cannot write the {what} {output}: {error.strerror}") from None


def load(path: str | os.PathLike) -> dict:
    """A baseline file, checked for what the gate reads."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        why = error.strerror if isinstance(error, OSError) else "not UTF-8 text"
        raise BaselineError(f"cannot read baseline {path}: {why}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise BaselineError(f"{path}:{error.lineno}: not JSON ({error.msg}){_results_hint(text)}") from None
    if isinstance(data, dict) and data.get("schema") == 1:
        raise BaselineError(f"{path}:{_line_of(text, SCHEMA_KEY)}: a baseline of an older softmax-suite "
                            "(schema 1: throughput gated on the median of rounds, which a busy machine "
                            "moves); save it again from a run of this version with `softmax-suite "
                            "baseline save RESULTS -o FILE`")
    if not isinstance(data, dict) or data.get("schema") != BASELINE_SCHEMA or not isinstance(
            data.get("entries"), dict):
        found = f"schema {data['schema']!r}" if isinstance(data, dict) and "schema" in data else "no schema"
        raise BaselineError(f"{path}:{_line_of(text, SCHEMA_KEY)}: not a softmax-suite baseline of schema "
                            f"{BASELINE_SCHEMA} ({found}); write one with `softmax-suite baseline save "
                            "RESULTS -o FILE`")
    for name, value in data["entries"].items():
        problem = _entry_problem(name, value)
        if problem:
            raise BaselineError(f"{path}:{_line_of(text, json.dumps(name))}: entry {name!r} {problem}")
    return data


def _entry_problem(name: str, value: object) -> str | None:
    """What is wrong with a baseline entry, for the gate that reads it; None when nothing."""
    if len(name.split("/")) < len(KEY_FIELDS) - 1:
        return "is not check/backend/device/dtype/op/case[/cotangent]"
    if not isinstance(value, dict) or value.get("status") not in STATUSES:
        return f"has no status (one of {', '.join(STATUSES)})"
    numbers = [value.get("value"), value.get("median_s"), *(value.get("run_speeds") or ())]
    if any(n is not None and (isinstance(n, bool) or not isinstance(n, (int, float))) for n in numbers):
        return "has a value that is not a number"
    return None


def _line_of(text: str, needle: str) -> int:
    """The first line holding needle (1 when none does): where a reader should look."""
    index = text.find(needle)
    return text.count("\n", 0, index) + 1 if index >= 0 else 1


def _results_hint(text: str) -> str:
    try:
        first = json.loads(text.split("\n", 1)[0])
    except json.JSONDecodeError:
        return ""
    if isinstance(first, dict) and first.get("kind") == "run":
        return ("; this is a results file: save a baseline of it with `softmax-suite baseline save RESULTS "
                "-o FILE`")
    return ""


def merge(paths: list[str | os.PathLike], output: str | os.PathLike) -> tuple[int, list[str]]:
    """Merge results files (one per host) into one; returns (results written, conflicts). With
    conflicts nothing is written; the merge of a partial file is partial (no end line)."""
    headers, results = read_many(paths)
    _, conflicts = entries(results)
    if conflicts:
        return 0, conflicts
    lines = [{"kind": "run", "schema": SCHEMA_VERSION, "merged_from": headers},
             *({**record, "kind": "result"} for record in results)]
    if not partial_files(headers):
        # A merge of partial files stays partial: no end line.
        lines.append(end_line(results))
    _write(output, "".join(map(line, lines)), "merged results")
    return len(results), []
