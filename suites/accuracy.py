"""One accuracy question: run a backend on a case and judge its output against the oracle.

The path is case -> backend -> oracle -> result record. The record is a plain dict (the
results file schema); its status is pass, fail, known_failure, error or unsupported.
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from softmax_suite.backends.calls import CallTimeout, describe_error, last_frames, limited, output_of
from softmax_suite.backends.isolation import Isolated, WorkerFailure
from softmax_suite.formats import format_of
from softmax_suite.ops import cotangent_of, op_named
from softmax_suite.oracle import cache
from softmax_suite.oracle.exact import Reference
from softmax_suite.oracle.metrics import classify
from softmax_suite.protocol import Backend
from softmax_suite.suites import flushing, losses, masking, patterns
from softmax_suite.suites.cases import CASES, Case
from softmax_suite.suites.cotangents import build_cotangents
from softmax_suite.suites.deviations import Deviation
from softmax_suite.suites.judging import judge, judged
from softmax_suite.suites.policy import Policy


@dataclass(frozen=True)
class Target:
    """What one test item asks: op of backend on device, for a case in a dtype."""

    op: str
    backend: str
    device: str
    dtype: str
    case: str
    cotangent: str | None = None
    check: str = "accuracy"
    # The --backend spec that loads the backend, where it is not its name (a user's function or object).
    spec: str | None = None

    @property
    def id(self) -> str:
        suffix = f"-{self.cotangent}" if self.cotangent else ""
        return f"{self.backend}-{self.device}-{self.dtype}-{self.case}{suffix}"

    def identity(self) -> dict:
        identity = {"check": self.check, "op": self.op, "backend": self.backend,
                    "device": self.device, "dtype": self.dtype, "case": self.case}
        if self.cotangent:
            identity["cotangent"] = self.cotangent
        return {**identity, "backend_spec": self.spec} if self.spec else identity


@lru_cache(maxsize=16)
def case_input(case_name: str, dtype: str) -> np.ndarray:
    """The case's input bits in dtype, built once per process and shared by every backend."""
    x = CASES[case_name].build(dtype)
    x.flags.writeable = False
    return x


@lru_cache(maxsize=16)
def case_cotangents(case_name: str, kind: str, dtype: str) -> tuple[np.ndarray, np.ndarray]:
    """(g, g_row): the cotangents of kind for the case's input in dtype, read-only."""
    case = CASES[case_name]
    shape = case_input(case_name, dtype).shape
    arrays = build_cotangents(kind, case.resolved_seed, shape, case.axis, format_of(dtype))
    if case.mask is not None:
        # 0 at masked outputs, which are constants (0, -inf): what a cotangent there would mean
        # is the framework's choice (torch's masked_fill then log_softmax adds -y_i g_j for it).
        mask = case_options(case_name, dtype)["mask"]
        arrays = (np.where(mask, arrays[0], arrays[0].dtype.type(0)), arrays[1])
    for array in arrays:
        array.flags.writeable = False
    return arrays


def why_not_case(op: str, case: Case) -> str | None:
    """None when op is asked on the case: the loss ops on the loss cases, the others on the rest."""
    if op_named(op).loss == (case.loss is not None):
        return None
    return f"{op} is asked on the loss cases only" if op_named(op).loss else \
        f"{case.name} is a loss case: only the loss ops ask it"


def case_cotangent(op: str, case_name: str, kind: str, dtype: str) -> np.ndarray:
    """The cotangent op takes of the case's cotangents of kind (a reduced loss's: a scalar)."""
    reduction = CASES[case_name].loss.reduction if CASES[case_name].loss else "none"
    return cotangent_of(op, *case_cotangents(case_name, kind, dtype), reduction)


@lru_cache(maxsize=16)
def case_options(case_name: str, dtype: str) -> dict:
    """The case's keyword arguments in dtype (softmax_suite.protocol): its scale rounded into dtype,
    its mask (read-only) for the input's shape, a loss case's target, reduction and options; empty
    for a plain case."""
    case = CASES[case_name]
    options = {}
    for name, value in case.loss_arguments(dtype).items():
        if isinstance(value, np.ndarray):
            value.flags.writeable = False
        options[name] = value
    if case.scale is not None:
        options["scale"] = case.scale_in(dtype)
    if case.mask is not None:
        mask = case.build_mask(case_input(case_name, dtype).shape)
        mask.flags.writeable = False
        options["mask"] = mask
    return options


