"""What a reproducer script (softmax_suite.runner.reproduce) shows when it runs: the input, and what the
backend returned beside the exact values in the rows that matter. The verdict is never made here: the
script judges with the suite's own code (suites.judging.judge, suites.invariants.measure).

A loss op's call (cross_entropy and its VJP) takes options: its targets, reduction and the loss's own
(softmax_suite.protocol); with them, each row shown says its target and the target's logit, and a
reduced loss (one value, no row of its own) is shown as that value, its input by the rows of the
largest losses."""

from __future__ import annotations

import math
import textwrap
from typing import Any

import numpy as np

from softmax_suite.backends.registry import Unavailable
from softmax_suite.ops import LOSS, PER_ROW, is_vjp, op_named, shaped
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
    if array.dtype.kind in "iub":  # a loss's class indices
        return repr(int(array))
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
    options attention's scale and mask (softmax_suite.oracle.scaled) or a loss's target, reduction
    and options (softmax_suite.oracle.losses)."""
    if not is_vjp(op):
        return cache.reference(op, x, axis, **options)
    if op_named(op).cotangent == LOSS:
        # The oracle takes a loss's cotangent as the per-row one, a reduced loss's scalar as its
        # first element (softmax_suite.ops.cotangent_of): g on every row reads the same for both.
        per_row = np.array(np.broadcast_to(np.asarray(g, dtype=x.dtype), shaped(PER_ROW, x.shape, axis)))
        return cache.reference(op, x, axis, (np.zeros_like(x), per_row), **options)
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


def exact_text(reference: Reference, at: Index) -> str:
    """The unrounded exact value of an element, as the judge writes it (shortest float64 repr)."""
    mant = float(reference.mant[at])
    if not math.isfinite(mant):
        return repr(mant)
    return repr(math.ldexp(mant + float(reference.mant_lo[at]), int(reference.scale[at])))


def _loss(options: dict | None) -> dict | None:
    """A loss op's keyword arguments among options (they hold its targets), else None."""
    return options if options and "target" in options else None


def _target(loss: dict, row: Index) -> int:
    return int(np.asarray(loss["target"])[row])


def _kept(loss: dict, t: int, classes: int) -> bool:
    """Whether target t is a class the loss reads (not the ignore_index, and in range)."""
    return t != loss.get("ignore_index", -100) and 0 <= t < classes


def _target_line(loss: dict, x: np.ndarray, row: Index, axis: int) -> str:
    """The row's target, and the logit (and class weight) it picks."""
    t = _target(loss, row)
    head = f"{_element('target', row)} = {t}"
    if t == loss.get("ignore_index", -100):
        return f"{head}: the ignore_index, the row is left out of the loss"
    if not _kept(loss, t, x.shape[axis]):
        return f"{head}: not a class of the {x.shape[axis]}"
    at = (*row[:axis], t, *row[axis:])
    line = f"{head}, its logit {_element('x', at)} = {text(x[at])}"
    if loss.get("weight") is not None:
        line += f", its weight {_element('weight', (t,))} = {text(np.asarray(loss['weight'])[t])}"
    return line


def _with_target(loss: dict | None, x: np.ndarray, row: Index, axis: int, around: list[int]) -> list[int]:
    """The columns to show around in a row: those given, and the row's target where it has one."""
    if loss is None:
        return around
    t = _target(loss, row)
    return [*around, t] if _kept(loss, t, x.shape[axis]) else around


def _loss_arguments(loss: dict, x: np.ndarray, axis: int) -> None:
    """Print what a loss call takes beside x: the targets, the reduction and the options."""
    target = np.asarray(loss["target"])
    parts = [f"targets: {target.size} class indices ({target.dtype.name}), one per row",
             f"reduction {loss['reduction']!r}"]
    if "ignore_index" in loss:
        ignored = int(np.sum(target == loss["ignore_index"]))
        parts.append(f"ignore_index {loss['ignore_index']} ({ignored} rows ignored)")
    if "label_smoothing" in loss:
        parts.append(f"label_smoothing {loss['label_smoothing']!r}")
    weight = loss.get("weight")
    if weight is not None:
        weight = np.asarray(weight)
        zero = int(np.sum(weight == 0))
        parts.append(f"class weights: {weight.size} in {weight.dtype.name}, {zero} of them 0")
    _wrapped("; ".join(parts))
    if target.size <= SMALL_INPUT:
        _print_values("target", target, (), 0, list(range(target.size)))
    if weight is not None and weight.size <= SMALL_INPUT:
        _print_values("weight", weight, (), 0, list(range(weight.size)))


