"""The verdict of a run for the terminal, sized to fit one screen: a headline, one aligned row per
backend and dtype (counts, the best fraction of the copy bandwidth, the worst unexpected result),
what did not run, and the ids of the unexpected results. The long tables (special values,
agreement, the per-cell summary) are the report's and the results file's."""

from __future__ import annotations

import textwrap
from collections import defaultdict
from collections.abc import Iterable

from softmax_suite.protocol import DTYPES
from softmax_suite.reports.text import grid

UNEXPECTED = ("fail", "error")
NOT_RUN = ("unsupported", "skip")
# The table's count columns and the statuses each counts.
COUNTS = {"passed": ("pass",), "known": ("known_failure",), "unexpected": UNEXPECTED, "not run": NOT_RUN}
WIDTH = 100
# The lines the verdict aims at: the ids of unexpected results take what the table leaves of them,
# at least FEWEST_IDS and at most MOST_IDS.
LINES = 40
FEWEST_IDS, MOST_IDS = 2, 10


def _number(value: object) -> float | None:
    """A finite measured value of a record, or None (results files write nan and inf as text)."""
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def severity(record: dict) -> tuple[int, float]:
    """How bad an unexpected result is, for picking the worst of a row: an answer silently of the
    wrong kind (NaN for a number) first, then one that raised or timed out, then errors beyond the
    budget by their ratio to it (accuracy and invariants alike), then the rest (throughput)."""
    failure = record.get("failure")
    if failure == "semantic":
        return 3, sum((record.get("semantic") or {}).values())
    if failure in ("error", "timeout", "crash"):
        return 2, 0.0
    if failure == "accuracy":
        return 1, _number((record.get("bound") or {}).get("ratio")) or 0.0
    if failure == "invariant":
        ratios = [(_number(i.get("value")) or 0.0) / b for i in (record.get("invariants") or {}).values()
                  if not i.get("ok", True) and (b := _number(i.get("budget")))]
        return 1, max(ratios, default=0.0)
    return 0, 0.0


def describe(record: dict) -> str:
    """The worst unexpected result in a few words: op, case (and cotangent), and what went wrong."""
    where = f"{record['op']} {record.get('case', '?')}"
    if record.get("cotangent"):
        where += f"/{record['cotangent']}"
    failure = record.get("failure")
    if failure == "accuracy":
        ulp = _number(((record.get("metrics") or {}).get("worst") or {}).get("ulp"))
        budget = _number((record.get("bound") or {}).get("budget_ulp"))
        if ulp is not None and budget is not None:
            return f"{where}: {ulp:.2g} ulp (budget {budget:.2g})"
    if failure == "semantic":
        kinds = ", ".join(f"{count} x {kind}" for kind, count in (record.get("semantic") or {}).items())
        return f"{where}: {kinds}"
    if failure == "invariant":
        broken = [name for name, i in (record.get("invariants") or {}).items() if not i.get("ok", True)]
        return f"{where}: {', '.join(broken)}"
    # An error's message names the call and what it raised or how long it ran.
    message = (record.get("message") or failure or record["status"]).split(";")[0]
    return f"{where}: {textwrap.shorten(message, 48, placeholder='...')}"


def _fraction(values: list[float]) -> str:
    return f"{max(values):.2f}" if values else "-"


