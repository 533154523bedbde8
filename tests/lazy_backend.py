"""A backend that returns before its work is done, like a GPU kernel launch whose adapter forgot
to synchronise: softmax hands the work to a thread and returns a future; only to_numpy waits."""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

_pool = ThreadPoolExecutor(max_workers=1)


def _softmax(x: np.ndarray, axis: int) -> np.ndarray:
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


class LazySoftmax:
    name = "lazy"
    version = "0"

    def softmax(self, x: np.ndarray, axis: int) -> Future:
        return _pool.submit(_softmax, x, axis)

    def synchronize(self, device: str, value: Future) -> None:
        """The bug: nothing waits for the work."""

    def to_numpy(self, value: Future) -> np.ndarray:
        return value.result()

    def copy(self, x: np.ndarray) -> np.ndarray:
        return np.copy(x)


class WaitingSoftmax(LazySoftmax):
    """The same backend with the synchronisation it needs."""

    name = "waiting"

    def synchronize(self, device: str, value: Future | np.ndarray) -> None:
        if isinstance(value, Future):  # the copy is numpy's, done when it returns
            value.result()


class ContendedCopy(WaitingSoftmax):
    """Synchronised and correct, on a machine where its copy has to wait for a busy core: three
    calls of four sleep 20 ms first, as a thread pool's copy does when one of its threads is
    descheduled (measured on this 2-core machine with both cores busy: torch's copy of 8 MB in
    7.9 ms where it takes 0.15 ms idle). Its op is never slowed."""

    name = "contended"

    def __init__(self) -> None:
        self.calls = 0

    def copy(self, x: np.ndarray) -> np.ndarray:
        self.calls += 1
        if self.calls % 4:
            time.sleep(0.02)
        return np.copy(x)


class AlwaysContendedCopy(ContendedCopy):
    """Every copy waits: no round of it shows the machine's bandwidth."""

    name = "always-contended"

    def copy(self, x: np.ndarray) -> np.ndarray:
        time.sleep(0.02)
        return np.copy(x)
