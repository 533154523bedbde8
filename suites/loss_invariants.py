"""The invariants of cross_entropy (suites.invariants runs them): a loss is never negative, it is the
backend's own -log_softmax at the smoothed target, and its gradient sums to 0 over the classes.

Each is measured over the kept rows whose logits are all finite, against the slack the budgets
allow (oracle.budget; docs/cross-entropy.md):

* nonnegative: no loss below 0 (-0.0 is 0).
* agrees_with_log_softmax: the loss against sum_c h_c (-z_c) (oracle.losses.smoothed_targets),
  with z the backend's log_softmax, composed and reduced in float64; the budget is the loss's own
  plus sum_c h_c times log_softmax's, both in ULPs of the exact loss (a reduced loss: over the rows'
  weight for "mean").
* gradient_sums_to_0: sum_c dx_c = F (K sum_c p_c - sum_c h_c) = 0 for each kept row, the
  backend's cross_entropy_vjp at the cotangent of ones, summed exactly (fsum); the budget is the
  sum of the row's element budgets.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from softmax_suite.formats import format_of
from softmax_suite.oracle import cache
from softmax_suite.oracle.losses import DEFAULT_IGNORE_INDEX, kept_weight, smoothed_targets
from softmax_suite.protocol import Backend
from softmax_suite.suites.accuracy import BackendFailure, Target, call_backend, case_options, flushes
from softmax_suite.suites.judging import allowance
from softmax_suite.suites.policy import Policy

INVARIANTS = {
    "nonnegative": "cross_entropy >= 0",
    "agrees_with_log_softmax": "cross_entropy = sum_c h_c (-log_softmax_c), with the backend's own "
                               "log_softmax",
    "gradient_sums_to_0": "sum_c d loss / d x_c = 0 for every kept row",
}
UNITS = {"nonnegative": "values", "agrees_with_log_softmax": "ulp", "gradient_sums_to_0": "ulp of the sum"}
Call = Callable[[str, list[np.ndarray], tuple[int, ...], str], np.ndarray]


def measure(target: Target, backend: Backend, settings: Policy, x: np.ndarray, axis: int, out: np.ndarray,
            into: dict[str, dict], not_applicable: Callable[[str, str], dict]) -> None:
    """Fill `into` with cross_entropy's invariants, given its output out on x."""
    options = case_options(target.case, target.dtype)
    loss_options = {name: value for name, value in options.items() if name != "target"}
    h, kept = smoothed_targets(x, options["target"], _oracle_options(options))
    finite_rows = kept & np.isfinite(x.astype(np.float64)).all(axis=1)
    if not finite_rows.any():
        why = "no kept row whose logits are all finite"
        into.update({name: not_applicable(UNITS[name], why) for name in INVARIANTS})
        return
    whole = bool(finite_rows[kept].all())  # a reduced loss is compared only when no kept row is special

    def call(op: str, inputs: list[np.ndarray], shape: tuple[int, ...], label: str) -> np.ndarray:
        return call_backend(backend, op, target.device, axis, inputs, shape, label, settings.case_timeout,
                            options if op.startswith("cross_entropy") else None)

    into["nonnegative"] = nonnegative(out, finite_rows, options["reduction"], whole)
    into["agrees_with_log_softmax"] = agrees_with_log_softmax(
        backend, target, settings, call, x, axis, out, h, kept, finite_rows, options, not_applicable)
    into["gradient_sums_to_0"] = gradient_sums_to_0(backend, target, settings, call, x, axis, finite_rows,
                                                    loss_options, options, not_applicable)


def _oracle_options(options: dict) -> dict:
    weight = options.get("weight")
    return {"ignore_index": int(options.get("ignore_index", DEFAULT_IGNORE_INDEX)),
            "label_smoothing": float(options.get("label_smoothing", 0.0)),
            "weight": None if weight is None else np.asarray(weight, dtype=np.float64)}


def nonnegative(out: np.ndarray, finite_rows: np.ndarray, reduction: str, whole: bool) -> dict:
    values = out.astype(np.float64)
    checked = values[finite_rows] if reduction == "none" else (values.reshape(1) if whole else values[:0])
    negative = np.flatnonzero(checked < 0)
    entry = {"value": int(negative.size), "budget": 0, "units": "values", "ok": not negative.size}
    if negative.size:
        where = int(np.flatnonzero(finite_rows)[negative[0]]) if reduction == "none" else None
        entry["index"] = [] if where is None else [where]
        at_row = f" at row {where}" if where is not None else ""
        first = float(checked[negative[0]])
        entry["message"] = f"nonnegative: {negative.size} losses below 0, e.g. {first!r}{at_row}"
    return entry