def _rows(records: list[dict]) -> tuple[list[list[str]], dict[str, list[str]]]:
    """The table's rows (header first), and what ran nothing, by name: a backend/device with only
    skipped results (not installed, no such device; no dtypes listed), or the dtypes of a backend
    that are all unsupported."""
    groups: dict[tuple[str, str, str], list[dict]] = defaultdict(list)
    for record in records:
        groups[(record["backend"], record.get("device", "-"), record.get("dtype", "-"))].append(record)
    ran = {(backend, device) for (backend, device, _), group in groups.items()
           if any(r["status"] != "skip" for r in group)}
    show_device = len({device for _, device in ran}) > 1
    timed = any(r.get("check") == "throughput" for r in records)
    unexpected = any(r["status"] in UNEXPECTED for r in records)
    counted = {column: statuses for column, statuses in COUNTS.items()
               if column != "not run" or any(r["status"] in NOT_RUN for r in records)}
    header = ["backend", *(["device"] if show_device else []), "dtype", *counted,
              *(["copy"] if timed else []), *(["worst unexpected"] if unexpected else [])]
    rows: list[list[str]] = [header]
    idle: dict[str, list[str]] = {}
    order = {dtype: i for i, dtype in enumerate(DTYPES)}
    for key in sorted(groups, key=lambda k: (k[0], k[1], order.get(k[2], len(order)), k[2])):
        backend, device, dtype = key
        group = groups[key]
        if (backend, device) not in ran:
            idle.setdefault(backend if device in ("any", "-") else f"{backend}/{device}", [])
            continue
        if all(r["status"] in NOT_RUN for r in group):
            idle.setdefault(f"{backend}/{device}" if show_device else backend, []).append(dtype)
            continue
        counts = defaultdict(int)
        for record in group:
            counts[record["status"]] += 1
        bad = [r for r in group if r["status"] in UNEXPECTED]
        fractions = [f for r in group if r["status"] == "pass" and r.get("check") == "throughput"
                     and (f := _number(r.get("roofline_fraction"))) is not None]
        rows.append([backend, *([device] if show_device else []), dtype,
                     *(str(sum(counts[s] for s in statuses)) for statuses in counted.values()),
                     *([_fraction(fractions)] if timed else []),
                     *([describe(max(bad, key=severity)) if bad else ""] if unexpected else [])])
    return rows, idle


def _aligned(rows: list[list[str]]) -> list[str]:
    """The grid with the counts and fractions right-aligned under their headers."""
    counts = {*COUNTS, "copy"}
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    padded = [[cell.rjust(width) if rows[0][i] in counts and n else cell
               for i, (cell, width) in enumerate(zip(row, widths, strict=True))]
              for n, row in enumerate(rows)]
    return grid(padded)


def _headline(records: list[dict]) -> str:
    counts = defaultdict(int)
    for record in records:
        counts[record["status"]] += 1
    unexpected = sum(counts[s] for s in UNEXPECTED)
    not_run = sum(counts[s] for s in NOT_RUN)
    rest = (f"{counts['pass']} passed, {counts['known_failure']} known failures"
            f"{f', {not_run} not run' if not_run else ''} ({len(records)} results)")
    if unexpected:
        return f"verdict: {unexpected} unexpected (failed or erred); {rest}"
    return f"verdict: nothing unexpected; {rest}"


# The capability entries of a case's option or a backend's limit (runner.targets), as short phrases.
LIMITS = {"length": lambda entry: f"rows over {entry.get('limit', 'its length')}",
          "finite": lambda entry: "cases with inf or NaN", "throughput": lambda entry: "not timed",
          "opt_in": lambda entry: f"asked by name only (--backend {entry['backend']})"}


