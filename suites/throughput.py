"""Throughput per device: each op timed through pytest-benchmark, against a plain copy of the same
size on the same backend and device, measured in the same session.

Every timed call ends with the backend's synchronize (torch.cuda.synchronize, jax's
block_until_ready), so an asynchronous device is timed to the end of its work. The first call is
timed apart (first_call_s: jax's compilation, a lazy kernel load) and never inside a round; two
warm-up rounds follow it, after which inputs, outputs and the allocator's free lists are in
place. Traffic is the minimal one: forward 2 N itemsize (read x, write y; logsumexp N itemsize
plus its row outputs), softmax and log_softmax VJPs 3 N itemsize (x and g in, dx out), the
logsumexp VJP 2 N itemsize plus the row cotangents. The copy moves 2 N itemsize; the roofline
fraction is the op's GB/s over the copy's. A fraction above IMPOSSIBLE cannot be a measurement of
the op: a copy streams at the machine's bandwidth and the op moves at least as many bytes, save
a read-only reduction, which may gain up to the cost of the copy's writes. Such a result is a
measurement error (a missing synchronisation, a lazy backend), recorded as an error, never as a
throughput.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from backends.protocol import Backend
from oracle.formats import FORMATS
from suites.accuracy import Target
from suites.calls import CallTimeout, limited
from suites.cases import short_count

IMPOSSIBLE = 2.0
WARMUP_ROUNDS = 2
MIN_ROUNDS = 10  # the gate tests rounds against rounds: 5 and 5 rarely reach p < 0.01
MAX_ROUNDS = 200
# Seconds of timed rounds per benchmark (after the first call and the warm-up).
ROUND_BUDGET = {"quick": 0.05, "full": 0.5}
SWEEPS = ("quick", "full")


@dataclass(frozen=True)
class Shape:
    """A benchmark input: rows x n, reduced along the last axis."""

    name: str
    rows: int
    n: int

    @property
    def elements(self) -> int:
        return self.rows * self.n


def _row(n: int) -> Shape:
    return Shape(f"row_n{short_count(n)}", 1, n)


def _batch(rows: int, n: int) -> Shape:
    return Shape(f"batch_{rows}x{n}", rows, n)


FULL = (*(_row(2**k) for k in range(10, 25)), *(_batch(4096, n) for n in (128, 512, 2048, 8192, 32768)))
QUICK = (_row(2**12), _row(2**20), _batch(4096, 256))
SHAPES = {shape.name: shape for shape in (*FULL, *QUICK)}


def sweep(name: str) -> tuple[Shape, ...]:
    """The shapes of a sweep: 'quick' (three, for CI and the default run) or 'full'."""
    if name not in SWEEPS:
        raise ValueError(f"unknown sweep {name!r}: use one of {', '.join(SWEEPS)}")
    return QUICK if name == "quick" else FULL


def traffic_bytes(op: str, shape: Shape, itemsize: int) -> int:
    """The bytes an op must move at least (module docstring)."""
    n, rows = shape.elements, shape.rows
    if op == "logsumexp":
        return (n + rows) * itemsize
    if op == "logsumexp_vjp":
        return (2 * n + rows) * itemsize
    return (3 if op.endswith("_vjp") else 2) * n * itemsize


@lru_cache(maxsize=1)
def cpu_caches() -> tuple[tuple[str, int], ...]:
    """(name, bytes) of this CPU's data caches, smallest first, from Linux's sysfs (none elsewhere)."""
    found = []
    for index in sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*")):
        try:
            kind = (index / "type").read_text().strip()
            level = (index / "level").read_text().strip()
            size = (index / "size").read_text().strip()
        except OSError:
            continue
        if kind == "Instruction":
            continue
        units = {"K": 1024, "M": 1024**2, "G": 1024**3}
        found.append((f"L{level}", int(size[:-1]) * units[size[-1]] if size[-1] in units else int(size)))
    return tuple(sorted(found, key=lambda entry: entry[1]))


def cache_regime(device: str, working_set: int) -> str:
    """Where a working set of this many bytes lives: the smallest CPU cache holding it, 'main
    memory', or for an accelerator its device memory ('HBM')."""
    if device != "cpu":
        return "HBM"
    for name, size in cpu_caches():
        if working_set <= size:
            return name
    return "main memory"


@dataclass(frozen=True)
class Timing:
    """Seconds per call over the timed rounds."""

    median: float
    mean: float
    minimum: float
    maximum: float
    stddev: float
    rounds: int

    def as_dict(self) -> dict:
        return {"median_s": self.median, "mean_s": self.mean, "min_s": self.minimum,
                "max_s": self.maximum, "stddev_s": self.stddev, "rounds": self.rounds}


def synchronized(backend: Backend, device: str, call: Callable[[], Any]) -> Callable[[], Any]:
    """call, then the device's synchronisation on its result: what every timed round runs."""
    synchronize = backend.synchronize

    def run() -> Any:
        value = call()
        synchronize(device, value)
        return value

    return run


def rounds_for(seconds_per_call: float, sweep_name: str) -> int:
    """Rounds that fill the sweep's time budget, within MIN_ROUNDS .. MAX_ROUNDS."""
    if seconds_per_call <= 0:
        return MAX_ROUNDS
    return max(MIN_ROUNDS, min(MAX_ROUNDS, math.ceil(ROUND_BUDGET[sweep_name] / seconds_per_call)))


