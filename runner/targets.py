"""The questions a selection asks of one backend: a Target per device, dtype, case (or throughput shape)
and cotangent kind of an op, and a skip, with why, for a backend or device that cannot answer."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from softmax_suite.backends.isolation import Isolated
from softmax_suite.backends.registry import Unavailable
from softmax_suite.ops import TIMED_OPS, is_vjp
from softmax_suite.protocol import OPTIONS, Backend
from softmax_suite.suites.accuracy import Target, why_not_case
from softmax_suite.suites.cases import Case
from softmax_suite.suites.throughput import Shape

ANY = "any"


@dataclass(frozen=True)
class Question:
    """One answerable target; slow marks a case of long rows."""

    target: Target
    slow: bool = False


@dataclass(frozen=True)
class Selection:
    """What is asked: the devices (empty: every one), dtypes, cases, cotangent kinds and throughput shapes."""

    devices: Sequence[str]
    dtypes: Sequence[str]
    cases: Sequence[Case]
    cotangents: Sequence[str]
    shapes: Sequence[Shape] = ()


def questions(name: str, backend: Backend | Unavailable, op: str, check: str, selection: Selection,
              spec: str | None = None) -> Iterator[Question]:
    """The answerable questions of op's check (accuracy, invariants or throughput) for the backend of
    this name; what it cannot answer is its capabilities' (capabilities), never a question."""
    if isinstance(backend, Unavailable):
        return
    for device in backend.devices:
        if selection.devices and device not in selection.devices:
            continue
        for dtype in selection.dtypes:
            if backend.why_unsupported(op, dtype):
                continue
            if check == "throughput":
                if not timeable(backend):
                    continue
                for shape in selection.shapes:
                    if not backend.why_not_length(shape.n):
                        yield Question(Target(op, name, device, dtype, shape.name, None, check, spec))
                continue
            for case in selection.cases:
                if why_not_case(op, case) or dtype not in case.dtypes or backend.why_not_with(case.options) \
                        or backend.why_not_length(case.row_length) or backend.why_not_finite(case.finite):
                    continue
                if check == "invariants" and (case.scale is not None or case.mask is not None):
                    continue  # measured on plain rows (docs/attention.md)
                if check == "invariants" and case.ladder is not None:
                    continue  # the ladder asks how long a row is right: accuracy (docs/low-precision.md)
                kinds = [k for k in case.cotangents if k in selection.cotangents] if is_vjp(op) else [None]
                for kind in kinds:
                    yield Question(Target(op, name, device, dtype, case.name, kind, check, spec),
                                   slow="slow" in case.tags)


def timeable(backend: Backend) -> bool:
    """Whether the backend has a copy to measure the attainable bandwidth with; one in its worker
    process (--isolate) has its own there, and the session skips its timings with why."""
    return backend.copy is not None or isinstance(backend, Isolated)


def capabilities(name: str, backend: Backend | Unavailable, ops: Sequence[str],
                 selection: Selection) -> list[dict]:
    """What the backend of this name cannot answer in the selection, and why: one entry per (device,
    op, dtype), or one for a whole backend (not installed) or device (absent), named "any", or one
    per keyword argument of attention's cases it does not take ("option"), and one for the cases
    whose rows are longer than it takes ("option": "length") or that hold inf or NaN ("finite"), and
    one when it cannot be timed ("throughput": no copy)."""
    def entry(device: str, op: str, dtype: str, reason: str) -> dict:
        return {"backend": name, "device": device, "op": op, "dtype": dtype, "reason": reason}

    if isinstance(backend, Unavailable):
        return [{**entry(ANY, ANY, ANY, backend.reason), **({"option": "opt_in"} if backend.opt_in else {})}]
    # Only the ops the selection would ask: the loss ops where it holds a loss case, and so on.
    ops = [op for op in ops if any(not why_not_case(op, case) for case in selection.cases)
           or (selection.shapes and op in TIMED_OPS)]
    found = [entry(device, ANY, ANY, reason) for device, reason in backend.absent_devices.items()
             if not selection.devices or device in selection.devices]
    for device in backend.devices:
        if selection.devices and device not in selection.devices:
            continue
        found += [entry(device, op, dtype, reason) for op in ops for dtype in selection.dtypes
                  if (reason := backend.why_unsupported(op, dtype))]
        # Attention's cases call the ops with keyword arguments the backend may not take: one entry
        # per option, which names it (readers that know no options see a whole-device entry otherwise).
        asked = {option for case in selection.cases for option in case.options
                 if any(not why_not_case(op, case) and op in backend.ops for op in ops)}
        found += [{**entry(device, ANY, ANY, reason), "option": option} for option in OPTIONS
                  if option in asked and (reason := backend.why_not_with((option,)))]
        if selection.shapes and not timeable(backend):
            found.append({**entry(device, ANY, ANY, f"{name} has no copy to measure the attainable bandwidth "
                                  "with: its speed is not timed"), "option": "throughput"})
        longest = max([case.row_length for case in selection.cases] + [shape.n for shape in selection.shapes],
                      default=0)
        if reason := backend.why_not_length(longest):
            found.append({**entry(device, ANY, ANY, f"{reason}: the cases with longer rows are not asked"),
                          "option": "length", "limit": backend.max_length})
        if reason := backend.why_not_finite(all(case.finite for case in selection.cases)):
            found.append({**entry(device, ANY, ANY, f"{reason}: the cases with inf or NaN are not asked"),
                          "option": "finite"})
    return found
