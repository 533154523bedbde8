"""Throughput per device: each op timed through pytest-benchmark, against a plain copy of the same
size on the same backend and device, measured in the same session.

Every timed call ends with the backend's synchronize (torch.cuda.synchronize, jax's
block_until_ready), so an asynchronous device is timed to the end of its work. The first call is
timed apart (first_call_s: jax's compilation, a lazy kernel load) and never inside a round; two
warm-up rounds follow it, after which inputs, outputs and the allocator's free lists are in
place. Traffic is the minimal one: forward 2 N itemsize (read x, write y; logsumexp N itemsize
plus its row outputs), softmax and log_softmax VJPs 3 N itemsize (x and g in, dx out), the
logsumexp VJP 2 N itemsize plus the row cotangents. The copy moves 2 N itemsize.

The copy is timed in every round, right before the op (pytest-benchmark's setup), in the same
process and state. GB/s are those of the fastest round (the op's, and the copy's), and the
roofline fraction their ratio: load only ever slows a round down, so the fastest rounds are the
machine's own speed on a busy machine too, where a median follows the load (measured here with
both cores kept busy: torch's two-thread softmax of a 4096 x 256 batch had rounds of 0.4 to 16
ms, its fastest within 20% of an idle machine's). Each round's ratio is kept (round_fractions).

A fraction above IMPOSSIBLE cannot be a measurement of the op: a copy streams at the machine's
bandwidth and the op moves at least as many bytes, save a read-only reduction, which may gain up
to the cost of the copy's writes. It is judged on the fastest rounds, and only after a second
measurement of as many rounds agrees; even then it is a measurement error (a missing
synchronisation, a lazy backend) only if reading the op's result waits for work (waited(): the
first to_numpy of a synchronised result takes longer than a second one, by half a call or more).
Otherwise it was the copy that never ran at the machine's speed (a copy whose thread pool fights
for cores that other processes keep busy: torch's copy of 8 MB took 7.2 ms in every round here,
against 0.13 ms idle, beside a 0.7 ms single-threaded softmax): the record keeps its GB/s, says
so, and has no roofline fraction.

Every record says how busy the machine was while it was timed (contention: the cores other
processes kept busy, from /proc/stat, and the threads the backend runs on, from its device
description). A backend that needs more cores than the others left it is measuring the
scheduler (its threads wait for each other's time slices): its record is not resolvable, and the
gate does not judge it.
"""

from __future__ import annotations

import ctypes
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache, partial
from pathlib import Path
from typing import Any

import numpy as np

from softmax_suite.backends.calls import CallTimeout, limited
from softmax_suite.formats import FORMATS
from softmax_suite.ops import elements_moved, op_named, shaped
from softmax_suite.protocol import Backend
from softmax_suite.suites.accuracy import Target
from softmax_suite.suites.cases import short_count

IMPOSSIBLE = 2.0
WARMUP_ROUNDS = 2
MIN_ROUNDS = 24  # 6 on each of the inputs' PLACEMENTS
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
    """The bytes an op must move at least (module docstring): its input, cotangent and output
    once each, as the op table shapes them."""
    return elements_moved(op, shape.elements, shape.rows) * itemsize


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


def _timing(times: list[float]) -> Timing:
    data = np.array(times)
    return Timing(float(np.median(data)), float(data.mean()), float(data.min()), float(data.max()),
                  float(data.std(ddof=1)) if data.size > 1 else 0.0, int(data.size))


def inputs_for(op: str, shape: Shape, dtype: str, seed: int = 0) -> list[np.ndarray]:
    """x (N(0, 4)), and for a VJP its cotangent (N(0, 1); one per row for logsumexp)."""
    rng = np.random.default_rng(seed)
    np_dtype = FORMATS[dtype].np_dtype
    x = (rng.standard_normal((shape.rows, shape.n), dtype=np.float32) * 2).astype(np_dtype)
    rule = op_named(op).cotangent
    if rule is None:
        return [x]
    g_shape = shaped(rule, x.shape, -1)
    return [x, rng.standard_normal(g_shape, dtype=np.float32).astype(np_dtype)]


# glibc's mallopt parameters: keep freed memory in the heap instead of handing it back to the
# kernel (mmap for large blocks, trimming the heap's top), so that an op's output of several MB is
# not a few thousand fresh zeroed pages in every round.
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
KEEP_BYTES = 1 << 30


@lru_cache(maxsize=1)
def keep_freed_memory() -> bool:
    """Tell glibc to reuse freed blocks rather than return them to the kernel (a round that
    page-faults in its output swung 2-3x between runs here, with the machine's other work); False
    where the C library is not glibc."""
    try:
        libc = ctypes.CDLL(None)
        return bool(libc.mallopt(M_MMAP_THRESHOLD, KEEP_BYTES) and libc.mallopt(M_TRIM_THRESHOLD, KEEP_BYTES))
    except (OSError, AttributeError):
        return False