def base_record(target: Target, case: Case, backend: Backend | None) -> dict:
    record = {
        **target.identity(),
        "backend_version": backend.version if backend else None,
        "axis": case.axis,
        "seed": case.resolved_seed,
        "layout": case.layout,
        **({"special_input": case.special_input} if case.special_input else {}),
    }
    if case.scale is not None:
        record["scale"] = case.scale_in(target.dtype)
    if case.mask is not None:
        record["mask"] = masking.mask_summary(case_options(target.case, target.dtype)["mask"], case.axis)
        record["fully_masked"] = backend.fully_masked if backend else None
    if case.loss is not None:
        record["loss"] = losses.summary(case_options(target.case, target.dtype))
    if case.ladder is not None:
        record["ladder"] = {"length": case.row_length, "rows": case.ladder}
    if case.pattern is not None:
        record["pattern"] = {"row": patterns.ROWS[case.pattern]}
    return record


class BackendFailure(Exception):
    """A backend call that failed: the result is an error of this kind (the record's failure):
    "error" (it raised, or returned a wrong value), "timeout" or "crash"."""

    def __init__(self, message: str, trace: str = "", kind: str = "error") -> None:
        super().__init__(message)
        self.trace = trace
        self.kind = kind


def call_backend(backend: Backend, op: str, device: str, axis: int, inputs: list[np.ndarray],
                 expected_shape: tuple[int, ...], label: str | None = None, limit: float = 0.0,
                 options: dict | None = None) -> np.ndarray:
    """op of backend on device for the numpy inputs (x, then the cotangent of a VJP) and options
    (case_options), back as numpy and checked for shape and x's dtype, within limit seconds (0:
    none); in its worker process when the backend is Isolated. Any failure is a BackendFailure
    naming the call."""
    label = label or op
    x = inputs[0]
    try:
        if isinstance(backend, Isolated):
            got = backend.call(op, device, axis, inputs, limit, options)
        else:
            got = limited(limit, lambda: output_of(backend, op, device, axis, inputs, options))
    except WorkerFailure as failure:
        raise BackendFailure(f"{label} {failure}", failure.trace, failure.kind) from None
    except (Exception, CallTimeout) as error:  # a backend's failure is a result, never a crash of the run
        timeout = isinstance(error, CallTimeout)
        raise BackendFailure(f"{label} {error if timeout else describe_error(error)}", last_frames(error),
                             "timeout" if timeout else "error") from None
    if got.shape != tuple(expected_shape):
        raise BackendFailure(f"{label} returned shape {tuple(got.shape)}, expected {tuple(expected_shape)}")
    if got.dtype != x.dtype:
        raise BackendFailure(f"{label} returned {got.dtype.name} for {x.dtype.name} input (a silent "
                             "conversion; the suite compares like with like)")
    return got


