"""Baselines and merged results: one entry per (check, backend, device, dtype, op, case,
cotangent) holding what the gate compares, in a JSON file with a stable key order for review.

An entry keeps the status and semantic differences of every result; for accuracy the gated
error (max_ulp, or for a VJP whose ULPs are undefined under cancellation max_scaled, in units of
u times the natural scale); for throughput the roofline fraction of every timed round and each
run's median (a baseline saved from several runs of one machine pools them), with the raw time,
GB/s and the copy kept for information.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from reports.results import SCHEMA_VERSION, ResultsFileError, jsonable, read_results

BASELINE_SCHEMA = 1
KEY_FIELDS = ("check", "backend", "device", "dtype", "op", "case", "cotangent")


class BaselineError(ValueError):
    """A baseline that cannot be read or results that cannot be merged; the message says why."""


def key(record: dict) -> str:
    """check/backend/device/dtype/op/case[/cotangent] of a result record."""
    values = {**{name: record.get(name) for name in KEY_FIELDS}, "check": record.get("check") or "accuracy"}
    return "/".join(str(values[name]) for name in KEY_FIELDS if name != "cotangent" or values[name])


def round_fractions(record: dict) -> list[float]:
    """The roofline fraction of each timed round of a throughput record."""
    if "rounds_s" not in record.get("timing", {}):
        raise BaselineError(f"{key(record)}: a throughput result without its rounds' times (written "
                            "by an older softmax-suite); re-run the throughput suite")
    copy = record["copy"]["gb_per_s"]
    return [record["traffic_bytes"] / seconds / 1e9 / copy for seconds in record["timing"]["rounds_s"]]


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
        kept.update(roofline_fraction=record["roofline_fraction"], round_fractions=round_fractions(record),
                    median_s=record["timing"]["median_s"], gb_per_s=record["gb_per_s"],
                    copy_gb_per_s=record["copy"]["gb_per_s"])
    return kept


def read_many(paths: list[str | os.PathLike]) -> tuple[list[dict], list[dict]]:
    """(headers, results) of several results files; a file's problem is a BaselineError."""
    headers, results = [], []
    for path in paths:
        try:
            header, records = read_results(path)
        except ResultsFileError as error:
            raise BaselineError(str(error)) from None
        headers.append({"file": str(path), **{k: v for k, v in header.items() if k != "tables"}})
        results += records
    return headers, results


def entries(results: list[dict]) -> tuple[dict[str, dict], list[str]]:
    """The entries of results by key, and the conflicts: a key given twice with different status
    or error. A benchmark given several times (runs of one machine) pools its rounds and keeps
    each run's median fraction: the gate allows the drift between them."""
    found: dict[str, dict] = {}
    conflicts = []
    for record in results:
        name, value = key(record), entry(record)
        if name not in found:
            found[name] = {**value, "run_fractions": [value["roofline_fraction"]]} \
                if "round_fractions" in value else value
        elif _comparable(found[name]) != _comparable(value):
            conflicts.append(f"{name}: {_comparable(found[name])} and {_comparable(value)}")
        elif "round_fractions" in value:
            pooled = found[name]
            pooled["round_fractions"] = pooled["round_fractions"] + value["round_fractions"]
            pooled["run_fractions"] = pooled["run_fractions"] + [value["roofline_fraction"]]
    return found, conflicts


def _comparable(value: dict) -> dict:
    # Two runs of one benchmark never time alike: a conflict is a different status or error.
    return {k: v for k, v in value.items() if k in ("status", "semantic", "metric", "value")}


def save(paths: list[str | os.PathLike], output: str | os.PathLike) -> dict:
    """Write the baseline of these results files; returns it."""
    headers, results = read_many(paths)
    found, conflicts = entries(results)
    if conflicts:
        raise BaselineError("the results disagree on the same key (merge them per host first):\n  "
                            + "\n  ".join(conflicts))
    baseline = {"schema": BASELINE_SCHEMA, "runs": headers, "entries": found}
    Path(output).write_text(json.dumps(baseline, indent=1, sort_keys=True, allow_nan=False) + "\n",
                            encoding="utf-8")
    return baseline


def load(path: str | os.PathLike) -> dict:
    """A baseline file, checked for what the gate reads."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as error:
        raise BaselineError(f"cannot read baseline {path}: {error.strerror}") from None
    except json.JSONDecodeError as error:
        raise BaselineError(f"{path}:{error.lineno}: not JSON ({error.msg})") from None
    if not isinstance(data, dict) or data.get("schema") != BASELINE_SCHEMA or not isinstance(
            data.get("entries"), dict):
        raise BaselineError(f"{path}: not a softmax-suite baseline of schema {BASELINE_SCHEMA} (write "
                            "one with `softmax-suite baseline save RESULTS -o FILE`)")
    return data


def merge(paths: list[str | os.PathLike], output: str | os.PathLike) -> tuple[int, list[str]]:
    """Merge results files (one per host) into one; returns (results written, conflicts). With
    conflicts nothing is written."""
    headers, results = read_many(paths)
    _, conflicts = entries(results)
    if conflicts:
        return 0, conflicts
    lines = [{"kind": "run", "schema": SCHEMA_VERSION, "merged_from": headers},
             *({**record, "kind": "result"} for record in results)]
    Path(output).write_text("".join(json.dumps(jsonable(line), sort_keys=True, allow_nan=False) + "\n"
                                    for line in lines), encoding="utf-8")
    return len(results), []