def agrees_with_log_softmax(backend: Backend, target: Target, settings: Policy, call: Call, x: np.ndarray,
                            axis: int, out: np.ndarray, h: np.ndarray, kept: np.ndarray,
                            finite_rows: np.ndarray, options: dict, not_applicable) -> dict:
    reason = backend.why_unsupported("log_softmax", target.dtype)
    if reason:
        return not_applicable("ulp", f"no log_softmax to compare with: {reason}")
    if options["reduction"] != "none" and not finite_rows[kept].all():
        return not_applicable("ulp", "a kept row holds inf or NaN: the reduced loss is the policy's")
    try:
        z = call("log_softmax", [x], x.shape, "log_softmax(x)").astype(np.float64)
    except BackendFailure as failure:
        return not_applicable("ulp", f"the backend's log_softmax failed ({failure}); its own record says "
                              "more")
    flush = flushes(backend, target, settings)
    loss_reference = cache.reference("cross_entropy", x, axis, **options)
    z_reference = cache.reference("log_softmax", x, axis)
    q, allowed = allowance(loss_reference, settings, flush)
    q_z, allowed_z = allowance(z_reference, settings, flush)
    with np.errstate(invalid="ignore"):
        composed_rows = np.sum(np.where(h > 0, -h * z, 0.0), axis=1)
        slack_rows = np.sum(np.where(h > 0, h * np.ldexp(allowed_z, q_z), 0.0), axis=1)
    if options["reduction"] == "none":
        composed, slack = composed_rows, slack_rows
        scope = finite_rows
    else:
        composed = np.array(math.fsum(composed_rows[kept]))
        slack = np.array(float(np.sum(slack_rows[kept])))
        if options["reduction"] == "mean":
            total = float(kept_weight(options["target"], kept, _oracle_options(options)))
            composed, slack = composed / total, slack / total
        scope = np.array(True)
    got = out.astype(np.float64)
    with np.errstate(invalid="ignore"):  # the same infinity on both sides agrees
        diff = np.where(scope & (got != composed), np.abs(got - composed), 0.0)
    diff = np.where(np.isnan(diff), np.inf, diff)
    budget = allowed + np.ldexp(slack, -q)
    in_ulps = np.ldexp(diff, -q)
    ratio = np.where(in_ulps == 0, np.where(scope, 0.0, -1.0), in_ulps / budget)
    at = int(np.argmax(ratio)) if ratio.ndim else None
    pick = (lambda a: float(np.atleast_1d(a)[at])) if at is not None else float
    entry = {"value": pick(in_ulps), "budget": pick(budget), "max_value": float(np.max(in_ulps)),
             "units": "ulp", "ok": bool(pick(ratio) <= 1), "index": [] if at is None else [at]}
    if not entry["ok"]:
        where = f" at row {at}" if at is not None else ""
        entry["message"] = (f"agrees_with_log_softmax: the loss {pick(got)!r}{where} and sum h_c "
                            f"(-log_softmax_c) = {pick(composed)!r} from the backend's log_softmax differ by "
                            f"{entry['value']:.4g} ULP, beyond the budget of {entry['budget']:.4g}")
    return entry


def gradient_sums_to_0(backend: Backend, target: Target, settings: Policy, call: Call, x: np.ndarray,
                       axis: int, finite_rows: np.ndarray, loss_options: dict, options: dict,
                       not_applicable) -> dict:
    units = UNITS["gradient_sums_to_0"]
    reason = backend.why_unsupported("cross_entropy_vjp", target.dtype)
    if reason:
        return not_applicable(units, f"no gradient: {reason}")
    if options["reduction"] == "mean" and not finite_rows.any():
        return not_applicable(units, "no kept row")
    fmt = format_of(x.dtype)
    g_row = np.ones(x.shape[0], dtype=x.dtype)
    g = g_row if options["reduction"] == "none" else np.ones((), dtype=x.dtype)
    try:
        dx = call("cross_entropy_vjp", [x, g], x.shape, "cross_entropy_vjp(x, 1)").astype(np.float64)
    except BackendFailure as failure:
        return not_applicable(units, f"the backend's cross_entropy_vjp failed ({failure}); its own record "
                              "says more")
    reference = cache.reference("cross_entropy_vjp", x, axis, (np.ones(x.shape, x.dtype), g_row), **options)
    q, allowed = allowance(reference, settings, flushes(backend, target, settings))
    rows = np.flatnonzero(finite_rows)
    sums = np.array([math.fsum(dx[r]) if np.isfinite(dx[r]).all() else math.inf for r in rows])
    budget = np.array([float(np.sum(np.ldexp(allowed[r], q[r]))) for r in rows])
    # In units of the row's largest element budget's ULP: a sum of 0 has no ULP of its own.
    unit = np.array([2.0 ** int(np.max(q[r])) for r in rows])
    value, limit = np.abs(sums) / unit, budget / unit
    ratio = np.where(value == 0, 0.0, value / limit)
    worst = int(np.argmax(np.where(np.isnan(ratio), np.inf, ratio)))
    entry = {"value": float(value[worst]), "budget": float(limit[worst]), "max_value": float(np.max(value)),
             "units": units, "ok": bool(ratio[worst] <= 1), "index": [int(rows[worst])]}
    if not entry["ok"]:
        entry["message"] = (f"gradient_sums_to_0: row {int(rows[worst])}'s gradient sums to "
                            f"{float(sums[worst])!r} ({entry['value']:.4g} units of {unit[worst]:.3g}), "
                            f"beyond the budget of {entry['budget']:.4g} ({fmt.name})")
    return entry