def run(target: Target, backend: Backend, settings: Policy,
        deviations: tuple[Deviation, ...] = ()) -> dict:
    """Ask backend the target's question and return the result record."""
    case = CASES[target.case]
    record = base_record(target, case, backend)
    # The runner asks none of these (runner.targets); a direct call is answered the same way.
    reason = (why_not_case(target.op, case) or backend.why_unsupported(target.op, target.dtype)
              or backend.why_not_with(case.options)
              or backend.why_not_length(case.row_length) or backend.why_not_finite(case.finite))
    if reason:
        return {**record, "status": "unsupported", "message": reason}
    x = case_input(target.case, target.dtype)
    record["shape"] = list(x.shape)
    record["input_sha256"] = bits_digest(x)
    cotangents = None
    inputs = [x]
    if target.cotangent is not None:
        cotangents = case_cotangents(target.case, target.cotangent, target.dtype)
        inputs.append(case_cotangent(target.op, target.case, target.cotangent, target.dtype))
        record["cotangent_sha256"] = bits_digest(inputs[1])
    options = case_options(target.case, target.dtype)
    reference = cache.reference(target.op, x, case.axis, cotangents, **options)
    record["oracle"] = {"max_precision": reference.max_precision, **reference.certificate}
    if "mask" in options:
        reference = masking.under_convention(reference, options["mask"], case.axis, backend.fully_masked)
    # The backend's time only: a cold oracle takes seconds and is not the backend's.
    started = time.perf_counter()
    try:
        got = call_backend(backend, target.op, target.device, case.axis, inputs, reference.shape,
                           limit=settings.case_timeout, options=options)
    except BackendFailure as failure:
        return judged({**record, "status": "error", "failure": failure.kind, "message": str(failure),
                       **({"traceback": failure.trace} if failure.trace else {})}, deviations)
    record["duration_s"] = time.perf_counter() - started
    record["output_sha256"] = output_digest(got)
    if "mask" in options:
        returned = masking.returned_convention(target.op, got, options["mask"], case.axis)
        if returned is not None:
            record["fully_masked_returned"] = returned
    if case.special_input:
        record["special_values"] = special_values(case, x, reference, got)
    record["flushes"] = flushes(backend, target, settings)
    labels = patterns.row_labels(case.pattern, x) if case.pattern else None
    verdict = judge(reference, got, settings, case.axis, record["flushes"], labels)
    if case.pattern:
        record["pattern"]["by_gap"] = verdict.pop("by_gap")
    return judged({**record, **verdict}, deviations)


def flush_evidence(backend: Backend, device: str, dtype: str, op: str, settings: Policy) -> dict:
    """Whether op of backend on device flushes subnormals in dtype, and the probe's counts
    (softmax_suite.suites.flushing), measured once per process through the suite's own call path."""
    def call(probed: str, inputs: list[np.ndarray], shape: tuple[int, ...]) -> np.ndarray:
        return call_backend(backend, probed, device, -1, inputs, shape, limit=settings.case_timeout)

    return flushing.measured(backend, device, dtype, op, call)


def flushes(backend: Backend, target: Target, settings: Policy) -> bool:
    """Whether the target's backend gets the flush-to-zero allowance: measured to flush on its
    device, dtype and op, and flush_to_zero = "note"."""
    evidence = flush_evidence(backend, target.device, target.dtype, target.op, settings)
    return settings.flush_to_zero == "note" and evidence["flushes"]


def bits_digest(values: np.ndarray) -> str:
    """sha256 of an array's bits in C order, whatever its memory layout: a reproducer checks
    that it rebuilt the exact input."""
    return hashlib.sha256(np.ascontiguousarray(values).tobytes()).hexdigest()


def output_digest(got: np.ndarray) -> str:
    """sha256 of the output's bits in C order, every NaN written as one canonical NaN (a NaN's
    sign and payload carry no meaning here), so equal digests mean bit-for-bit agreement."""
    canonical = np.where(np.isnan(got.astype(np.float64)), np.array(np.nan, got.dtype), got)
    return bits_digest(canonical.astype(got.dtype))


def special_values(case: Case, x: np.ndarray, reference: Reference, got: np.ndarray) -> dict:
    """What the backend returned where the case is special, against the policy's values: the
    elements of rows holding a non-finite entry or a single entry, and every expected zero or
    subnormal; counted by (expected class, returned class)."""
    axis = case.axis % x.ndim if x.ndim else 0
    with np.errstate(invalid="ignore"):
        odd_rows = ~np.all(np.isfinite(x), axis=axis) if x.size else np.zeros(
            tuple(s for i, s in enumerate(x.shape) if i != axis), dtype=bool)
        if x.shape[axis] == 1:
            odd_rows = np.ones_like(odd_rows)
    expected = classify(reference.rounded, reference.dtype)
    returned = classify(got, reference.dtype)
    rows = odd_rows if reference.shape == odd_rows.shape else np.expand_dims(odd_rows, axis)
    probe = np.broadcast_to(rows, reference.shape) | np.isin(expected, ("0", "subnormal"))
    outcomes = Counter(zip(expected[probe].tolist(), returned[probe].tolist(), strict=True))
    return {"input": case.special_input, "shape": list(reference.shape),
            "outcomes": [{"expected": e, "got": g, "count": n} for (e, g), n in sorted(outcomes.items())]}
