"""Whether a backend flushes subnormals to zero, measured by a probe in the process that judges.

Flushing is a property of a backend, a device, a dtype and sometimes an op (a CPU's FTZ/DAZ
mode, XLA's, a library built with fast-math, a kernel computing in a wider type), never an
excuse for one element: a zero where a subnormal is expected is an accuracy failure unless
the probe, run on the same backend in the same process, shows that this backend flushes.

The probe is a row x = [0, -d_1, ..., -d_7] whose gaps d_i put exp(-d_i) inside the
subnormal range of the format, at least two units of the smallest subnormal and below half
the smallest normal, and nothing else is extreme: every softmax output but the first is a
subnormal of the format. A backend flushes when it returns 0 for most of them. The VJPs are
probed on the same row with cotangents that make their outputs subnormal: softmax_vjp
g = [0, 1, -1, ...] (y_j (g_j - <g, y>) ~ +-y_j), logsumexp_vjp g = 1 (y_j), log_softmax_vjp
g = [1, -m/4, ..., -m/4] with m the smallest normal (g_j - y_j sum(g), between -m/4 and -m).
None of those cotangents is 0 where an output is probed, so a wrong formula (g - y g for
log_softmax_vjp, y g for softmax_vjp) does not return the 0 of a flush. A VJP also flushes
where the backend's softmax does: its y is that softmax. (Probed from the VJP's output alone, a
flushed y and a formula that drops y's term, g - y g, look alike.)
log_softmax and logsumexp have subnormal results only as -log1p(t) and log1p(t) with t
subnormal, where the log(sum) form returns 0 whatever the mode: they take the verdict of
softmax on the same backend, device and dtype. The loss ops take the verdict of the op they are
made of: cross_entropy softmax's, cross_entropy_vjp log_softmax_vjp's.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from softmax_suite.formats import Format, format_of
from softmax_suite.ops import PER_ROW, is_vjp, op_named
from softmax_suite.oracle import cache
from softmax_suite.oracle.rounding import round_values
from softmax_suite.protocol import Backend

STANDS_FOR = {"log_softmax": "softmax", "logsumexp": "softmax", "cross_entropy": "softmax",
              "cross_entropy_vjp": "log_softmax_vjp"}
ENTRIES = 8
# A backend call: (op, inputs, expected output shape) -> output, raising on any failure.
Call = Callable[[str, list[np.ndarray], tuple[int, ...]], np.ndarray]

_measured: dict[tuple[str, str, str, str], dict] = {}


def probe_row(fmt: Format) -> np.ndarray:
    """x = [0, -d_1, ..., -d_7] in fmt, every exp(-d_i) subnormal (module docstring)."""
    first = -fmt.exp_subnormal_below + 0.5  # exp below about 0.6 of the smallest normal
    last = -fmt.exp_zero_below - 1.5  # exp above about 2.2 units of the smallest subnormal
    row = np.concatenate([[0.0], -np.linspace(first, last, ENTRIES - 1)])
    return round_values(row, fmt)


def probe_inputs(op: str, fmt: Format) -> list[np.ndarray]:
    """The probe's inputs for op: x, one row, and for a VJP its cotangent (module docstring)."""
    x = probe_row(fmt)[None]
    if not is_vjp(op):  # a forward op is probed on the row itself (STANDS_FOR: on softmax's)
        return [x]
    if op == "logsumexp_vjp":
        g = np.ones(1)
    elif op == "log_softmax_vjp":
        g = np.array([[1.0] + [-fmt.min_normal / 4] * (ENTRIES - 1)])
    else:
        g = np.array([[0.0] + [(-1.0) ** i for i in range(ENTRIES - 1)]])
    return [x, round_values(g, fmt)]


def probe(call: Call, op: str, dtype: str) -> dict:
    """The evidence for op in dtype: how many subnormal results came back 0, and the verdict."""
    fmt = format_of(dtype)
    inputs = probe_inputs(op, fmt)
    x = inputs[0]
    cotangents = None
    if is_vjp(op):
        per_row = op_named(op).cotangent == PER_ROW
        g = inputs[1] if not per_row else np.zeros_like(x)
        g_row = inputs[1] if per_row else np.zeros(x.shape[0], x.dtype)
        cotangents = (g, g_row)
    reference = cache.reference(op, x, -1, cotangents)
    try:
        got = call(op, inputs, reference.shape).astype(np.float64)
    except Exception as error:  # a backend that cannot run the probe is judged strictly
        return {"flushes": False, "probe": f"{op} raised: {str(error)[:200]}"}
    # The entries whose y is subnormal; the first (y ~ 1) can cancel to 0 in any backend.
    exact, got = reference.rounded.astype(np.float64)[0, 1:], got[0, 1:]
    subnormal = (exact != 0) & (np.abs(exact) < fmt.min_normal)
    counts = {"subnormal": int(subnormal.sum()), "returned_zero": int((subnormal & (got == 0)).sum())}
    return {"flushes": 2 * counts["returned_zero"] > counts["subnormal"], **counts}


def measured(backend: Backend, device: str, dtype: str, op: str, call: Call) -> dict:
    """The evidence for op (or the op it stands for) of backend on device in dtype, measured once
    per process; call runs the backend (softmax_suite.suites.accuracy.call_backend)."""
    if op in STANDS_FOR:
        return {**measured(backend, device, dtype, STANDS_FOR[op], call), "measured_on": STANDS_FOR[op]}
    probed = op
    key = (backend.name, device, dtype, probed)
    if key not in _measured:
        if backend.why_unsupported(probed, dtype):
            _measured[key] = {"flushes": False, "probe": f"{probed} unsupported: not measured"}
        else:
            _measured[key] = probe(call, probed, dtype)
    evidence = _measured[key]
    if is_vjp(op):
        y = measured(backend, device, dtype, "softmax", call)["flushes"]
        return {**evidence, "flushes": evidence["flushes"] or y, "softmax_flushes": y}
    return evidence