def time_rounds(run: Callable[[], Any], rounds: int, warmup: int = WARMUP_ROUNDS) -> Timing:
    """The suite's own timing loop (for the copy; ops go through pytest-benchmark): warm-up
    rounds, then one call per round on time.perf_counter, pytest-benchmark's timer."""
    for _ in range(warmup):
        run()
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return _timing(times)


def _timing(times: list[float]) -> Timing:
    data = np.array(times)
    return Timing(float(np.median(data)), float(data.mean()), float(data.min()), float(data.max()),
                  float(data.std(ddof=1)) if data.size > 1 else 0.0, int(data.size))


def inputs_for(op: str, shape: Shape, dtype: str, seed: int = 0) -> list[np.ndarray]:
    """x (N(0, 4)), and for a VJP its cotangent (N(0, 1); one per row for logsumexp)."""
    rng = np.random.default_rng(seed)
    np_dtype = FORMATS[dtype].np_dtype
    x = (rng.standard_normal((shape.rows, shape.n), dtype=np.float32) * 2).astype(np_dtype)
    if not op.endswith("_vjp"):
        return [x]
    g_shape = (shape.rows,) if op == "logsumexp_vjp" else (shape.rows, shape.n)
    return [x, rng.standard_normal(g_shape, dtype=np.float32).astype(np_dtype)]


def copy_bandwidth(backend: Backend, device: str, x_device: Any, elements: int, itemsize: int,
                   sweep_name: str) -> dict:
    """The attainable bandwidth: the backend's own copy of x on the device, GB/s of its 2 N
    itemsize, measured right after the op's rounds, so that both see the machine in one state
    (measured once per session, the copy of one shape differed by 38% between two runs here)."""
    copy = backend.copy
    run = synchronized(backend, device, lambda: copy(x_device))
    started = time.perf_counter()
    run()
    timing = time_rounds(run, rounds_for(time.perf_counter() - started, sweep_name))
    size = 2 * elements * itemsize
    return {**timing.as_dict(), "bytes": size, "gb_per_s": size / timing.median / 1e9}


def run(target: Target, backend: Backend, benchmark: Any, sweep_name: str,
        environment: dict, limit: float = 0.0) -> dict:
    """Time target.op on the target's shape with pytest-benchmark and return the record; a first call
    past limit seconds (0: none) is an error "timeout"."""
    shape = SHAPES[target.case]
    record = {**target.identity(), "backend_version": backend.version, "axis": -1,
              "shape": [shape.rows, shape.n], "elements": shape.elements, "sweep": sweep_name,
              "environment": environment}
    reason = backend.why_unsupported(target.op, target.dtype)
    if reason is None and backend.copy is None:
        reason = f"{backend.name} has no copy to measure the attainable bandwidth with"
    if reason:
        return {**record, "status": "unsupported", "message": reason}
    itemsize = FORMATS[target.dtype].np_dtype.itemsize
    arrays = [backend.to_device(a, target.device) for a in inputs_for(target.op, shape, target.dtype)]
    op = backend.ops[target.op]
    call = synchronized(backend, target.device, lambda: op(*arrays, -1))
    benchmark.extra_info.update(target.identity())
    try:
        started = time.perf_counter()
        limited(limit, call)
        first_call = time.perf_counter() - started
        rounds = rounds_for(first_call, sweep_name)
        benchmark.pedantic(call, rounds=rounds, warmup_rounds=WARMUP_ROUNDS, iterations=1)
    except CallTimeout as timeout:
        return {**record, "status": "error", "failure": "timeout", "message": f"{target.op} {timeout}"}
    except Exception as error:  # a backend's failure is a result, never a crash of the run
        return {**record, "status": "error", "failure": "error",
                "message": f"{target.op} raised {type(error).__name__}: {error}"}
    stats = benchmark.stats.stats
    timing = Timing(stats.median, stats.mean, stats.min, stats.max, stats.stddev, stats.rounds)
    copy = copy_bandwidth(backend, target.device, arrays[0], shape.elements, itemsize, sweep_name)
    traffic = traffic_bytes(target.op, shape, itemsize)
    gb_per_s = traffic / timing.median / 1e9
    fraction = gb_per_s / copy["gb_per_s"]
    measured = {
        "first_call_s": first_call, "timing": {**timing.as_dict(), "rounds_s": list(stats.data)},
        "elements_per_s": shape.elements / timing.median, "traffic_bytes": traffic,
        "gb_per_s": gb_per_s, "copy": copy, "roofline_fraction": fraction,
        "cache_regime": cache_regime(target.device, traffic),
    }
    if fraction > IMPOSSIBLE:
        message = (f"measurement error: {gb_per_s:.3g} GB/s is {fraction:.3g} x the copy's "
                   f"{copy['gb_per_s']:.3g} GB/s on the same device, more than the {IMPOSSIBLE:g}x the "
                   "bytes allow: the call returned before its work was done (a missing synchronize, "
                   "or a lazy backend)")
        # Kept apart for diagnosis, in the record and in pytest-benchmark's JSON: not a throughput.
        benchmark.extra_info.update(status="error", measurement_error=message)
        return {**record, "suspect": measured, "status": "error", "failure": "measurement",
                "message": message}
    benchmark.extra_info.update(status="pass", gb_per_s=gb_per_s, copy_gb_per_s=copy["gb_per_s"],
                                roofline_fraction=fraction, cache_regime=measured["cache_regime"],
                                first_call_s=first_call)
    return {**record, **measured, "status": "pass", "message": ""}
