"""What a reproducer script (softmax_suite.runner.reproduce) shows when it runs: the input, and what the
backend returned beside the exact values in the rows that matter. The verdict is never made here: the
script judges with the suite's own code (suites.judging.judge, suites.invariants.measure)."""

from __future__ import annotations

import textwrap
from typing import Any

import numpy as np

from softmax_suite.backends.registry import Unavailable
from softmax_suite.ops import PER_ROW, is_vjp, op_named, shaped
from softmax_suite.oracle import cache
from softmax_suite.oracle.budget import budget_ulp
from softmax_suite.oracle.exact import Reference
from softmax_suite.oracle.metrics import CATEGORIES, Comparison, compare
from softmax_suite.protocol import Backend
from softmax_suite.suites.accuracy import Target
from softmax_suite.suites.invariants import OP_INVARIANTS, measure
from softmax_suite.suites.policy import Policy

# Up to this many elements the whole input is printed, else the rows that matter, each whole up to
# this many elements too.
SMALL_INPUT = 64
# A row tabulated element by element beside the output is cut beyond this many elements, as is an
# input row beyond SMALL_INPUT: to WINDOW elements each side of its worst ones and its max, which
# softmax subtracts (the values a bug in a row's reduction or exponential depends on).
LONG_ROW = 16
WINDOW = 4
WIDTH = 100
# The rows tabulated after the call: the run's worst element, today's, and a semantic difference.
MAX_ROWS = 3

Index = tuple[int, ...]


def text(value: object) -> str:
    """A stored value, exactly: the shortest decimal that reads back as the same float64 (every value of
    the four dtypes is one); for float16 and bfloat16 also the bits, as kernel tables and tests write them."""
    array = np.asarray(value)
    number = repr(float(array))
    if array.dtype.itemsize == 2:
        return f"{number} (0x{int(array.reshape(1).view(np.uint16)[0]):04x})"
    return number


def unusable(backend: Backend | Unavailable, op: str, dtype: str, device: str) -> str | None:
    """Why the loaded backend cannot run op in dtype on device here; None when it can."""
    if isinstance(backend, Unavailable):
        return f"backend {backend.name!r} is unavailable here: {backend.reason}"
    reason = backend.why_unsupported(op, dtype)
    if reason:
        return reason
    if device not in backend.devices:
        why = backend.absent_devices.get(device) or f"it has {', '.join(backend.devices) or 'none'}"
        return f"{backend.name} has no device {device!r} here ({why})"
    return None


def exact(op: str, x: np.ndarray, axis: int, g: np.ndarray | None = None, **options: Any) -> Reference:
    """The suite's exact reference of op on x along axis, with g the cotangent a VJP takes and
    options attention's scale and mask (softmax_suite.oracle.scaled)."""
    if not is_vjp(op):
        return cache.reference(op, x, axis, **options)
    # The oracle evaluates the three VJPs of one (x, g, g_row) together, and op reads only its own
    # cotangent: the other is zeros (finite, as every cotangent kind is: a non-finite cotangent makes
    # the oracle's whole row NaN).
    if op_named(op).cotangent == PER_ROW:
        return cache.reference(op, x, axis, (np.zeros_like(x), g), **options)
    return cache.reference(op, x, axis, (g, np.zeros(shaped(PER_ROW, x.shape, axis), dtype=x.dtype)),
                           **options)


def _row(index: Index, ndim: int, axis: int) -> tuple[Index, int | None]:
    """The row of an output element (its indices on x's other axes) and its column along axis; None
    for a per-row output (logsumexp), which has no column."""
    index = tuple(index)
    if len(index) == ndim:
        return index[:axis] + index[axis + 1:], index[axis]
    return index, None


def _line(a: np.ndarray, row: Index, axis: int) -> np.ndarray:
    where: list = list(row)
    where.insert(axis, slice(None))
    return a[tuple(where)]


def _name(name: str, row: Index, axis: int, columns: str) -> str:
    # numpy's indexing, so that a line can be pasted into a session holding x.
    parts = [str(i) for i in row]
    parts.insert(axis, columns)
    return f"{name}[{', '.join(parts)}]"


