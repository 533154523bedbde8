"""The results file's lines, typed: one TypedDict per kind of line, the JSON Schema made from them
(docs/results.schema.json), and the check every line passes when it is written and read.

A results file is JSON lines: a run header ("run"), results ("result"), a "resumed" line where a
run was continued, the derived tables ("table") and the end line ("end"). Non-finite floats are
written as the strings "nan", "inf" and "-inf" (JSON has no such numbers). Adding or changing a
field means changing its TypedDict here, regenerating the schema (tests/test_records.py says
how), and for a changed field bumping SCHEMA_VERSION.
"""

from __future__ import annotations

import functools
import types
import typing
from typing import Any, Literal, TypedDict, Union

SCHEMA_VERSION = 1
STATUSES: tuple[str, ...] = ("pass", "fail", "known_failure", "error", "unsupported", "skip")
CHECKS: tuple[str, ...] = ("accuracy", "invariants", "throughput")

# Upper edges of the ULP histogram's bins (metrics.ulp_histogram of a record): (0, 0.5] is
# correctly rounded, then one bin per power of two up to 2^20; one more bin counts the errors
# above it.
ULP_BIN_EDGES: tuple[float, ...] = (0.5, *(2.0**k for k in range(21)))

# A float of a record: a JSON number, or a non-finite one as text.
Number = Union[float, Literal["nan", "inf", "-inf"]]  # noqa: UP007 (a runtime alias, read below)


class _RunRequired(TypedDict):
    kind: Literal["run"]
    schema: int


class RunHeader(_RunRequired, total=False):
    """The first line: how the run was made and on what."""

    command: list
    pytest_args: list
    cwd: str
    started: str
    python: str
    platform: str
    machine: str
    processor: str
    cpu_count: int
    environment: dict
    backends: dict
    # What the backends cannot answer here, and why: {backend, device, op, dtype, reason}, "any" for all;
    # an entry with "option" (scale, mask) covers attention's cases that pass it.
    capabilities: list
    settings: dict
    flush_probe: dict
    options: dict
    selection: dict
    collection: dict
    merged_from: list


class _ResultRequired(TypedDict):
    kind: Literal["result"]
    status: Literal["pass", "fail", "known_failure", "error", "unsupported", "skip"]
    backend: str
    op: str


class Result(_ResultRequired, total=False):
    """One result: what was asked, the verdict, and what was measured (docs/budgets.md reads
    the accuracy fields, docs/throughput.md the throughput ones)."""

    check: Literal["accuracy", "invariants", "throughput"]
    nodeid: str
    # The --backend spec that loads the backend, where it is not the name (a user's function or object).
    backend_spec: str
    backend_version: str
    device: str
    dtype: str
    case: str
    cotangent: str | None
    axis: int | None
    shape: list
    seed: int
    layout: str
    special_input: str
    # attention's forms (docs/attention.md): the scale in the dtype, the mask's counts (kept, masked,
    # fully_masked_rows), the convention a fully masked row was judged by, and what the op returned
    # there (suites.masking.returned_convention)
    scale: Number
    mask: dict
    fully_masked: str
    fully_masked_returned: Literal["nan", "zero", "other"]
    # the length ladder (suites/ladder.py): {"length": 65520, "rows": "uniform" | "near_uniform" |
    # "random"}; the report's safe-length table reads it (reports/ladder.py, docs/report.md)
    ladder: dict
    # every bit pattern: {"row": "[0, x]", "by_gap": [{"binade": int | None, "count", "max_ulp",
    # "max_ratio", "semantic"}, ...]}; the report's error-by-gap plot reads it (reports/patterns.py)
    pattern: dict
    message: str
    failure: str | None
    traceback: str
    known_deviation: dict
    gate: list
    duration_s: Number
    # accuracy
    input_sha256: str
    cotangent_sha256: str
    output_sha256: str
    metrics: dict
    semantic: dict
    special_values: dict
    bound: dict
    oracle: dict
    flushes: bool
    # invariants
    invariants: dict
    # throughput
    sweep: str
    elements: int
    environment: dict
    first_call_s: Number
    timing: dict
    cpu_rounds_s: list
    cpu_gb_per_s: Number | None
    elements_per_s: Number
    traffic_bytes: int
    gb_per_s: Number
    copy: dict
    roofline_fraction: Number | None
    round_fractions: list
    cache_regime: str
    contention: dict
    resolvable: bool
    remeasured: bool
    copy_contended: str
    suspect: dict


