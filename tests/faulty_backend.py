"""Backends with one planted fault each, for tests/test_faults.py: softmax goes wrong only for an input
holding a NaN (the case `nan`) and is tests.bad_softmax:Float64Upcast, which is right, elsewhere; or
the process that loads the backend dies (*WhenLoaded: loading a class makes an instance of it); or, for
the hunt, softmax crashes or hangs on rows of one length (*OnShortRows)."""

from __future__ import annotations

import ctypes
import os
import time
from pathlib import Path

import numpy as np

from tests.bad_softmax import Float64Upcast

SPIN_S = 4.0  # twice the tests' case timeout: long enough to be caught, short enough to wait for


class _Planted(Float64Upcast):
    """Right, but for an input with a NaN: there `fault` answers (the faults call the right softmax
    as Float64Upcast.softmax, which super() would route back here)."""

    def softmax(self, x: np.ndarray, axis: int) -> np.ndarray:
        if np.isnan(x).any():
            return self.fault(x, axis)
        return super().softmax(x, axis)

    def fault(self, x: np.ndarray, axis: int):
        raise NotImplementedError


class Raises(_Planted):
    def fault(self, x, axis):
        raise ValueError("planted: no softmax for a row with a NaN")


class WrongShape(_Planted):
    def fault(self, x, axis):
        return Float64Upcast.softmax(self, x, axis)[..., :-1]


class WrongDtype(_Planted):
    def fault(self, x, axis):
        return Float64Upcast.softmax(self, x, axis).astype(np.float64)


class ReturnsNone(_Planted):
    def fault(self, x, axis):
        return None


class ReturnsList(_Planted):
    def fault(self, x, axis):
        return Float64Upcast.softmax(self, x, axis).tolist()


class ReturnsFloat(_Planted):
    def fault(self, x, axis):
        return 0.25


class _OnGpu(np.ndarray):
    """Stands in for a torch tensor left on a GPU (this machine has none): an array that says so."""

    @property
    def device(self) -> str:
        return "cuda:0"


class WrongDevice(_Planted):
    def fault(self, x, axis):
        return Float64Upcast.softmax(self, x, axis).view(_OnGpu)


class Hangs(_Planted):
    def fault(self, x, axis):
        time.sleep(3600)


def _timed(call) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


class SpinsInC(_Planted):
    """SPIN_S seconds in a C call that holds the GIL and runs no Python, so no signal handler either:
    sum over a range, sized for the time left (a busy machine can make one call end early)."""

    def fault(self, x, axis):
        per_step = min(_timed(lambda: sum(range(10**6))) for _ in range(3)) / 10**6
        deadline = time.monotonic() + SPIN_S
        while (left := deadline - time.monotonic()) > 0:
            sum(range(int(left / per_step)))
        return Float64Upcast.softmax(self, x, axis)


class Segfault(_Planted):
    def fault(self, x, axis):
        ctypes.string_at(0)


class Aborts(_Planted):
    def fault(self, x, axis):
        os.abort()


class ExitsInterpreter(_Planted):
    def fault(self, x, axis):
        os._exit(3)


class SegfaultsWhenLoaded(Float64Upcast):
    def __init__(self) -> None:
        ctypes.string_at(0)


class ExitsWhenLoaded(Float64Upcast):
    def __init__(self) -> None:
        os._exit(3)


class FaultsOnShortRows(Float64Upcast):
    """For tests/test_hunt.py: softmax segfaults on rows of crash_length entries and hangs on rows of
    hang_length, lengths the first generation of a hunt holds. Where $FAULTS_ONCE names a folder,
    each fault strikes once: a file there says it did, to the worker process started afresh after it."""

    crash_length: int | None = 3
    hang_length: int | None = 5

    def softmax(self, x: np.ndarray, axis: int) -> np.ndarray:
        if x.shape[axis] == self.crash_length and _first("crashed"):
            ctypes.string_at(0)
        if x.shape[axis] == self.hang_length and _first("hung"):
            time.sleep(3600)
        return super().softmax(x, axis)


class HangsOnShortRows(FaultsOnShortRows):
    """FaultsOnShortRows without the crash: a hunt in its own process survives a hang only."""

    crash_length = None


def _first(fault: str) -> bool:
    folder = os.environ.get("FAULTS_ONCE")
    if folder is None:
        return True
    marker = Path(folder) / fault
    if marker.exists():
        return False
    marker.touch()
    return True
