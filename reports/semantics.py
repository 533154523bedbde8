"""The special-value semantics table: per backend and device, what each op returns for each special
input (NaN, +inf, -inf masks, ...) against the documented policy, read from result records."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from softmax_suite.ops import TABLE, is_vjp
from softmax_suite.protocol import DTYPES, OPS
from softmax_suite.reports.text import grid

# Orders for rows and columns; labels, ops and dtypes not listed here follow in the order seen.
SPECIAL_INPUTS: tuple[str, ...] = ("NaN", "+inf", "-inf mask", "all -inf", "empty", "single element",
                                   "subnormal outputs")
SHORT_OPS = {op.name: op.short for op in TABLE}
NON_FINITE = frozenset({"nan", "+inf", "-inf"})
CLASS_NAMES = {"nan": "NaN"}
NOT_RUN = "-"
AS_POLICY = "as policy"
ERROR_HEAD = 60


def backend_name(record: dict) -> str:
    return f"{record['backend']}/{record.get('device', '-')}"


def is_accuracy(record: dict) -> bool:
    # Records written before the invariants check existed carry no "check" field.
    return (record.get("check") or "accuracy") == "accuracy"


def ordered(values: Iterable[str], order: tuple[str, ...]) -> list[str]:
    """The distinct values, those in order first (in its order), then the rest as first seen."""
    seen = list(dict.fromkeys(values))
    return sorted(seen, key=lambda v: (order.index(v) if v in order else len(order), seen.index(v)))


def _is_vjp(op: str) -> bool:
    return is_vjp(op)


def _differs(op: str, expected: str, got: str) -> bool:
    """A class mismatch the policy speaks to. A VJP's zeros and subnormals come out of the
    cancellation in g - <g, y> (a ones cotangent has an exact VJP of 0 everywhere), so there
    only NaN and infinities are semantics; the rest is error, judged by the VJP's metrics."""
    if expected == got:
        return False
    return not _is_vjp(op) or expected in NON_FINITE or got in NON_FINITE


def _describe(expected: str, got: str) -> str:
    if expected == "subnormal" and got == "0":
        return "subnormal flushed to 0"
    return f"{CLASS_NAMES.get(got, got)} where {CLASS_NAMES.get(expected, expected)}"


def _errored(record: dict) -> bool:
    # A known deviation turns an error into known_failure; failure still says "error".
    return record["status"] == "error" or record.get("failure") == "error"


def _error_head(record: dict) -> str:
    """The backend's own error, without the known-deviation wrapping, cut to a short head."""
    message = record.get("message") or "error"
    known = record.get("known_deviation")
    prefix = f"known deviation: {known.get('reason', '')} [" if known else None
    if prefix and message.startswith(prefix) and message.endswith("]"):
        message = message[len(prefix):-1]
    op, raised, rest = message.partition(" raised ")
    message = f"raises {rest}" if raised and " " not in op else f"error: {message}"
    # The suite's own messages explain themselves after " (" or "; ": the head is before.
    message = message.splitlines()[0].split(" (")[0].split("; ")[0]
    return message if len(message) <= ERROR_HEAD else message[:ERROR_HEAD - 3] + "..."


def _special_label(record: dict, case_labels: dict[str, str]) -> str | None:
    special = record.get("special_values")
    if special:
        return special.get("input")
    # An error record carries no special_values: its case's label comes from another record.
    return record.get("special_input") or case_labels.get(record.get("case", ""))


def flush_to_zero(results: Iterable[dict]) -> dict[str, list[str]]:
    """{backend/device: dtypes} in which the backend was measured to flush subnormals to zero
    (its records' "flushes", from the run's probe: softmax_suite.suites.flushing), and so judged with the
    flush allowance."""
    flushes: dict[str, set[str]] = defaultdict(set)
    for record in results:
        if is_accuracy(record) and record.get("flushes"):
            flushes[backend_name(record)].add(record["dtype"])
    return {name: ordered(dtypes, DTYPES) for name, dtypes in flushes.items()}