PLACEMENTS = 4


def placed(a: np.ndarray, placement: int) -> np.ndarray:
    """a's values in a fresh buffer, its start placement x 1088 bytes into a page (a multiple of 64:
    aligned for any vector unit): where an op's input and output lie relative to each other
    (4 KiB aliasing of loads and stores) made the same numpy op 1.6 ms or 5.9 ms here, from one
    allocation to the next; the rounds go through PLACEMENTS of them, and the fastest round
    counts."""
    offset = placement * 1088 % 4096
    buffer = np.empty(a.nbytes + offset, dtype=np.uint8)
    out = buffer[offset:].view(a.dtype).reshape(a.shape)
    out[...] = a
    out.flags.writeable = False
    return out


@dataclass
class Interleaved:
    """Round by round (pytest-benchmark's setup, or rounds of its own when re-measuring), on the
    next of the placements of the inputs in turn: the copy timed right before the op. The copy
    reads the op's input, which the op then finds in the cache as a back-to-back loop leaves it."""

    ops: list[Callable[[], Any]]
    copy_calls: list[Callable[[], Any]]
    placement: list[int] = field(default_factory=list)
    copies: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)

    def op(self) -> Any:
        """The op on the current placement; the CPU time the process spent on it joins self.cpu
        (a call preempted by another process keeps its CPU time, not its wall time)."""
        started = time.process_time()
        value = self.ops[self.placement[-1]]()
        self.cpu.append(time.process_time() - started)
        return value

    def timed_copy(self) -> None:
        self.placement.append(len(self.placement) % len(self.ops))
        started = time.perf_counter()
        self.copy_calls[self.placement[-1]]()
        self.copies.append(time.perf_counter() - started)

    def rounds(self, count: int) -> list[float]:
        """count more interleaved rounds; the op's times (the copy's join self.copies)."""
        times = []
        for _ in range(count):
            self.timed_copy()
            started = time.perf_counter()
            self.op()
            times.append(time.perf_counter() - started)
        return times


def fraction(op_s: float, copy_s: float, traffic: int, copied: int) -> float:
    """The op's GB/s in op_s seconds as a fraction of the copy's in copy_s."""
    return (traffic / op_s) / (copied / copy_s)


def best_fraction(op_times: list[float], copy_times: list[float], traffic: int, copied: int) -> float:
    """The op's fastest round against the copy's fastest, as a fraction of the copy's GB/s."""
    return fraction(min(op_times), min(copy_times), traffic, copied)


def waited(backend: Backend, op: Callable[[], Any], fastest: float, tries: int = 3) -> bool:
    """Whether reading a synchronised result of op waits for its work: the first to_numpy of it
    slower than a second one by half the op's fastest call or more, in each of tries tries."""
    lags = []
    for _ in range(tries):
        value = op()
        started = time.perf_counter()
        backend.to_numpy(value)
        first = time.perf_counter() - started
        started = time.perf_counter()
        backend.to_numpy(value)
        lags.append(first - (time.perf_counter() - started))
    return min(lags) > fastest / 2


def machine_busy_s() -> float | None:
    """Seconds of CPU time every process of the machine has used since boot (Linux's /proc/stat:
    all but idle and iowait), or None where there is no such file."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return None
    ticks = [int(value) for value in fields]
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


@dataclass
class Contention:
    """How many cores other processes kept busy while a benchmark was timed, from the machine's
    and this process's CPU time over the wall time (None where the machine does not say)."""

    started: float = field(default_factory=time.perf_counter)
    ours: float = field(default_factory=time.process_time)
    machine: float | None = field(default_factory=machine_busy_s)

    def other_cores(self) -> float | None:
        wall = time.perf_counter() - self.started
        machine = machine_busy_s()
        if self.machine is None or machine is None or wall <= 0:
            return None
        return max(0.0, (machine - self.machine) - (time.process_time() - self.ours)) / wall