def largest_loss_rows(x: np.ndarray, axis: int, loss: dict) -> list[Index]:
    """The rows of the largest losses (a NaN or inf first; ignored rows last), at most MAX_ROWS: where
    a reduced loss is most likely to go wrong. Picked in float64 arithmetic, not the oracle's."""
    wide = np.moveaxis(x.astype(np.float64), axis, -1)
    classes = wide.shape[-1]
    target = np.asarray(loss["target"]).reshape(wide.shape[:-1])
    with np.errstate(all="ignore"):
        top = np.max(wide, axis=-1, keepdims=True) if classes else np.zeros((*wide.shape[:-1], 1))
        top = np.where(np.isfinite(top), top, 0.0)
        logsumexp = top[..., 0] + np.log(np.sum(np.exp(wide - top), axis=-1))
        picked = np.take_along_axis(wide, np.clip(target, 0, max(classes - 1, 0))[..., None], axis=-1)[..., 0]
        losses = logsumexp - picked
    kept = (target != loss.get("ignore_index", -100)) & (target >= 0) & (target < classes)
    key = np.where(~kept, -np.inf, np.where(np.isnan(losses), np.inf, losses))
    order = np.argsort(-key.reshape(-1), kind="stable")[:MAX_ROWS]
    return [tuple(int(i) for i in np.unravel_index(k, key.shape)) for k in order]


def _rows(x: np.ndarray, axis: int, focus: list[Index]) -> list[tuple[Index, list[int]]]:
    """The distinct rows of the focus elements, at most MAX_ROWS, each with the columns of those elements."""
    rows: dict[Index, list[int]] = {}
    for index in focus:
        row, column = _row(index, x.ndim, axis)
        rows.setdefault(row, []).extend([] if column is None else [column])
    return list(rows.items())[:MAX_ROWS]


def show_input(x: np.ndarray, g: np.ndarray | None, axis: int, worst: Index | None,
               options: dict | None = None) -> None:
    """Print x (and the cotangent g): whole when small, else the row of the run's worst element; with
    a loss's options, its targets too, and for a reduced loss (or none recorded) the rows of the
    largest losses."""
    axis %= x.ndim
    loss = _loss(options)
    print(f"input x: {x.dtype.name}, shape {x.shape}, reduced along axis {axis}")
    if loss is not None:
        _loss_arguments(loss, x, axis)
    if g is not None and g.ndim == 0:
        print(f"g = {text(g)}  (the cotangent of the reduced loss)")
    if x.size <= SMALL_INPUT:
        rows = [(row, []) for row in np.ndindex(*(x.shape[:axis] + x.shape[axis + 1:]))]
    elif loss is not None and x.ndim > 1 and not worst:
        # A reduced loss's worst is the loss itself, which has no row.
        rows_of = math.prod(x.shape[:axis] + x.shape[axis + 1:])
        print(f"  (a loss over {rows_of} rows of {x.shape[axis]}; shown: the rows of the largest losses, "
              "picked in float64)")
        rows = _rows(x, axis, largest_loss_rows(x, axis, loss))
    else:
        rows = _rows(x, axis, [worst] if worst is not None else [])
        if not rows:
            print("  (too big to print whole, and the run recorded no element to show the row of)")
    for row, around in rows:
        x_row = _line(x, row, axis)
        columns = _columns(x_row, _with_target(loss, x, row, axis, around), SMALL_INPUT)
        if len(columns) < x_row.size:
            near = [*(["the worst element"] if around else []), *(["the target"] if loss is not None else [])]
            print(f"  ({_name('x', row, axis, ':')} has {x_row.size} elements; shown: around "
                  f"{' and '.join(near) or 'the start'} and at the row's max)")
        _print_values("x", x_row, row, axis, columns)
        if g is not None and g.shape == x.shape:
            _print_values("g", _line(g, row, axis), row, axis, columns)
        elif g is not None and g.ndim:
            print(f"{_element('g', row)} = {text(g[row])}  (the cotangent of the row's output)")
        if loss is not None:
            print(_target_line(loss, x, row, axis))


def _wrapped(line: str) -> None:
    print(textwrap.fill(line, WIDTH, subsequent_indent="    ", break_on_hyphens=False,
                        break_long_words=False))