class Resumed(TypedDict, total=False):
    kind: Literal["resumed"]
    at: str
    command: list
    pytest_args: list
    kept: int


class Table(TypedDict):
    kind: Literal["table"]
    name: str
    table: Any


class End(TypedDict):
    kind: Literal["end"]
    finished: str
    results: int
    counts: dict


LINES: dict[str, type] = {"run": RunHeader, "result": Result, "resumed": Resumed, "table": Table, "end": End}

_JSON = {str: "string", int: "integer", float: "number", bool: "boolean", dict: "object", list: "array",
         type(None): "null"}


def _schema_of(hint: Any) -> dict:
    """The JSON Schema of one field's type hint."""
    origin = typing.get_origin(hint)
    if origin is Literal:
        return {"enum": list(typing.get_args(hint))}
    if origin in (Union, types.UnionType):
        return {"anyOf": [_schema_of(arg) for arg in typing.get_args(hint)]}
    if hint is Any:
        return {}
    return {"type": _JSON[hint]}


# Once per kind: evaluating the hints cost 0.8 ms per line written, in the process that receives
# every worker's results on the same cores (14 of a default run's seconds there; 4 now).
@functools.cache
def _hints(kind: str) -> dict[str, Any]:
    return typing.get_type_hints(LINES[kind])


def json_schema() -> dict:
    """The JSON Schema of a results file's line (docs/results.schema.json is this, written out)."""
    variants = []
    for kind, typed in LINES.items():
        hints = _hints(kind)
        variants.append({
            "title": typed.__name__, "type": "object",
            "properties": {name: _schema_of(hint) for name, hint in hints.items()},
            "required": sorted(typed.__required_keys__),
            # the header's and a result's fields are all named: a new one is a schema change
            "additionalProperties": kind not in ("run", "result"),
        })
    return {"$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": "https://softmax-suite/results.schema.json",
            "title": f"softmax-suite results file line (schema {SCHEMA_VERSION})",
            "description": "One line of a softmax-suite results file (JSON lines).",
            "oneOf": variants}


def _matches(value: Any, hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if origin is Literal:
        return value in typing.get_args(hint)
    if origin in (Union, types.UnionType):
        return any(_matches(value, arg) for arg in typing.get_args(hint))
    if hint is Any:
        return True
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def problem(line: dict) -> str | None:
    """What is wrong with a results file's line (a missing required field, a field of the wrong
    type, an unknown kind), or None. Fields a result or header does not name are left to the
    schema's self-test: a reader of an older or newer file keeps what it knows."""
    kind = line.get("kind")
    if kind not in LINES:
        return f"a line of kind {kind!r}, not one of {', '.join(LINES)}"
    typed = LINES[kind]
    for name in sorted(typed.__required_keys__):
        if name not in line:
            return f"a {kind} line without its {name!r}"
    for name, hint in _hints(kind).items():
        if name in line and not _matches(line[name], hint):
            return f"a {kind} line whose {name!r} is {line[name]!r}, not {_describe(hint)}"
    return None


def _describe(hint: Any) -> str:
    schema = _schema_of(hint)
    if "enum" in schema:
        return "one of " + ", ".join(map(str, schema["enum"]))
    if "anyOf" in schema:
        return " or ".join(_describe(arg) for arg in typing.get_args(hint))
    return f"a JSON {schema.get('type', 'value')}"
