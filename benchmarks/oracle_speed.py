"""Speed of the certified oracle against plain float64 numpy, against an earlier oracle, and
against the naive (mpmath-only) oracle, with its peak memory.

    python benchmarks/oracle_speed.py [--before REV] [--cases float32:1000 float32:100000 ...]
                                      [--rows normal|uniform|pairs]

For each case (dtype and n elements), one N(0, 9) row x, cotangents g ~ N(0, 1) and 0.5 for
logsumexp, converted to the dtype (--rows normal); or the length ladder's uniform row, n zeros
under the constant cotangent 0.75 (--rows uniform); or n/2 rows of two N(0, 9) entries, the
bit-pattern cases' shape (--rows pairs). Per family (forward: softmax, log_softmax and logsumexp of
the row together; vjp: their three VJPs together), in ns per element of the row:

* plain: the family's formulas evaluated once in float64 numpy (the row converted first);
* after: this checkout's oracle (forward_references, vjp_references);
* before: the oracle of git revision REV of this repository (--before), its oracle/ modules
  loaded from git into a package of their own, in the same process;
* naive: the mpmath-only oracle on the first --naive-sample elements (it is linear in n).

plain, after and before run interleaved, --repeats times each; the table shows medians of each
call's CPU time (time.process_time: on a shared machine it leaves out what other processes
take), and after / plain, before / plain and before / after. Each family first runs once
untimed at the largest n, after a 16 MB block was allocated and freed: the process is then in
the state a suite run keeps it in (glibc keeps freed blocks up to the largest it has seen, to
32 MB; before that, temporaries are fresh pages, which made plain numpy 4x slower at n = 1e5
and the oracle 2x). Peak memory: tracemalloc (which numpy reports to) over one evaluation of
this checkout's oracle.
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np

from softmax_suite.formats import FORMATS
from softmax_suite.oracle import fastpath
from softmax_suite.oracle.exact import forward_references
from softmax_suite.oracle.gradients import vjp_references

REPOSITORY = Path(__file__).resolve().parent.parent
DEFAULT_CASES = ["float32:1000", "float32:100000", "float32:1000000", "float16:100000", "bfloat16:100000",
                 "float64:100000"]


def load_oracle(revision: str) -> tuple[ModuleType, ModuleType]:
    """(exact, gradients) of the oracle at a git revision of this repository, as the package
    oracle_at_<revision> in a temporary folder (its imports of softmax_suite.oracle rewritten)."""
    package = "oracle_at_" + "".join(c if c.isalnum() else "_" for c in revision)
    folder = Path(tempfile.mkdtemp(prefix="oracle-speed-"))
    (folder / package).mkdir()

    def git(*arguments: str) -> str:
        return subprocess.run(["git", "-C", str(REPOSITORY), *arguments], capture_output=True, text=True,
                              check=True).stdout

    for name in git("ls-tree", "--name-only", f"{revision}:oracle").split():
        if name.endswith(".py"):
            source = git("show", f"{revision}:oracle/{name}")
            (folder / package / name).write_text(source.replace("softmax_suite.oracle", package))
    sys.path.insert(0, str(folder))
    return importlib.import_module(f"{package}.exact"), importlib.import_module(f"{package}.gradients")


def plain_forward(x: np.ndarray) -> tuple[np.ndarray, ...]:
    """softmax, log_softmax and logsumexp in float64 numpy, the max subtracted."""
    y = x.astype(np.float64)
    a = y.max()
    e = np.exp(y - a)
    s = e.sum()
    lse = a + np.log(s)
    return e / s, y - lse, lse


def plain_vjp(x: np.ndarray, g: np.ndarray, g_row: np.ndarray) -> tuple[np.ndarray, ...]:
    """The three VJPs in float64 numpy: y (g - <g, y>), g - y sum(g), g_row y."""
    y = x.astype(np.float64)
    y = np.exp(y - y.max())
    y /= y.sum()
    g = g.astype(np.float64)
    # (g * y).sum(), not np.dot: BLAS threads would add their CPU time.
    return y * (g - (g * y).sum()), g - y * g.sum(), float(g_row) * y


def evaluation(family: str, x: np.ndarray, g: np.ndarray, g_row: np.ndarray,
               oracle: tuple[ModuleType, ModuleType] | str | None = None) -> Callable[[], object]:
    """One call of the family over the last axis: the oracle's (this checkout's, or the given
    (exact, gradients)), or with oracle "plain" the float64 formulas (of a 1-D row)."""
    if oracle == "plain":
        return (lambda: plain_forward(x)) if family == "forward" else (lambda: plain_vjp(x, g, g_row))
    exact, gradients = oracle or (None, None)
    axis = x.ndim - 1
    if family == "forward":
        references = forward_references if exact is None else exact.forward_references
        return lambda: references(x, axis)
    derivatives = vjp_references if gradients is None else gradients.vjp_references
    return lambda: derivatives(x, g, g_row, axis)


def inputs(rows: str, dtype: np.dtype, n: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """(x, g, g_row) of n elements: --rows' kind (module docstring)."""
    if rows == "uniform":
        return np.zeros(n, dtype), np.full(n, 0.75, dtype), np.array(0.75, dtype)
    x = (rng.standard_normal(n) * 3.0).astype(dtype)
    g = rng.standard_normal(n).astype(dtype)
    if rows == "pairs":
        return x.reshape(-1, 2), g.reshape(-1, 2), np.full(n // 2, 0.5, dtype)
    return x, g, np.array(0.5, dtype=dtype)


def cpu_times(calls: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median CPU seconds of each call, the calls interleaved."""
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            started = time.process_time()
            call()
            times[name].append(time.process_time() - started)
    return {name: statistics.median(values) for name, values in times.items()}


def ratio(value: float, plain: float | None) -> str:
    return f"{value / plain:.1f}x" if plain else "-"


def peak_bytes(call: Callable[[], object]) -> int:
    tracemalloc.start()
    try:
        call()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", default=DEFAULT_CASES, help="dtype:n (default: %(default)s)")
    parser.add_argument("--before", metavar="REV", help="a git revision whose oracle to time alongside")
    parser.add_argument("--naive-sample", type=int, default=20_000, help="0: no naive column")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--family", choices=["forward", "vjp"], nargs="+", default=["forward", "vjp"])
    parser.add_argument("--rows", choices=["normal", "uniform", "pairs"], default="normal")
    args = parser.parse_args()
    cases = [(name, int(float(n))) for name, n in (case.split(":") for case in args.cases)]
    before = load_oracle(args.before) if args.before else None
    rng = np.random.default_rng(0)
    forward_references(np.arange(64.0), 0)  # the exponential's tables, built once per process
    # glibc serves blocks below its mmap threshold from the heap, and raises the threshold to the
    # size of a freed mapped block up to 32 MB: after this one, temporaries up to 16 MB reuse
    # the heap's pages, as in a long suite run, instead of faulting in fresh ones each time.
    np.ones(2 << 20).sum()
    print(f"ns per element of the row, medians of {args.repeats} interleaved runs (CPU time)"
          + (f"; before = {args.before}" if before else ""))
    print("| family | dtype | n | plain | after | after/plain | " + ("before | before/plain | before/after | "
                                                                     if before else "")
          + ("naive | naive/after | " if args.naive_sample else "") + "peak MB | certificate |")
    print("|---" * (8 + 3 * bool(before) + 2 * bool(args.naive_sample)) + "|")
    for family in args.family:
        largest = max(n for _, n in cases)
        warm = np.zeros(largest)
        warm[0] = 1.0
        (forward_references(warm, 0) if family == "forward" else vjp_references(warm, warm, np.array(0.5), 0))
        for name, n in cases:
            x, g, g_row = inputs(args.rows, FORMATS[name].np_dtype, n, rng)

            # plain numpy is timed on one row (--rows pairs has many short ones: no column there)
            calls = {"plain": evaluation(family, x, g, g_row, "plain")} if x.ndim == 1 else {}
            calls["after"] = evaluation(family, x, g, g_row)
            if before:
                calls["before"] = evaluation(family, x, g, g_row, before)
            for call in calls.values():
                call()  # once untimed: first calls build tables and grow the allocator
            timed = cpu_times(calls, args.repeats)
            seconds = {key: max(value, 1e-9) / n * 1e9 for key, value in timed.items()}
            plain = seconds.get("plain")

            row = f"| {family} | {name} | {n:.0e} | {f'{plain:.1f}' if plain else '-'} | " \
                  f"{seconds['after']:.1f} | {ratio(seconds['after'], plain)} | "
            if before:
                row += f"{seconds['before']:.1f} | {ratio(seconds['before'], plain)} | " \
                       f"{seconds['before'] / seconds['after']:.1f}x | "
            if args.naive_sample:
                sample = min(n, args.naive_sample)
                with fastpath.disabled():
                    g_sample = g_row if g_row.ndim == 0 else g_row[:sample // 2]
                    naive = cpu_times({"naive": evaluation(family, x[:sample], g[:sample], g_sample)}, 1)
                naive = naive["naive"] / (sample * 1e-9)
                row += f"{naive:.0f} | {naive / seconds['after']:.0f}x | "
            peak = peak_bytes(calls["after"])
            certificate = next(iter(calls["after"]().values())).certificate
            shown = ", ".join(f"{k} {v}" for k, v in certificate.items() if v)
            print(row + f"{peak / 1e6:.0f} | {shown} |", flush=True)


if __name__ == "__main__":
    main()