def _element(name: str, index: Index) -> str:
    return f"{name}[{', '.join(map(str, index))}]" if index else name


def _columns(x_row: np.ndarray, around: list[int], limit: int) -> list[int]:
    n = x_row.size
    if n <= limit:
        return list(range(n))
    shown = {j for centre in around or [0]
             for j in range(max(0, centre - WINDOW), min(n, centre + WINDOW + 1))}
    wide = x_row.astype(np.float64)
    finite = np.flatnonzero(np.isfinite(wide))
    if finite.size:
        shown.add(int(finite[np.argmax(wide[finite])]))
    return sorted(shown)


def _runs(columns: list[int]) -> list[list[int]]:
    runs: list[list[int]] = []
    for j in columns:
        if runs and runs[-1][-1] == j - 1:
            runs[-1].append(j)
        else:
            runs.append([j])
    return runs


def _print_values(name: str, values: np.ndarray, row: Index, axis: int, columns: list[int]) -> None:
    n = values.size
    for run in _runs(columns) or [[]]:
        whole = len(run) == n
        spec = ":" if whole else str(run[0]) if len(run) == 1 else f"{run[0]}:{run[-1] + 1}"
        label = f"{_name(name, row, axis, spec)} = "
        if len(run) == 1 and not whole:
            print(label + text(values[run[0]]))
            continue
        # Wrapped between values only: a value and its bits stay on one line.
        lines = [label + "["]
        for k, j in enumerate(run):
            item = text(values[j]) + (", " if k < len(run) - 1 else "]")
            if len(lines[-1]) + len(item.rstrip()) > WIDTH and not lines[-1].endswith("["):
                lines[-1] = lines[-1].rstrip()
                lines.append(" " * (len(label) + 1))
            lines[-1] += item
        print("\n".join(lines) if run else label + "[]")


def _rows(x: np.ndarray, axis: int, focus: list[Index]) -> list[tuple[Index, list[int]]]:
    """The distinct rows of the focus elements, at most MAX_ROWS, each with the columns of those elements."""
    rows: dict[Index, list[int]] = {}
    for index in focus:
        row, column = _row(index, x.ndim, axis)
        rows.setdefault(row, []).extend([] if column is None else [column])
    return list(rows.items())[:MAX_ROWS]


def show_input(x: np.ndarray, g: np.ndarray | None, axis: int, worst: Index | None) -> None:
    """Print x (and the cotangent g): whole when small, else the row of the run's worst element."""
    axis %= x.ndim
    print(f"input x: {x.dtype.name}, shape {x.shape}, reduced along axis {axis}")
    if x.size <= SMALL_INPUT:
        rows = [(row, []) for row in np.ndindex(*(x.shape[:axis] + x.shape[axis + 1:]))]
    else:
        rows = _rows(x, axis, [worst] if worst is not None else [])
        if not rows:
            print("  (too big to print whole, and the run recorded no element to show the row of)")
    for row, around in rows:
        x_row = _line(x, row, axis)
        columns = _columns(x_row, around, SMALL_INPUT)
        if len(columns) < x_row.size:
            print(f"  ({_name('x', row, axis, ':')} has {x_row.size} elements; shown: around the worst "
                  "element and at the row's max)")
        _print_values("x", x_row, row, axis, columns)
        if g is not None and g.shape == x.shape:
            _print_values("g", _line(g, row, axis), row, axis, columns)
        elif g is not None:
            print(f"{_element('g', row)} = {text(g[row])}  (the cotangent of the row's output)")


def _wrapped(line: str) -> None:
    print(textwrap.fill(line, WIDTH, subsequent_indent="    ", break_on_hyphens=False,
                        break_long_words=False))


def _error(comparison: Comparison, at: Index) -> str:
    if comparison.measured[at]:
        return f"{comparison.ulp[at]:.4g}"
    named = [name for name in CATEGORIES if comparison.categories[name][at]]
    return named[0] if named else "-"


