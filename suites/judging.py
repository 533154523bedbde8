"""Judging, in one place: a backend's output against the exact reference and its budget
(accuracy), the allowance the invariants compare within, and what a known deviation makes of a
failure. The flush-to-zero allowance is granted here to a backend measured to flush."""

from __future__ import annotations

import math

import numpy as np

from softmax_suite.formats import format_of
from softmax_suite.ops import is_vjp
from softmax_suite.oracle import theory
from softmax_suite.oracle.budget import BUDGET_FORMULAS, VJP_BUDGETS, budget, natural_scale, vjp_underflow
from softmax_suite.oracle.exact import Reference
from softmax_suite.oracle.metrics import SEMANTIC_CATEGORIES, compare, summarize
from softmax_suite.oracle.rounding import ulp_exponent
from softmax_suite.suites import patterns
from softmax_suite.suites.deviations import Deviation, find
from softmax_suite.suites.policy import Policy

# A VJP element is cancellation-dominated when its natural scale (the size of the terms that
# cancel) exceeds |dx_j| by more than this factor: 3 bits lost. Its ULP error is then no
# measure of the implementation and is left out of the ULP statistics (the budget and the
# scaled error still hold it).
CANCELLATION_FACTOR = 8.0


def _describe(value: float) -> str:
    return repr(float(value))


def _exact_value(reference: Reference, index: tuple) -> str:
    mant = reference.mant[index]
    if not math.isfinite(mant):
        return _describe(mant)
    return repr(math.ldexp(float(mant) + float(reference.mant_lo[index]), int(reference.scale[index])))


def judge(reference: Reference, got: np.ndarray, settings: Policy, axis: int = -1,
          flush: bool = False, row_labels: np.ndarray | None = None) -> dict:
    """Metrics, bound and status of a backend's output against the reference; flush grants the
    allowance of a backend measured to flush subnormals to zero (flushes()). row_labels (one per
    row, NaN for a row left out) add "by_gap": the worst error of the rows of each label
    (softmax_suite.suites.patterns.by_gap)."""
    comparison = compare(reference, got, flush)
    vjp = reference.op in VJP_BUDGETS
    regimes = _vjp_regimes(reference, flush) if vjp else None
    metrics = summarize(comparison, regimes["measured"] if vjp else None)
    budgets = budget(reference, settings.budget, flush_to_zero=flush)
    budget_ulps = budgets.ulp
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(comparison.measured, comparison.in_units(budgets.exponent) / budgets.units,
                         np.nan)
    bound = {"formula": BUDGET_FORMULAS[reference.op], "constants": settings.budget.as_dict()}
    messages = []
    worst = None
    if vjp:
        metrics.update(_scaled_metrics(reference, comparison, regimes))
    if metrics["n_measured"]:
        flat = int(np.nanargmax(ratio))
        worst = np.unravel_index(flat, ratio.shape) if ratio.ndim else ()
        bound.update(budget_ulp=float(budget_ulps[worst]), ratio=float(ratio[worst]),
                     max_budget_ulp=float(np.max(budget_ulps[comparison.measured])))
        if reference.op in theory.FORMULAS:  # an op may have no a-priori bound (docs/architecture.md)
            bound["theory"] = _theory(reference, comparison, axis, flush)
        metrics["worst"] = {
            "index": [int(i) for i in worst], "got": float(got[worst]),
            "exact": _exact_value(reference, worst), "rounded": float(reference.rounded[worst]),
            "ulp": float(comparison.ulp[worst]),
        }
        if ratio[worst] > 1:
            messages.append(
                f"{comparison.ulp[worst]:.4g} ULP at index {list(metrics['worst']['index'])} "
                f"exceeds its budget of {budget_ulps[worst]:.4g} ULP (got {_describe(got[worst])}, "
                f"exact {metrics['worst']['exact']}, correctly rounded "
                f"{_describe(reference.rounded[worst])})")
    semantic = {name: metrics["categories"][name] for name in SEMANTIC_CATEGORIES
                if name in metrics["categories"]}
    for name, count in semantic.items():
        index = np.argwhere(comparison.categories[name])[0]
        at = tuple(int(i) for i in index)
        messages.append(f"semantic difference: {count} x {name}, e.g. at index {list(at)} got "
                        f"{_describe(got[at])}, the policy expects {_exact_value(reference, at)}")
    flushed = metrics["categories"].get("flushed_subnormal", 0)
    notes = [f"{flushed} subnormal results flushed to zero (measured to flush)"] \
        if flushed and not messages else []
    verdict = {
        "status": "fail" if messages else "pass",
        "failure": ("semantic" if semantic else "accuracy") if messages else None,
        "metrics": metrics,
        "semantic": semantic,
        "bound": bound,
        "message": "; ".join(messages or notes),
    }
    if row_labels is not None:
        wrong = np.logical_or.reduce([comparison.categories[name] for name in SEMANTIC_CATEGORIES])
        # A VJP's ULPs as its statistics keep them: not where cancellation or underflow dominates.
        ulp = np.where(regimes["measured"], comparison.ulp, np.nan) if vjp else comparison.ulp
        verdict["by_gap"] = patterns.by_gap(row_labels, *(_per_row(values, row_labels.shape, axis, worst)
                                                          for values, worst in ((ulp, True),
                                                                                (ratio, True),
                                                                                (wrong, False))))
    return verdict