def _cannot(capabilities: list[dict], ops: set[str]) -> list[str]:
    """What the backends cannot answer, a phrase per backend (or device), backends with the same
    phrase together: "cupy", "torch/cuda", "scipy: softmax_vjp, logsumexp_vjp", "onnxruntime:
    bfloat16" (every op in it), "x: softmax (float16)", "a, b: log_softmax; rows over 4096"."""
    described: dict[str, dict[str, set[str]]] = {}
    options: dict[str, list[str]] = {}
    limits: dict[str, list[str]] = {}
    for entry in capabilities:
        name = entry["backend"] if entry["device"] == "any" else f"{entry['backend']}/{entry['device']}"
        option = entry.get("option")
        if option in LIMITS:
            limits.setdefault(entry["backend"], []).append(LIMITS[option](entry))
        elif option:
            options.setdefault(entry["backend"], []).append(option)
        elif entry["op"] == "any":
            described.setdefault(entry["backend"] if entry["device"] == "any" else name, {})
        else:
            described.setdefault(entry["backend"], {}).setdefault(entry["op"], set()).add(entry["dtype"])
    bodies: dict[str, list[str]] = {}
    for name, missing in described.items():
        bodies[name] = [_missing(missing, ops)] if missing else []
    for name, found in options.items():
        named = [f"{'an' if option[0] in 'aeiou' else 'a'} {option}" for option in dict.fromkeys(found)]
        bodies.setdefault(name, []).append(f"the cases with {' or '.join(named)}")
    for name, found in limits.items():
        bodies.setdefault(name, []).extend(dict.fromkeys(found))
    grouped: dict[str, list[str]] = {}
    for name, body in bodies.items():
        grouped.setdefault("; ".join(body), []).append(name)
    return [", ".join(names) + (f": {body}" if body else "") for body, names in grouped.items()]


def _missing(missing: dict[str, set[str]], ops: set[str]) -> str:
    """The ops (and dtypes) a backend lacks: "bfloat16" where it lacks every op in it."""
    dtypes = set().union(*missing.values())
    every_op = {dtype for dtype in dtypes if all(dtype in found for found in missing.values())}
    if set(missing) >= ops and every_op:
        parts = [dtype for dtype in DTYPES if dtype in every_op]
        missing = {op: found - every_op for op, found in missing.items() if found - every_op}
    else:
        parts = []
    whole = {dtype for found in missing.values() for dtype in found}
    parts += [op if found == whole else f"{op} ({', '.join(d for d in DTYPES if d in found)})"
              for op, found in missing.items()]
    return ", ".join(parts)


def format_verdict(records: Iterable[dict], list_unexpected: bool = True,
                   capabilities: Iterable[dict] = ()) -> str:
    """The verdict of these result records (of any checks, of one run or several files) and of what the
    backends could not be asked (the run headers' capability table): with list_unexpected, the pytest
    ids of the unexpected results too (the first few; pytest lists them itself where it prints its own
    summary)."""
    records, capabilities = list(records), list(capabilities)
    if not records and not capabilities:
        return "verdict: no results"
    rows, idle = _rows(records)
    lines = [_headline(records)]
    if len(rows) > 1:
        lines += _aligned(rows)
    ops = {r["op"] for r in records} | {e["op"] for e in capabilities if e["op"] != "any"}
    names = [*(f"{name} ({', '.join(dtypes)})" if dtypes else name for name, dtypes in idle.items()),
             *_cannot(capabilities, ops)]
    if names:
        lines += textwrap.wrap(f"not run: {'; '.join(names)} (the report says why)", WIDTH,
                               subsequent_indent="  ", break_on_hyphens=False)
    timings = [r for r in records if r.get("check") == "throughput" and r["status"] == "pass"]
    if timings:
        sweeps = ", ".join(sorted({str(r.get("sweep")) for r in timings}))
        lines.append(f"throughput ({sweeps} sweep): {len(timings)} timed; copy: the best fraction of the "
                     "copy bandwidth among them")
    bad = [r for r in records if r["status"] in UNEXPECTED]
    if bad and list_unexpected:
        shown = max(FEWEST_IDS, min(MOST_IDS, LINES - len(lines) - 2))  # with the title and the re-run line
        more = f" (the first {shown}; all {len(bad)} in the report)" if len(bad) > shown else ""
        lines.append(f"unexpected{more}:")
        lines += [f"  {r.get('nodeid') or describe(r)}" for r in bad[:shown]]
        specs = dict.fromkeys(str(r.get("backend_spec") or r["backend"]) for r in bad if r.get("nodeid"))
        if specs:
            spec = next(iter(specs)) if len(specs) == 1 else "SPEC (the --backend of its backend)"
            lines.append(f"one alone: python -m pytest 'ID' --softmax-suite-backend {spec}")
    return "\n".join(lines)