def show_output(op: str, x: np.ndarray, g: np.ndarray | None, got: np.ndarray, reference: Reference,
                verdict: dict, policy: Policy, flush: bool, axis: int, worst_in_run: Index | None) -> None:
    """Print, in the rows of the run's worst element, today's worst and a semantic difference, what the
    backend returned beside the exact value rounded to the dtype, each element's ULP error and budget
    (the judge's own metrics and budget); then the worst element with its unrounded exact value."""
    axis %= x.ndim
    comparison = compare(reference, got, flush)
    budgets = budget_ulp(reference, policy.budget, flush)
    worst = verdict["metrics"].get("worst")
    now = tuple(worst["index"]) if worst else None
    focus = [index for index in (worst_in_run, now) if index is not None]
    focus += [tuple(int(i) for i in np.argwhere(comparison.categories[name])[0])
              for name in verdict["semantic"]]
    per_row = op_named(op).output == PER_ROW
    full_g = g is not None and g.shape == x.shape
    for row, around in _rows(x, axis, focus):
        if per_row:
            _wrapped(f"{op}({_name('x', row, axis, ':')}): got {text(got[row])}, exact in {x.dtype.name} "
                     f"{text(reference.rounded[row])}, error {_error(comparison, row)} ULP, budget "
                     f"{budgets[row]:.4g} ULP")
            continue
        table = [["j", "x", *(["g"] if full_g else []), "got", f"exact in {x.dtype.name}", "ULP error",
                  "budget", ""]]
        shown = _columns(_line(x, row, axis), around, LONG_ROW)
        for j in shown:
            if table[-1][0].isdigit() and int(table[-1][0]) < j - 1:
                table.append(["..."] + [""] * (len(table[0]) - 1))
            at = (*row[:axis], j, *row[axis:])
            mark = "<- worst" if at == now else "<- worst in the run" if at == worst_in_run else ""
            table.append([str(j), text(x[at]), *([text(g[at])] if full_g else []), text(got[at]),
                          text(reference.rounded[at]), _error(comparison, at), f"{budgets[at]:.4g}", mark])
        cotangent = f", cotangent {_element('g', row)} = {text(g[row])}" \
            if g is not None and not full_g else ""
        print(f"{op} along {_name('x', row, axis, ':')}{cotangent}:")
        widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
        for line in table:
            cells = (cell.ljust(width) for cell, width in zip(line, widths, strict=True))
            print(("  " + "  ".join(cells)).rstrip())
    if worst:
        at = tuple(worst["index"])
        print(f"worst element {list(at)}: {worst['ulp']:.4g} ULP, its budget "
              f"{verdict['bound']['budget_ulp']:.4g} ULP (the largest error for its budget)")
        _wrapped(f"  got {text(got[at])}, exact {worst['exact']}, correctly rounded to {x.dtype.name} "
                 f"{text(reference.rounded[at])}")


def measure_invariants(target: Target, backend: Backend, policy: Policy, x: np.ndarray, axis: int,
                       seed: int) -> dict[str, dict]:
    """The op's invariants measured as the suite measures them (suites.invariants.measure)."""
    measured: dict[str, dict] = {}
    # Overflow and inf - inf are what the extreme cases are for: numpy need not warn.
    with np.errstate(all="ignore"):
        measure(target, backend, policy, x, axis, seed, measured)
    return {name: measured[name] for name in OP_INVARIANTS[target.op]}


def show_invariants(invariants: dict[str, dict]) -> list[str]:
    """Print each invariant, its value and budget; return the messages of those broken."""
    for name, entry in invariants.items():
        state = {True: "holds", False: "BROKEN", None: "does not apply"}[entry["ok"]]
        amount = f": {entry['value']:.4g} {entry['units']}, budget {entry['budget']:.4g}" \
            if entry.get("value") is not None and entry.get("budget") is not None else ""
        _wrapped(f"{name} {state}{amount}" + (f" ({entry['note']})" if entry.get("note") else ""))
    return [entry["message"] for entry in invariants.values() if entry["ok"] is False]