def _error(comparison: Comparison, at: Index) -> str:
    if comparison.measured[at]:
        return f"{comparison.ulp[at]:.4g}"
    named = [name for name in CATEGORIES if comparison.categories[name][at]]
    return named[0] if named else "-"


def show_output(op: str, x: np.ndarray, g: np.ndarray | None, got: np.ndarray, reference: Reference,
                verdict: dict, policy: Policy, flush: bool, axis: int, worst_in_run: Index | None,
                options: dict | None = None) -> None:
    """Print, in the rows of the run's worst element, today's worst and a semantic difference, what the
    backend returned beside the exact value rounded to the dtype, each element's ULP error and budget
    (the judge's own metrics and budget); then the worst element with its unrounded exact value, and
    the budget's formula. A loss's rows say their targets; a reduced loss is its one value."""
    axis %= x.ndim
    loss = _loss(options)
    comparison = compare(reference, got, flush)
    budgets = budget_ulp(reference, policy.budget, flush)
    worst = verdict["metrics"].get("worst")
    now = tuple(worst["index"]) if worst else None
    per_row = op_named(op).output in (PER_ROW, LOSS)
    if per_row and got.ndim == 0 and x.ndim > 1:
        # A reduced loss: one value, of no row.
        what = f"reduction={loss['reduction']!r}" if loss is not None else "reduced"
        _wrapped(f"{op}(x, {what}): got {text(got)}, exact in {x.dtype.name} {text(reference.rounded)}, "
                 f"error {_error(comparison, ())} ULP, budget {budgets[()]:.4g} ULP")
        if not worst:  # else the worst's lines below say it
            _wrapped(f"  exact {exact_text(reference, ())}")
        focus = []
    else:
        focus = [index for index in (worst_in_run, now) if index is not None]
        focus += [tuple(int(i) for i in np.argwhere(comparison.categories[name])[0])
                  for name in verdict["semantic"]]
    full_g = g is not None and g.shape == x.shape
    for row, around in _rows(x, axis, focus):
        if per_row:
            _wrapped(f"{op}({_name('x', row, axis, ':')}): got {text(got[row])}, exact in {x.dtype.name} "
                     f"{text(reference.rounded[row])}, error {_error(comparison, row)} ULP, budget "
                     f"{budgets[row]:.4g} ULP")
            if loss is not None:
                print(f"  {_target_line(loss, x, row, axis)}")
            continue
        table = [["j", "x", *(["g"] if full_g else []), "got", f"exact in {x.dtype.name}", "ULP error",
                  "budget", ""]]
        shown = _columns(_line(x, row, axis), _with_target(loss, x, row, axis, around), LONG_ROW)
        target = _target(loss, row) if loss is not None else None
        for j in shown:
            if table[-1][0].isdigit() and int(table[-1][0]) < j - 1:
                table.append(["..."] + [""] * (len(table[0]) - 1))
            at = (*row[:axis], j, *row[axis:])
            marks = ["worst" if at == now else "worst in the run" if at == worst_in_run else "",
                     "target" if j == target else ""]
            mark = "<- " + ", ".join(m for m in marks if m) if any(marks) else ""
            table.append([str(j), text(x[at]), *([text(g[at])] if full_g else []), text(got[at]),
                          text(reference.rounded[at]), _error(comparison, at), f"{budgets[at]:.4g}", mark])
        if g is None or full_g:
            cotangent = ""
        else:
            cotangent = f", cotangent g = {text(g)}" if g.ndim == 0 else \
                f", cotangent {_element('g', row)} = {text(g[row])}"
        print(f"{op} along {_name('x', row, axis, ':')}{cotangent}:")
        widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
        for line in table:
            cells = (cell.ljust(width) for cell, width in zip(line, widths, strict=True))
            print(("  " + "  ".join(cells)).rstrip())
        if loss is not None:
            print(f"  {_target_line(loss, x, row, axis)}")
    if worst:
        at = tuple(worst["index"])
        what = "the loss" if not at and x.ndim > 1 else f"worst element {list(at)}"
        print(f"{what}: {worst['ulp']:.4g} ULP, its budget "
              f"{verdict['bound']['budget_ulp']:.4g} ULP (the largest error for its budget)")
        _wrapped(f"  got {text(got[at])}, exact {worst['exact']}, correctly rounded to {x.dtype.name} "
                 f"{text(reference.rounded[at])}")
    formula = (verdict.get("bound") or {}).get("formula")
    if formula:
        _wrapped(f"{op}'s budget (softmax_suite.oracle.budget, in units u of {x.dtype.name}): {formula}")


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
