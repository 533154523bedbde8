"""One accuracy question: run a backend on a case and judge its output against the oracle.

The path is case -> backend -> oracle -> result record. The record is a plain dict (the
results file schema); its status is pass, fail, known_failure, error or unsupported.
"""

from __future__ import annotations

import math
import time
import traceback
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from backends.protocol import Backend
from oracle import cache
from oracle.budget import budget_ulp
from oracle.exact import Reference
from oracle.metrics import SEMANTIC_CATEGORIES, compare, summarize
from suites.cases import CASES, Case
from suites.config import Settings
from suites.deviations import Deviation, find

BUDGET_FORMULAS = {
    "softmax": "(c0 + c_exp (|x_j - a| + W) + c_sum ceil(log2 n)) u y_j + ulp_min",
    "log_softmax": "c_exp |x_j - a| u + E_L + u |z_j|",
    "logsumexp": "E_L + u |lse|",
}


@dataclass(frozen=True)
class Target:
    """What one test item asks: op of backend on device, for a case in a dtype."""

    op: str
    backend: str
    device: str
    dtype: str
    case: str

    @property
    def id(self) -> str:
        return f"{self.backend}-{self.device}-{self.dtype}-{self.case}"

    def identity(self) -> dict:
        return {"op": self.op, "backend": self.backend, "device": self.device,
                "dtype": self.dtype, "case": self.case}


@lru_cache(maxsize=16)
def case_input(case_name: str, dtype: str) -> np.ndarray:
    """The case's input bits in dtype, built once per process and shared by every backend."""
    x = CASES[case_name].build(dtype)
    x.flags.writeable = False
    return x


def _describe(value: float) -> str:
    return repr(float(value))


def _exact_value(reference: Reference, index: tuple) -> str:
    mant = reference.mant[index]
    if not math.isfinite(mant):
        return _describe(mant)
    return repr(math.ldexp(float(mant) + float(reference.mant_lo[index]), int(reference.scale[index])))


def _base_record(target: Target, case: Case, backend: Backend | None) -> dict:
    return {
        **target.identity(),
        "backend_version": backend.version if backend else None,
        "axis": case.axis,
        "seed": case.resolved_seed,
        "layout": case.layout,
    }


def run(target: Target, backend: Backend, settings: Settings,
        deviations: tuple[Deviation, ...] = ()) -> dict:
    """Ask backend the target's question and return the result record."""
    case = CASES[target.case]
    record = _base_record(target, case, backend)
    reason = backend.why_unsupported(target.op, target.dtype)
    if reason:
        return {**record, "status": "unsupported", "message": reason}
    x = case_input(target.case, target.dtype)
    record["shape"] = list(x.shape)
    reference = cache.reference(target.op, x, case.axis)
    record["oracle"] = {"max_precision": reference.max_precision}
    # The backend's time only: a cold oracle takes seconds and is not the backend's.
    started = time.perf_counter()
    try:
        # inf - inf and overflow are what the extreme cases are for: numpy need not warn.
        with np.errstate(all="ignore"):
            native = backend.to_device(x, target.device)
            out = backend.ops[target.op](native, case.axis)
            backend.synchronize(target.device, out)
            got = np.asarray(backend.to_numpy(out))
    except Exception as error:  # a backend's failure is a result, never a crash of the run
        frames = traceback.format_exception(type(error), error, error.__traceback__)
        return _judged({**record, "status": "error", "failure": "error",
                        "message": f"{target.op} raised {type(error).__name__}: {error}",
                        "traceback": "".join(frames[-3:])}, deviations)
    record["duration_s"] = time.perf_counter() - started
    if got.shape != reference.shape:
        return _judged({**record, "status": "error", "failure": "error", "message":
                        f"returned shape {tuple(got.shape)}, expected {reference.shape}"}, deviations)
    if got.dtype != x.dtype:
        return _judged({**record, "status": "error", "failure": "error", "message":
                        f"returned {got.dtype.name} for {x.dtype.name} input (a silent "
                        "conversion; the suite compares like with like)"}, deviations)
    return _judged({**record, **judge(reference, got, settings)}, deviations)


def judge(reference: Reference, got: np.ndarray, settings: Settings) -> dict:
    """Metrics, bound and status of a backend's output against the reference."""
    comparison = compare(reference, got)
    metrics = summarize(comparison)
    budgets = budget_ulp(reference, settings.budget)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(comparison.measured, comparison.ulp / budgets, np.nan)
    bound = {"formula": BUDGET_FORMULAS[reference.op], "constants": settings.budget.as_dict()}
    messages = []
    worst = None
    if metrics["n_measured"]:
        flat = int(np.nanargmax(ratio))
        worst = np.unravel_index(flat, ratio.shape) if ratio.ndim else ()
        bound.update(budget_ulp=float(budgets[worst]), ratio=float(ratio[worst]),
                     max_budget_ulp=float(np.max(budgets[comparison.measured])))
        metrics["worst"] = {
            "index": [int(i) for i in worst], "got": float(got[worst]),
            "exact": _exact_value(reference, worst), "rounded": float(reference.rounded[worst]),
            "ulp": float(comparison.ulp[worst]),
        }
        if ratio[worst] > 1:
            messages.append(
                f"{comparison.ulp[worst]:.4g} ULP at index {list(metrics['worst']['index'])} "
                f"exceeds its budget of {budgets[worst]:.4g} ULP (got {_describe(got[worst])}, "
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
    if flushed and settings.flush_to_zero == "fail":
        messages.append(f"{flushed} subnormal results flushed to zero (flush_to_zero = 'fail')")
    notes = [f"{flushed} subnormal results flushed to zero"] if flushed and not messages else []
    return {
        "status": "fail" if messages else "pass",
        "failure": ("semantic" if semantic else "accuracy") if messages else None,
        "metrics": metrics,
        "semantic": semantic,
        "bound": bound,
        "message": "; ".join(messages or notes),
    }


def _judged(record: dict, deviations: tuple[Deviation, ...]) -> dict:
    """A failure that a known-deviations entry matches becomes a known_failure."""
    known = find(deviations, record) if record["status"] in ("fail", "error") else None
    if known is not None:
        record["known_deviation"] = {"entry": deviations.index(known) + 1,
                                     "reason": known.reason, "link": known.link}
        record["message"] = f"known deviation: {known.reason} [{record['message']}]"
        record["status"] = "known_failure"
    return record
