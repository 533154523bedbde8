"""Speed and memory of the certified fast oracle against the naive (mpmath-only) oracle.

    python benchmarks/oracle_speed.py [--sizes 100000 1000000] [--naive-sample 20000]

For each dtype and row length n, one N(0, 9) row: the fast oracle's median time over
--repeats runs, and the naive oracle's time per element measured on the first --naive-sample
elements of the same row in the same process (the naive oracle is linear in n: its time at
n = 1e6 would be minutes). Each family is first run once at the largest size, untimed: the
process is then in the state a suite run keeps it in (glibc keeps freed blocks up to the largest
it has seen; before that, every chunk's temporaries are fresh pages, which doubles the time at
n = 1e5). Prints a Markdown table of ns per element, the speed-up, the peak
memory of one fast evaluation (tracemalloc, which numpy reports to), and the certificate.
Targets (issue 4): >= 150x for float16, bfloat16, float32; >= 20x for float64; <= 200 MB peak
at n = 1e6.
"""

from __future__ import annotations

import argparse
import statistics
import time
import tracemalloc
from collections.abc import Callable

import numpy as np

from softmax_suite.formats import DTYPES, FORMATS
from softmax_suite.oracle import fastpath
from softmax_suite.oracle.exact import forward_references
from softmax_suite.oracle.gradients import vjp_references

TARGETS = {"float16": 150, "bfloat16": 150, "float32": 150, "float64": 20}


def timed(call: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def peak_bytes(call: Callable[[], object]) -> int:
    tracemalloc.start()
    try:
        call()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def evaluation(family: str, x: np.ndarray, g: np.ndarray) -> Callable[[], dict]:
    if family == "forward":
        return lambda: forward_references(x, 0)
    return lambda: vjp_references(x, g, np.array(0.5, dtype=x.dtype), 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--naive-sample", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--family", choices=["forward", "vjp"], nargs="+", default=["forward", "vjp"])
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    forward_references(np.arange(64.0), 0)  # the exponential's tables, built once per process
    print("| family | dtype | n | fast ns/el | naive ns/el | speed-up | target | peak MB | certificate |")
    print("|---|---|---|---|---|---|---|---|---|")
    for family in args.family:
        warm = np.zeros(max(args.sizes))
        warm[0] = 1.0
        evaluation(family, warm, warm)()
        for name in DTYPES:
            dtype = FORMATS[name].np_dtype
            for n in args.sizes:
                x = (rng.standard_normal(n) * 3.0).astype(dtype)
                g = rng.standard_normal(n).astype(dtype)
                fast = timed(evaluation(family, x, g), args.repeats) / n
                sample = min(n, args.naive_sample)
                with fastpath.disabled():
                    naive = timed(evaluation(family, x[:sample], g[:sample]), 1) / sample
                peak = peak_bytes(evaluation(family, x, g))
                certificate = next(iter(evaluation(family, x, g)().values())).certificate
                shown = ", ".join(f"{k} {v}" for k, v in certificate.items() if v)
                print(f"| {family} | {name} | {n:.0e} | {fast * 1e9:.0f} | {naive * 1e9:.0f} | "
                      f"{naive / fast:.0f}x | {TARGETS[name]}x | {peak / 1e6:.0f} | {shown} |", flush=True)


if __name__ == "__main__":
    main()
