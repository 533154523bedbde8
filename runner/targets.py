"""The questions a selection asks of one backend: a Target per device, dtype, case (or throughput shape)
and cotangent kind of an op, and a skip, with why, for a backend or device that cannot answer."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from softmax_suite.backends.registry import Unavailable
from softmax_suite.ops import is_vjp
from softmax_suite.protocol import Backend
from softmax_suite.suites.accuracy import Target
from softmax_suite.suites.cases import Case
from softmax_suite.suites.throughput import Shape

ANY = "any"


@dataclass(frozen=True)
class Question:
    """One target; skip names why it cannot be asked here (None: it can)."""

    target: Target
    skip: str | None = None
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
    """The questions of op's check (accuracy, invariants or throughput) for the backend of this name."""
    if isinstance(backend, Unavailable):
        yield Question(Target(op, name, ANY, ANY, ANY, check=check, spec=spec), backend.reason)
        return
    for device, reason in backend.absent_devices.items():
        if not selection.devices or device in selection.devices:
            yield Question(Target(op, name, device, ANY, ANY, check=check, spec=spec), reason)
    for device in backend.devices:
        if selection.devices and device not in selection.devices:
            continue
        if check == "throughput":
            for dtype in selection.dtypes:
                for shape in selection.shapes:
                    yield Question(Target(op, name, device, dtype, shape.name, None, check, spec))
            continue
        for case in selection.cases:
            kinds = [k for k in case.cotangents if k in selection.cotangents] if is_vjp(op) else [None]
            for dtype in selection.dtypes:
                if dtype not in case.dtypes:
                    continue
                for kind in kinds:
                    yield Question(Target(op, name, device, dtype, case.name, kind, check, spec),
                                   slow="slow" in case.tags)