def resolvable(threads: int, other_cores: float | None) -> bool:
    """Whether a backend on threads threads had the cores it needs: the others left it threads
    of the machine's (a single thread always gets slices longer than a round: its fastest rounds
    are its own)."""
    return other_cores is None or threads == 1 or threads + other_cores <= (os.cpu_count() or 1) + 0.5


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
    keep_freed_memory()
    itemsize = FORMATS[target.dtype].np_dtype.itemsize
    described = environment.get("devices", {}).get(f"{target.backend}/{target.device}") or {}
    threads = int(described.get("threads") or 1)
    op, copy = backend.ops[target.op], backend.copy
    hosts = [[placed(a, k) for a in inputs_for(target.op, shape, target.dtype)] for k in range(PLACEMENTS)]
    arrays = [[backend.to_device(a, target.device) for a in inputs] for inputs in hosts]
    rounds_of = Interleaved(
        [synchronized(backend, target.device, partial(op, *inputs, -1)) for inputs in arrays],
        [synchronized(backend, target.device, partial(copy, inputs[0])) for inputs in arrays])
    call = rounds_of.op
    benchmark.extra_info.update(target.identity())
    try:
        rounds_of.placement.append(0)
        started = time.perf_counter()
        limited(limit, call)
        first_call = time.perf_counter() - started
        for copy_call in rounds_of.copy_calls:  # a first copy (its allocation, a kernel load) is no round
            copy_call()
        rounds = rounds_for(first_call, sweep_name)
        busy = Contention()
        benchmark.pedantic(call, setup=rounds_of.timed_copy, rounds=rounds, warmup_rounds=WARMUP_ROUNDS,
                           iterations=1)
        stats = benchmark.stats.stats
        op_times, copy_times = list(stats.data), rounds_of.copies[-rounds:]
        cpu_times = rounds_of.cpu[-rounds:]
        traffic, copied = traffic_bytes(target.op, shape, itemsize), 2 * shape.elements * itemsize
        best = best_fraction(op_times, copy_times, traffic, copied)
        remeasured = best > IMPOSSIBLE
        if remeasured:  # a second look before calling it impossible
            again = rounds_of.rounds(rounds)
            best = best_fraction(op_times + again, rounds_of.copies[-2 * rounds:], traffic, copied)
        others = busy.other_cores()
        lazy = best > IMPOSSIBLE and waited(backend, call, min(op_times))
    except CallTimeout as timeout:
        return {**record, "status": "error", "failure": "timeout", "message": f"{target.op} {timeout}"}
    except Exception as error:  # a backend's failure is a result, never a crash of the run
        return {**record, "status": "error", "failure": "error",
                "message": f"{target.op} raised {type(error).__name__}: {error}"}
    timing = Timing(stats.median, stats.mean, stats.min, stats.max, stats.stddev, stats.rounds)
    copy_timing = _timing(copy_times)
    gb_per_s = traffic / min(op_times) / 1e9
    measured = {
        "first_call_s": first_call, "timing": {**timing.as_dict(), "rounds_s": op_times},
        "cpu_rounds_s": cpu_times,
        "cpu_gb_per_s": traffic / min(cpu_times) / 1e9 if min(cpu_times) > 0 else None,
        "elements_per_s": shape.elements / timing.median, "traffic_bytes": traffic, "gb_per_s": gb_per_s,
        "copy": {**copy_timing.as_dict(), "rounds_s": copy_times, "bytes": copied,
                 "gb_per_s": copied / min(copy_times) / 1e9},
        "roofline_fraction": best,
        "round_fractions": [fraction(op_s, copy_s, traffic, copied)
                            for op_s, copy_s in zip(op_times, copy_times, strict=True)],
        "cache_regime": cache_regime(target.device, traffic),
        "contention": {"other_cores": others, "threads": threads},
        "resolvable": resolvable(threads, others),
        **({"remeasured": True} if remeasured else {}),
    }
    if best > IMPOSSIBLE and not lazy:
        # Not the op: its copy never ran at the machine's speed. Its GB/s stand; a fraction would not.
        measured.update(roofline_fraction=None, resolvable=False, copy_contended=(
            f"the copy's fastest of {2 * rounds} rounds, {measured['copy']['gb_per_s']:.3g} GB/s, is slower "
            f"than the op's {gb_per_s:.3g} GB/s by more than the bytes allow, and the op's result was "
            "ready when it returned: the copy waited for busy cores, so no roofline fraction"))
    elif best > IMPOSSIBLE:
        message = (f"measurement error: the op's fastest round, {gb_per_s:.3g} GB/s, is "
                   f"{best:.3g} x the fastest round of the copy interleaved with it on the same device, more "
                   f"than the {IMPOSSIBLE:g}x the bytes allow, in two measurements, and reading its result "
                   "waited for work: the call returned before its work was done (a missing synchronize, "
                   "or a lazy backend)")
        # Kept apart for diagnosis, in the record and in pytest-benchmark's JSON: not a throughput.
        benchmark.extra_info.update(status="error", measurement_error=message)
        return {**record, "suspect": measured, "status": "error", "failure": "measurement",
                "message": message}
    benchmark.extra_info.update(status="pass", gb_per_s=gb_per_s, copy_gb_per_s=measured["copy"]["gb_per_s"],
                                roofline_fraction=measured["roofline_fraction"],
                                cache_regime=measured["cache_regime"],
                                first_call_s=first_call)
    return {**record, **measured, "status": "pass", "message": ""}
