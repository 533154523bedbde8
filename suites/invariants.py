"""Invariants: properties every correct softmax, log_softmax and logsumexp keeps (INVARIANTS), each
measured on one backend, dtype and case against the slack that the per-element error budgets allow.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import as_strided

from softmax_suite.formats import Format, format_of
from softmax_suite.ops import op_named, output_shape
from softmax_suite.oracle import cache
from softmax_suite.oracle.exact import Reference
from softmax_suite.oracle.rounding import ulp
from softmax_suite.protocol import Backend
from softmax_suite.suites import loss_invariants
from softmax_suite.suites.accuracy import (
    BackendFailure,
    Target,
    base_record,
    bits_digest,
    call_backend,
    case_input,
    case_options,
    flushes,
    why_not_case,
)
from softmax_suite.suites.cases import CASES
from softmax_suite.suites.deviations import Deviation
from softmax_suite.suites.judging import allowance, judged
from softmax_suite.suites.policy import Policy

CALLS = 3
INVARIANTS: dict[str, str] = {
    "sum_to_one": "sum_j y_j = 1, within the sum of the element budgets (in ULPs of 1)",
    "shift_invariance": "op(x + c) = op(x), and logsumexp(x + c) = logsumexp(x) + c, for an exact shift c",
    "permutation_equivariance": "op(Px) = P op(x) (logsumexp(Px) = logsumexp(x)) for a fixed permutation P",
    "argmax_preserved": "the largest output of a row is at an argmax of x (any of tied ones)",
    "nonpositive": "log_softmax <= 0",
    "exp_agrees_with_softmax": "exp(log_softmax(x)) = softmax(x), both from the backend",
    "at_least_max": "logsumexp(x) >= max x",
    "deterministic": f"{CALLS} calls on the same input return the same bits (NaN = NaN)",
    **loss_invariants.INVARIANTS,
}
OP_INVARIANTS: dict[str, tuple[str, ...]] = {
    "softmax": ("sum_to_one", "shift_invariance", "permutation_equivariance", "argmax_preserved",
                "deterministic"),
    "log_softmax": ("shift_invariance", "permutation_equivariance", "argmax_preserved", "nonpositive",
                    "exp_agrees_with_softmax", "deterministic"),
    "logsumexp": ("shift_invariance", "permutation_equivariance", "at_least_max", "deterministic"),
    "cross_entropy": ("nonnegative", "agrees_with_log_softmax", "gradient_sums_to_0", "deterministic"),
}
# Shifts tried in order; each is a number of every format. The first that keeps every finite entry
# exact is used; when none does (a random row spans more binades than p bits hold), x is first
# rounded to a grid on which the shift is exact (choose_shift).
SHIFTS: tuple[float, ...] = (1.0, -1.0, 2.0, 0.5, 8.0, -8.0, 64.0)
# The arXiv number of Blanchard, D. J. Higham and N. J. Higham (2021): any fixed seed would do.
PERMUTATION_SEED = 1909_03469


@dataclass(frozen=True)
class Rows:
    """The row view of an input and its outputs: the reduction axis last, lead dimensions flattened."""

    axis: int
    lead: tuple[int, ...]
    n: int

    @classmethod
    def of(cls, x: np.ndarray, axis: int) -> Rows:
        axis = axis % max(x.ndim, 1)
        return cls(axis, tuple(s for i, s in enumerate(x.shape) if i != axis), x.shape[axis])

    def rows(self, a: np.ndarray) -> np.ndarray:
        """(rows, n) for an input or element-wise output, (rows,) for a reduced one (logsumexp)."""
        count = math.prod(self.lead)
        if a.ndim == len(self.lead):
            return a.reshape(count)
        return np.moveaxis(a, self.axis, -1).reshape(count, self.n)

    def unrows(self, rows: np.ndarray) -> np.ndarray:
        return np.moveaxis(rows.reshape((*self.lead, self.n)), -1, self.axis)

    def index(self, row: int, column: int | None = None) -> list[int]:
        """The index in the original array of a row (and a column along the axis)."""
        index = [int(i) for i in np.unravel_index(row, self.lead)] if self.lead else []
        if column is not None:
            index.insert(self.axis, int(column))
        return index


Call = Callable[[str, np.ndarray, str], np.ndarray]


def run(target: Target, backend: Backend, settings: Policy,
        deviations: tuple[Deviation, ...] = ()) -> dict:
    """Measure the invariants of target.op for backend on the target's case; the result record.

    Each is measured over the rows whose entries are all finite (special rows are the semantics
    table's business), except `deterministic`, which covers every element. An element-wise
    invariant records the element that comes closest to (or goes furthest past) its budget: its
    `value` and `budget`, with ok = value <= budget, and `max_value`, the largest difference
    anywhere. A count has a budget of 0. ok is None where an invariant does not apply; `note`
    says why. A NaN fails the equalities (sum, shift, permutation, exp) but not the orderings,
    which cannot compare it: NaN for finite input is the accuracy check's finding.
    """
    case = CASES[target.case]
    record = base_record(target, case, backend)
    reason = why_not_case(target.op, case) or backend.why_unsupported(target.op, target.dtype)
    if reason:
        return {**record, "status": "unsupported", "message": reason}
    x = case_input(target.case, target.dtype)
    record["shape"] = list(x.shape)
    record["input_sha256"] = bits_digest(x)
    measured: dict[str, dict] = {}
    try:
        # Overflow and inf - inf are what the extreme cases are for: numpy need not warn.
        with np.errstate(all="ignore"):
            measure(target, backend, settings, x, case.axis, case.resolved_seed, measured)
    except BackendFailure as failure:
        record["invariants"] = measured
        return judged({**record, "status": "error", "failure": failure.kind, "message": str(failure),
                        "traceback": failure.trace}, deviations)
    record["invariants"] = {name: measured[name] for name in OP_INVARIANTS[target.op]}
    failed = [entry["message"] for entry in record["invariants"].values() if entry["ok"] is False]
    return judged({**record, "status": "fail" if failed else "pass",
                    "failure": "invariant" if failed else None, "message": "; ".join(failed)}, deviations)


def caller(backend: Backend, device: str, axis: int, x: np.ndarray, limit: float = 0.0,
           options: dict | None = None) -> Call:
    """call(op, input, label): the backend's op on the input, back as numpy, checked for x's shape
    (less the axis for a reduced op: the op table) and dtype, within limit seconds (0: none); any failure is a
    BackendFailure naming the call. A loss op is called with a loss case's options."""
    def call(op: str, values: np.ndarray, label: str) -> np.ndarray:
        given = options if op_named(op).loss else None
        expected = output_shape(op, x.shape, axis, (given or {}).get("reduction", "none"))
        return call_backend(backend, op, device, axis, [values], expected, label, limit, given)

    return call


def measure(target: Target, backend: Backend, settings: Policy, x: np.ndarray, axis: int, seed: int,
            into: dict[str, dict]) -> None:
    """Fill `into` with the op's invariants, one at a time (what was measured survives an error)."""
    op, fmt = target.op, format_of(x.dtype)
    loss = op_named(op).loss
    call = caller(backend, target.device, axis, x, settings.case_timeout,
                  case_options(target.case, target.dtype) if loss else None)
    rows = Rows.of(x, axis)
    out = call(op, x, f"{op}(x)")
    again = [call(op, x, f"{op}(x), call {k}") for k in range(2, CALLS + 1)]
    into["deterministic"] = deterministic(out, again)
    if loss:
        loss_invariants.measure(target, backend, settings, x, axis, out, into, not_applicable)
        return
    xr = rows.rows(x.astype(np.float64))
    finite = np.flatnonzero(np.isfinite(xr).all(axis=-1)) if rows.n else np.array([], dtype=np.int64)
    names = [name for name in OP_INVARIANTS[op] if name != "deterministic"]
    if not finite.size:
        why = "rows of length 0" if not rows.n else "no row whose entries are all finite"
        into.update({name: not_applicable(_UNITS[name], why) for name in names})
        return
    reference = cache.reference(op, x, axis)
    flush = flushes(backend, target, settings)
    q, allowed = allowance(reference, settings, flush)
    if op == "softmax":
        into["sum_to_one"] = sum_to_one(rows, finite, rows.rows(out), rows.rows(q), rows.rows(allowed), fmt)
    if op != "logsumexp":
        into["argmax_preserved"] = argmax_preserved(rows, finite, xr, rows.rows(out))
    if op == "log_softmax":
        into["nonpositive"] = nonpositive(rows, finite, rows.rows(out))
        into["exp_agrees_with_softmax"] = exp_agrees_with_softmax(
            backend, call, settings, flush, x, axis, finite, out, reference)
    if op == "logsumexp":
        into["at_least_max"] = at_least_max(rows, finite, xr, rows.rows(out), fmt, flush)
    into["shift_invariance"] = shift_invariance(op, call, settings, flush, x, rows, finite, out, reference)
    into["permutation_equivariance"] = permutation_equivariance(
        op, call, x, rows, finite, out, q, allowed, np.random.default_rng([PERMUTATION_SEED, seed]))


_UNITS = {"sum_to_one": "ulp of 1", "shift_invariance": "ulp", "permutation_equivariance": "ulp",
          "argmax_preserved": "rows", "nonpositive": "elements", "exp_agrees_with_softmax": "ulp",
          "at_least_max": "rows", "deterministic": "elements", **loss_invariants.UNITS}


def not_applicable(units: str, note: str) -> dict:
    return {"value": None, "budget": None, "units": units, "ok": None, "note": note}


def ulps(got: np.ndarray, want: np.ndarray, exponent: np.ndarray) -> np.ndarray:
    """|got - want| in units of 2^exponent: 0 where they are equal (also both NaN, or the same
    infinity), inf where only one is a number."""
    a, b = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    same = (a == b) | (np.isnan(a) & np.isnan(b))
    diff = np.abs(a - b)
    return np.ldexp(np.where(same, 0.0, np.where(np.isfinite(diff), diff, np.inf)), -exponent)


def same_bits(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Element-wise bit equality, any two NaNs equal (their sign and payload carry no meaning)."""
    raw = np.dtype(f"u{a.dtype.itemsize}")
    nan = np.isnan(a.astype(np.float64)) & np.isnan(b.astype(np.float64))
    return (a.view(raw) == b.view(raw)) | nan


def _worst(diff: np.ndarray, allowed: np.ndarray) -> tuple[tuple, float]:
    """The index where diff / allowed is largest, and that ratio (inf past an inf budget)."""
    ratio = np.where(diff == 0, 0.0, diff / allowed)
    ratio = np.where(np.isnan(ratio), np.inf, ratio)
    flat = int(np.argmax(ratio))
    return np.unravel_index(flat, ratio.shape), float(ratio.flat[flat])


def _compared(diff: np.ndarray, allowed: np.ndarray, where: Callable[[tuple], list[int]],
              describe: Callable[[tuple, str], str], **extra: Any) -> dict:
    """The entry of an element-wise comparison: value and budget at the worst element."""
    at, ratio = _worst(diff, allowed)
    entry = {"value": float(diff[at]), "budget": float(allowed[at]), "max_value": float(diff.max()),
             "units": "ulp", "ok": ratio <= 1, "index": where(at), **extra}
    if not entry["ok"]:
        entry["message"] = describe(at, f"{entry['value']:.4g} ULP, beyond its budget of "
                                        f"{entry['budget']:.4g}")
    return entry


def _number(value: Any) -> str:
    return repr(float(value))


def deterministic(out: np.ndarray, again: list[np.ndarray]) -> dict:
    differ = np.zeros(out.shape, dtype=bool)
    for other in again:
        differ |= ~same_bits(out, other)
    count = int(differ.sum())
    entry = {"value": count, "budget": 0, "units": "elements", "ok": count == 0}
    if count:
        at = tuple(int(i) for i in np.argwhere(differ)[0])
        entry["index"] = list(at)
        values = ", then ".join(_number(a[at]) for a in (out, *again))
        entry["message"] = (f"deterministic: {count} of {out.size} elements differ between {CALLS} "
                            f"calls on the same input, e.g. at index {list(at)}: {values}")
    return entry


def sum_to_one(rows: Rows, finite: np.ndarray, y: np.ndarray, q: np.ndarray, allowed: np.ndarray,
               fmt: Format) -> dict:
    """max over rows of |sum_j y_j - 1|, summed exactly (fsum), in ULPs of 1 (2^(1-p)); the budget
    of a row is the sum of its elements' budgets, in the same unit."""
    one = math.ldexp(1.0, 1 - fmt.p)
    values = y[finite].astype(np.float64)
    excess = np.array([math.fsum([*row.tolist(), -1.0]) if np.isfinite(row).all() else math.inf
                       for row in values])
    value = np.abs(excess) / one
    row_budget = np.ldexp(allowed[finite], q[finite]).sum(axis=-1) / one
    (worst,), ratio = _worst(value, row_budget)
    entry = {"value": float(value[worst]), "budget": float(row_budget[worst]),
             "max_value": float(value.max()), "units": "ulp of 1", "ok": ratio <= 1,
             "index": rows.index(int(finite[worst]))}
    if not entry["ok"]:
        entry["message"] = (f"sum_to_one: row {entry['index']} sums to 1 + {excess[worst]:.4g} = "
                            f"{entry['value']:.4g} ULP of 1, beyond its budget of {entry['budget']:.4g}")
    return entry


def argmax_preserved(rows: Rows, finite: np.ndarray, xr: np.ndarray, out: np.ndarray) -> dict:
    x, o = xr[finite], out[finite].astype(np.float64)
    at_max = x == x.max(axis=-1, keepdims=True)
    best = np.max(np.where(at_max, o, -np.inf), axis=-1, keepdims=True)
    bad = np.flatnonzero(np.any(o > best, axis=-1))
    entry = {"value": int(bad.size), "budget": 0, "units": "rows", "ok": not bad.size}
    if bad.size:
        r = int(bad[0])
        top_out, top_x = int(np.argmax(o[r])), int(np.argmax(x[r]))
        entry["index"] = rows.index(int(finite[r]))
        entry["message"] = (
            f"argmax_preserved: in {bad.size} of {finite.size} rows the largest output is not at an "
            f"argmax of x, e.g. {_number(o[r, top_out])} at index {rows.index(int(finite[r]), top_out)} "
            f"where x's max {_number(x[r, top_x])} is at {rows.index(int(finite[r]), top_x)} "
            f"(output {_number(o[r, top_x])})")
    return entry


def nonpositive(rows: Rows, finite: np.ndarray, out: np.ndarray) -> dict:
    z = out[finite].astype(np.float64)
    positive = np.argwhere(z > 0)
    entry = {"value": len(positive), "budget": 0, "units": "elements", "ok": not len(positive)}
    if len(positive):
        r, j = (int(i) for i in positive[0])
        entry["index"] = rows.index(int(finite[r]), j)
        entry["message"] = (f"nonpositive: {len(positive)} log_softmax values > 0, e.g. "
                            f"{_number(z[r, j])} at index {entry['index']}")
    return entry


def at_least_max(rows: Rows, finite: np.ndarray, xr: np.ndarray, out: np.ndarray, fmt: Format,
                 flush: bool) -> dict:
    """Rows with logsumexp below max x. For a backend measured to flush subnormals to zero, a
    positive subnormal max x may be read as 0 (jax on CPU returns logsumexp([2^-149]) = 0)."""
    top, lse = xr[finite].max(axis=-1), out[finite].astype(np.float64)
    if flush:
        top = np.where(np.abs(top) < fmt.min_normal, np.minimum(top, 0.0), top)
    below = np.flatnonzero(lse < top)
    entry = {"value": int(below.size), "budget": 0, "units": "rows", "ok": not below.size}
    if below.size:
        r = int(below[0])
        entry["index"] = rows.index(int(finite[r]))
        entry["message"] = (f"at_least_max: {below.size} rows with logsumexp below max x, e.g. "
                            f"{_number(lse[r])} < {_number(top[r])} at index {entry['index']}")
    return entry


def exp_agrees_with_softmax(backend: Backend, call: Call, settings: Policy, flush: bool, x: np.ndarray,
                            axis: int, finite: np.ndarray, z: np.ndarray, reference: Reference) -> dict:
    """|exp(z_j^) - y_j^| in ULPs of the exact y_j, with y^ the backend's softmax. An error e_z in z_j
    moves exp(z_j) by at most y_j expm1(|e_z|); so the budget is y_j expm1(E_z) / ulp(y_j) plus
    softmax's own, E_z being log_softmax's absolute budget. exp is taken in float64: exact enough
    for the narrower formats, and for float64 itself within 1 ULP (libm's exp): +1 there."""
    reason = backend.why_unsupported("softmax", str(x.dtype))
    if reason:
        return not_applicable("ulp", f"no softmax to compare with: {reason}")
    try:
        y = call("softmax", x, "softmax(x)")
    except BackendFailure as failure:
        return not_applicable("ulp", f"the backend's softmax failed ({failure}); its own record says more")
    rows, fmt = Rows.of(x, axis), format_of(x.dtype)
    y_reference = cache.reference("softmax", x, axis)
    q_y, allowed_y = allowance(y_reference, settings, flush)
    q_z, allowed_z = allowance(reference, settings, flush)
    error_z = np.ldexp(allowed_z, q_z)
    relative = np.ldexp(np.abs(y_reference.mant), y_reference.scale - q_y)  # |y| / ulp(y)
    spread = np.where(relative == 0, 0.0, np.expm1(error_z) * relative)
    allowed = spread + allowed_y + (1.0 if fmt.name == "float64" else 0.0)
    z_rows = rows.rows(z)[finite].astype(np.float64)
    if not fmt.infinity:
        # A log_softmax below -max rounds to NaN in a format without -inf (float8_e4m3fn), as the
        # policy says: where the exact value is that far down its exp is 0, as -inf's would be.
        exact = rows.rows(np.ldexp(reference.mant, np.clip(reference.scale, -2000, 2000)))[finite]
        z_rows = np.where(np.isnan(z_rows) & (exact < -fmt.max), -np.inf, z_rows)
    got = np.exp(z_rows)
    want = rows.rows(y)[finite]
    diff = ulps(got, want, rows.rows(q_y)[finite])

    def describe(at: tuple, amount: str) -> str:
        return (f"exp_agrees_with_softmax: exp(log_softmax) = {_number(got[at])} and softmax = "
                f"{_number(want[at])} differ by {amount} at index {rows.index(int(finite[at[0]]), at[1])}")

    return _compared(diff, rows.rows(allowed)[finite], lambda at: rows.index(int(finite[at[0]]), at[1]),
                     describe)


def _exact_after_shift(values: np.ndarray, c: float, fmt: Format) -> np.ndarray:
    """Per entry: x + c is computed exactly in float64 (TwoSum's error term is 0), is finite and
    is a number of the format."""
    total = values + c
    back = total - values
    error = (values - (total - back)) + (c - back)
    return (error == 0) & np.isfinite(total) & (total.astype(fmt.np_dtype).astype(np.float64) == total)


def _representable(values: np.ndarray, fmt: Format) -> np.ndarray:
    return np.isfinite(values) & (values.astype(fmt.np_dtype).astype(np.float64) == values)


def choose_shift(values: np.ndarray, fmt: Format) -> tuple[float, float | None] | None:
    """(c, grid): the first shift in SHIFTS that keeps every value exact (grid None); or else
    the first for which rounding the values to multiples of grid = ulp(max |x| + |c|) (or twice
    that) makes x and x + c exact: a row of random logits spans more binades than the p bits of
    its format hold, so no shift of it is exact. None when neither works (entries near the
    format's max, or from -max to max, have no exact shift at all)."""
    for c in SHIFTS:
        if _exact_after_shift(values, c, fmt).all():
            return c, None
    top = float(np.max(np.abs(values)))
    for c in SHIFTS:
        grid = ulp(top + abs(c), fmt)
        for _ in range(2):
            if math.fmod(c, grid) == 0:
                rounded = np.rint(values / grid) * grid
                if (_representable(rounded, fmt) & _exact_after_shift(rounded, c, fmt)).all():
                    return c, grid
            grid *= 2
    return None


def laid_out_like(x: np.ndarray, values: np.ndarray) -> np.ndarray:
    """values in x's dtype and memory layout (x's strides, in a fresh buffer), read-only like the
    case input: the backend takes the same path as for x, so a difference is not the layout's."""
    values = np.asarray(values).astype(x.dtype)
    if x.size and all(stride > 0 for stride in x.strides):
        span = x.itemsize + sum((size - 1) * stride for size, stride in zip(x.shape, x.strides, strict=True))
        # Through unsigned integers: numpy's as_strided cannot rebuild a float8 dtype ('<f1').
        out = as_strided(np.zeros(span // x.itemsize, dtype=f"u{x.itemsize}"), shape=x.shape,
                         strides=x.strides).view(x.dtype)
        out[...] = values
    else:
        out = values.copy()
    out.flags.writeable = False
    return out


def _shifted_logsumexp(reference: Reference, c: float, settings: Policy,
                       flush: bool) -> tuple[np.ndarray, np.ndarray]:
    """(q, absolute budget) of logsumexp(x + c) = logsumexp(x) + c. The exact value to float64
    accuracy is enough to place its ULP; the budget's terms (t, W) do not move with a shift, so the
    reference with the shifted value is the shifted input's for softmax_suite.oracle.budget."""
    fmt = format_of(reference.dtype)
    exact = np.ldexp(reference.mant + reference.mant_lo, np.clip(reference.scale, -1100, 1100))
    shifted = exact + c
    fraction, exponent = np.frexp(shifted)
    usable = np.isfinite(reference.mant) & np.isfinite(shifted)
    moved = replace(reference, mant=np.where(usable, 2 * fraction, reference.mant),
                    mant_lo=np.zeros_like(reference.mant_lo),
                    scale=np.where(usable, np.where(fraction == 0, 0, exponent - 1), reference.scale),
                    rounded=shifted.astype(fmt.np_dtype))
    q, allowed = allowance(moved, settings, flush)
    return q, np.ldexp(allowed, q)


def shift_invariance(op: str, call: Call, settings: Policy, flush: bool, x: np.ndarray, rows: Rows,
                     finite: np.ndarray, out: np.ndarray, reference: Reference) -> dict:
    """op(x + c) against op(x) (logsumexp: against logsumexp(x) + c, the difference taken
    exactly), in ULPs of the exact value; budget: both sides' budgets (2x for softmax and
    log_softmax, whose exact values a shift leaves alone)."""
    fmt = format_of(x.dtype)
    xr = rows.rows(x.astype(np.float64))
    chosen = choose_shift(xr[finite], fmt)
    if chosen is None:
        return not_applicable("ulp", f"no shift c in {list(SHIFTS)} keeps the finite entries exact in "
                                     f"{fmt.name}, even on a grid (e.g. {_first_inexact(xr[finite], fmt)})")
    c, grid = chosen
    extra: dict = {"shift": c}
    if grid is not None:
        xr = xr.copy()
        xr[finite] = np.rint(xr[finite] / grid) * grid
        x = laid_out_like(x, rows.unrows(xr))
        reference = cache.reference(op, x, rows.axis)
        out = call(op, x, f"{op}(x on the grid)")
        extra["grid"] = grid
        extra["note"] = (f"no shift keeps every entry exact, so x is first rounded to multiples of "
                         f"{grid!r} (each entry moves at most half that)")
    shifted = call(op, laid_out_like(x, rows.unrows(xr + c)), f"{op}(x + {c:g})")
    q, allowed = (rows.rows(a)[finite] for a in allowance(reference, settings, flush))
    a, b = rows.rows(shifted)[finite], rows.rows(out)[finite]
    if op == "logsumexp":
        q_shifted, error_shifted = (rows.rows(a)[finite]
                                    for a in _shifted_logsumexp(reference, c, settings, flush))
        diff = np.array([_exact_difference(float(u), float(v), c) for u, v in zip(a, b, strict=True)])
        diff = np.ldexp(diff, -q_shifted)
        limit = np.ldexp(np.ldexp(allowed, q) + error_shifted, -q_shifted)
        extra["bitwise"] = bool((diff == 0).all())
        label = f"logsumexp(x + c) - c and logsumexp(x) (c = {c:g})"
    else:
        diff = ulps(a, b, q)
        limit = 2 * allowed
        extra["bitwise"] = bool(same_bits(a, b).all())
        label = f"{op}(x + c) and {op}(x) (c = {c:g})"

    def where(at: tuple) -> list[int]:
        return rows.index(int(finite[at[0]]), *at[1:])

    def describe(at: tuple, amount: str) -> str:
        return (f"shift_invariance: {label} differ by {amount} at index {where(at)} "
                f"({_number(a[at])} and {_number(b[at])})")

    return _compared(diff, limit, where, describe, **extra)


def _exact_difference(shifted: float, plain: float, c: float) -> float:
    """|shifted - plain - c| summed exactly; 0 for the same infinity or two NaNs, else inf."""
    if math.isfinite(shifted) and math.isfinite(plain):
        return abs(math.fsum([shifted, -plain, -c]))
    same = shifted == plain or (math.isnan(shifted) and math.isnan(plain))
    return 0.0 if same else math.inf


def _first_inexact(values: np.ndarray, fmt: Format) -> str:
    bad = values[~_exact_after_shift(values, SHIFTS[0], fmt)]
    return f"{_number(bad.flat[0])} + {SHIFTS[0]:g} is not a {fmt.name} number" if bad.size else "none"


def permutation(n: int, rng: np.random.Generator) -> np.ndarray:
    """A seeded permutation of range(n), never the identity for n > 1."""
    order = rng.permutation(n)
    return np.roll(order, 1) if n > 1 and (order == np.arange(n)).all() else order


def permutation_equivariance(op: str, call: Call, x: np.ndarray, rows: Rows, finite: np.ndarray,
                             out: np.ndarray, q: np.ndarray, allowed: np.ndarray,
                             rng: np.random.Generator) -> dict:
    """op(Px) against P op(x) (logsumexp: against logsumexp(x)) in ULPs of the exact value; the
    budget is twice the element's: the order of the summation may move both sides."""
    if rows.n < 2:
        return not_applicable("ulp", "rows of one element: every permutation is the identity")
    order = permutation(rows.n, rng)
    permuted = call(op, laid_out_like(x, np.take(x, order, axis=rows.axis)), f"{op}(Px)")
    got, want = rows.rows(permuted)[finite], rows.rows(out)
    q, allowed = rows.rows(q), rows.rows(allowed)
    if op != "logsumexp":
        want, q, allowed = want[:, order], q[:, order], allowed[:, order]
    want, q, allowed = want[finite], q[finite], allowed[finite]
    diff = ulps(got, want, q)

    def where(at: tuple) -> list[int]:
        return rows.index(int(finite[at[0]]), *at[1:])

    def describe(at: tuple, amount: str) -> str:
        entry = f" (entry {int(order[at[1]])} of x)" if len(at) > 1 else ""
        return (f"permutation_equivariance: {op}(Px) and P {op}(x) differ by {amount} at index "
                f"{where(at)} of {op}(Px){entry} ({_number(got[at])} and {_number(want[at])})")

    return _compared(diff, 2 * allowed, where, describe, bitwise=bool(same_bits(got, want).all()))