def _per_row(values: np.ndarray, rows: tuple[int, ...], axis: int, worst: bool) -> np.ndarray:
    """values of an op's output reduced to one per row: the largest (NaN where none is a
    number), or the count (of True); a reduced op's output is per row already."""
    if values.shape == rows:
        return values.astype(np.float64)
    if not worst:
        return np.sum(values, axis=axis).astype(np.float64)
    with np.errstate(invalid="ignore"):
        largest = np.max(np.where(np.isnan(values), -np.inf, values), axis=axis)
    return np.where(np.isneginf(largest), np.nan, largest)


def _vjp_regimes(reference: Reference, flush: bool) -> dict[str, np.ndarray]:
    """Which VJP elements cancel (natural scale above CANCELLATION_FACTOR |dx_j|), which are
    dominated by underflow (the budget's underflow allowance above u times the natural scale:
    there a correct implementation may lose every digit), and which the ULP statistics keep."""
    fmt = format_of(reference.dtype)
    natural = natural_scale(reference.op, reference.terms)
    with np.errstate(all="ignore"):
        exact = np.abs(np.ldexp(reference.mant, np.clip(reference.scale, -2000, 2000)))
        underflow = vjp_underflow(reference.op, reference.terms, fmt, flush) > fmt.u * natural
        cancellation = ~underflow & (natural > CANCELLATION_FACTOR * exact)
    return {"underflow": underflow, "cancellation": cancellation,
            "measured": ~underflow & ~cancellation, "natural": natural}


def _scaled_metrics(reference: Reference, comparison, regimes: dict[str, np.ndarray]) -> dict:
    """The VJP error in units of u times the natural scale (where underflow does not dominate),
    and how many elements cancel or underflow."""
    u = format_of(reference.dtype).u
    natural = regimes["natural"]
    scope = comparison.measured & (natural > 0) & ~regimes["underflow"]
    with np.errstate(all="ignore"):
        scaled = comparison.abs[scope] / (u * natural[scope])
    return {"max_scaled": float(scaled.max()) if scaled.size else None,
            "n_cancellation": int(np.sum(comparison.measured & regimes["cancellation"])),
            "n_underflow": int(np.sum(comparison.measured & regimes["underflow"]))}


def _theory(reference: Reference, comparison, axis: int, flush: bool) -> dict:
    """The a-priori bound (softmax_suite.oracle.theory) at the element where measured/bound is largest."""
    ratios = theory.measured_over_bound(reference, comparison.abs, axis, flush)
    ratios = np.where(comparison.measured, ratios, np.nan)
    entry = {"source": theory.SOURCE if not is_vjp(reference.op)
             else "first-order bound in the model of " + theory.SOURCE.split(", Alg")[0],
             "formula": theory.FORMULAS[reference.op], "n": reference.row_length,
             "u": format_of(reference.dtype).u}
    if np.isnan(ratios).all():
        return entry
    at = np.unravel_index(int(np.nanargmax(ratios)), ratios.shape) if ratios.ndim else ()
    bounds = theory.bound(reference, axis, flush)
    return {**entry, "ratio": float(ratios[at]), "bound": float(bounds[at]),
            "measured": float(comparison.abs[at]), "index": [int(i) for i in at]}


def allowance(reference: Reference, settings: Policy, flush: bool) -> tuple[np.ndarray, np.ndarray]:
    """(q, budget): log2 of the ULP of each exact value, and its error budget in those ULPs. For a
    backend measured to flush subnormals to zero (flush, as the accuracy check grants it), an
    element whose correctly rounded value is below the smallest normal may also be 0."""
    fmt = format_of(reference.dtype)
    q = ulp_exponent(reference.scale, fmt, reference.mant)
    allowed = budget(reference, settings.budget, flush_to_zero=flush).ulp
    if flush:
        tiny = np.abs(reference.rounded.astype(np.float64)) < fmt.min_normal
        allowed = allowed + np.where(tiny, np.ldexp(1.0, fmt.emin - q), 0.0)
    return q, allowed



def judged(record: dict, deviations: tuple[Deviation, ...]) -> dict:
    """A failure that a known-deviations entry matches becomes a known_failure."""
    known = find(deviations, record) if record["status"] in ("fail", "error") else None
    if known is not None:
        record["known_deviation"] = {"entry": deviations.index(known) + 1,
                                     "reason": known.reason, "link": known.link}
        record["message"] = f"known deviation: {known.reason} [{record['message']}]"
        record["status"] = "known_failure"
    return record
