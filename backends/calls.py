"""One call of a backend op: numpy in, numpy out, the output checked for being an array of the backend's
kind on its input's device, under the case timeout when it runs in this process."""

from __future__ import annotations

import signal
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import numpy as np

from softmax_suite.protocol import Backend

DEFAULT_CASE_TIMEOUT = 600.0
HOW_TO_RAISE = "--case-timeout SECONDS raises the limit, 0 removes it"
Result = TypeVar("Result")


class WrongOutput(Exception):
    """An op's output that is no array of the backend's kind, or lies on another device than its input."""


class CallTimeout(BaseException):
    """A call ran past its time limit. A BaseException, like KeyboardInterrupt, so that a backend's
    own `except Exception` cannot swallow it."""


def output_of(backend: Backend, op: str, device: str, axis: int, inputs: list[np.ndarray],
              options: dict[str, Any] | None = None) -> np.ndarray:
    """op of backend on device for the numpy inputs (x, then a VJP's cotangent) and options (scale,
    a float, mask, a loss's target and weight, numpy arrays, and its other keywords, passed by
    keyword: softmax_suite.protocol), synchronised and back as numpy. Raises what the backend
    raises, or WrongOutput."""
    # inf - inf and overflow are what the extreme cases are for: numpy need not warn.
    with np.errstate(all="ignore"):
        arrays = [backend.to_device(a, device) for a in inputs]
        # Arrays among the keywords (a mask, a loss's targets and weights) go where x goes.
        keywords = {name: backend.to_device(value, device) if isinstance(value, np.ndarray) else value
                    for name, value in (options or {}).items()}
        out = backend.ops[op](*arrays, axis, **keywords)
        # Before synchronize and to_numpy, whose errors on a None or a list would hide what came back.
        problem = foreign(out, arrays[0])
        if problem:
            raise WrongOutput(problem)
        backend.synchronize(device, out)
        got = np.asarray(backend.to_numpy(out))
    if got.dtype.hasobject:
        raise WrongOutput(f"returned an array of Python objects (a {_type_name(out)} read back as dtype "
                          "object), not of numbers")
    return got


def foreign(out: Any, like: Any) -> str | None:
    """Why an op's output is not an array of the kind to_device made of its input (numpy arrays and
    scalars are always accepted), or lies on another device than that input; None when it is fine."""
    if not isinstance(out, (type(like), np.ndarray, np.generic)):
        what = "None" if out is None else f"a {_type_name(out)}"
        return f"returned {what}, not an array ({_type_name(like)}, as to_device makes)"
    where, wanted = device_of(out), device_of(like)
    if where is not None and wanted is not None and where != wanted:
        return f"returned an array on device {where} for an input on {wanted}"
    return None


def device_of(array: Any) -> str | None:
    """The device an array says it lies on (torch, jax, cupy, numpy 2, array API arrays), as text;
    None when it says nothing readable."""
    try:
        device = array.device
    except Exception:  # a sharded jax array, or an array kind without devices
        return None
    return None if callable(device) else str(device)


def _type_name(value: Any) -> str:
    kind = type(value)
    return kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"


def describe_error(error: BaseException) -> str:
    """What a failed call did, to follow the call's label: 'returned ...' or 'raised Type: message'."""
    if isinstance(error, WrongOutput):
        return str(error)
    return f"raised {type(error).__name__}: {error}"


def last_frames(error: BaseException) -> str:
    """The end of an error's traceback, for the record: the backend's frame that raised, and the error."""
    return "".join(traceback.format_exception(type(error), error, error.__traceback__)[-3:])


def timed_out(limit: float, elapsed: float) -> str:
    """A timeout's message, to follow the call's label. A call inside C code (a C extension, or a
    library call holding the GIL) can only be stopped in this process when it returns."""
    if elapsed > 1.1 * limit + 0.1:
        return (f"timed out: it returned after {elapsed:.3g} s, past the case timeout of {limit:g} s; this "
                f"process could not stop it sooner (C code runs to its end; --isolate stops it at the "
                f"limit); {HOW_TO_RAISE}")
    return f"timed out: stopped at the case timeout of {limit:g} s; {HOW_TO_RAISE}"


def limited(limit: float, call: Callable[[], Result]) -> Result:
    """call() within limit seconds (0: no limit), or CallTimeout. Python code is interrupted at the
    limit (SIGALRM, in the main thread of a POSIX process); elsewhere, and for C code, the limit is
    checked when the call returns."""
    started = time.monotonic()
    with _alarm(limit, started):
        result = call()
    elapsed = time.monotonic() - started
    if limit and elapsed > limit:
        raise CallTimeout(timed_out(limit, elapsed))
    return result


@contextmanager
def _alarm(limit: float, started: float) -> Iterator[None]:
    """CallTimeout raised in the body once limit seconds have passed, where SIGALRM can do it."""
    if (not limit or not hasattr(signal, "setitimer")
            or threading.current_thread() is not threading.main_thread()
            # Someone else's alarm (pytest-timeout's signal method) is running: leave it alone.
            or signal.getitimer(signal.ITIMER_REAL)[0]):
        yield
        return

    def expire(signum: int, frame: Any) -> None:
        raise CallTimeout(timed_out(limit, time.monotonic() - started))

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, limit)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