def _cell(records: list[dict]) -> dict:
    """One (backend, input, op) cell from its records over every dtype and cotangent kind."""
    if not records:
        return {"agrees": None, "cell": NOT_RUN, "dtypes_differing": []}
    ran = ordered((r["dtype"] for r in records), DTYPES)
    errors: dict[str, set[str]] = defaultdict(set)
    counts: dict[str, int] = defaultdict(int)
    differing: dict[str, set[str]] = defaultdict(set)
    for record in records:
        if _errored(record):
            errors[_error_head(record)].add(record["dtype"])
            continue
        for outcome in record["special_values"].get("outcomes", []):
            if outcome["count"] and _differs(record["op"], outcome["expected"], outcome["got"]):
                what = _describe(outcome["expected"], outcome["got"])
                counts[what] += outcome["count"]
                differing[what].add(record["dtype"])

    def which(dtypes: set[str]) -> list[str]:
        return ordered(dtypes, DTYPES) if len(dtypes) < len(ran) else []

    parts = [f"{head} ({', '.join(which(dtypes))})" if which(dtypes) else head
             for head, dtypes in errors.items()]
    for what in sorted(counts, key=lambda w: -counts[w]):
        parts.append(f"{what} ({', '.join([f'x{counts[what]}', *which(differing[what])])})")
    all_differing = set().union(*errors.values(), *differing.values())
    return {"agrees": not parts, "cell": "; ".join(parts) or AS_POLICY,
            "dtypes_differing": ordered(all_differing, DTYPES)}


def semantics_table(results: Iterable[dict]) -> dict:
    """{backend/device: {"flush_to_zero": [dtypes], "rows": {input: {op: cell}}}}, each cell
    {"agrees": bool (None when not run), "cell": "as policy", a description of the
    differences or "-", "dtypes_differing": [dtypes]}; rows and ops as run by any backend."""
    records = [r for r in results if is_accuracy(r) and r["status"] not in ("skip", "unsupported")]
    case_labels = {r["case"]: r["special_values"]["input"] for r in records if r.get("special_values")}
    cells: dict[tuple[str, str, str], list[dict]] = defaultdict(list)
    names: list[str] = []
    for record in records:
        label = _special_label(record, case_labels)
        if label is None or not (record.get("special_values") or _errored(record)):
            continue
        cells[(backend_name(record), label, record["op"])].append(record)
        names.append(backend_name(record))
    labels = ordered((label for _, label, _ in cells), SPECIAL_INPUTS)
    ops = ordered((op for _, _, op in cells), OPS)
    flushes = flush_to_zero(records)
    return {name: {"flush_to_zero": flushes.get(name, []),
                   "rows": {label: {op: _cell(cells.get((name, label, op), [])) for op in ops}
                            for label in labels}}
            for name in sorted(set(names))}


def format_semantics(table: dict) -> str:
    """One block per backend: a grid of ok / [n] / - per special input and op, the numbered
    differences under it, and one legend for the op abbreviations."""
    if not table:
        return "no special-value results"
    blocks = []
    for name, entry in table.items():
        backend, _, device = name.partition("/")
        flush = entry["flush_to_zero"]
        title = f"special values vs policy: {backend} ({device})"
        title += f", a flush-to-zero backend ({', '.join(flush)})" if flush else ""
        ops = list(next(iter(entry["rows"].values()), {}))
        notes: list[str] = []
        rows = [["input", *(SHORT_OPS.get(op, op) for op in ops)]]
        for label, row in entry["rows"].items():
            marks = []
            for op in ops:
                cell = row[op]
                if cell["agrees"] is None:
                    marks.append(NOT_RUN)
                elif cell["agrees"]:
                    marks.append("ok")
                else:
                    if cell["cell"] not in notes:
                        notes.append(cell["cell"])
                    marks.append(f"[{notes.index(cell['cell']) + 1}]")
            rows.append([label, *marks])
        lines = [title, *grid(rows), *(f"  [{i}] {note}" for i, note in enumerate(notes, start=1))]
        blocks.append("\n".join(lines))
    legend = ("ops: " + ", ".join(f"{short} {op}" for op, short in SHORT_OPS.items() if "vjp" not in op)
              + ", *_vjp their VJPs (NaN and inf only)\n"
              "ok: as the policy documents; [n]: differs, see note n; -: not run\n"
              "(xN): elements over dtypes and cotangents; dtypes are named where not all differ")
    return "\n\n".join([*blocks, legend])
