"""The throughput suite's own overhead per timed call: torch.softmax on 1024 x 1024 float32 called
directly against the same call as the suite times it (the adapter's op, the synchronisation,
the closure; softmax_suite.suites.throughput.synchronized), and an empty op through the same layers.

    python benchmarks/throughput_overhead.py [--rounds 2000]

Calls alternate between the two ways in one loop, so that drift of the machine falls on both
alike; each is timed with time.perf_counter, pytest-benchmark's timer. Target (issue 5): the
suite's overhead below 2% of the call.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np

from softmax_suite.backends.registry import load
from softmax_suite.suites.throughput import synchronized

TARGET = 0.02


def alternate(first: Callable[[], object], second: Callable[[], object], rounds: int) -> tuple[float, float]:
    """Median seconds per call of each, measured in alternation."""
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(rounds):
        for call, into in ((first, times[0]), (second, times[1])):
            started = time.perf_counter()
            call()
            into.append(time.perf_counter() - started)
    return statistics.median(times[0]), statistics.median(times[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2000)
    args = parser.parse_args()
    import torch

    backend = load("torch")
    x_numpy = np.random.default_rng(0).standard_normal((1024, 1024), dtype=np.float32)
    x = backend.to_device(x_numpy, "cpu")
    op = backend.ops["softmax"]
    suite_call = synchronized(backend, "cpu", lambda: op(x, -1))
    direct_call = lambda: torch.softmax(x, -1)  # noqa: E731
    for _ in range(50):  # warm-up: threads spun up, the allocator's blocks in place
        suite_call()
        direct_call()
    direct, suite = alternate(direct_call, suite_call, args.rounds)
    empty_suite = synchronized(backend, "cpu", lambda: None)
    empty, _ = alternate(empty_suite, lambda: None, args.rounds)
    overhead = (suite - direct) / direct
    print("| call | median |")
    print("|---|---|")
    print(f"| torch.softmax, direct | {direct * 1e6:.1f} us |")
    print(f"| torch.softmax, as the suite times it | {suite * 1e6:.1f} us |")
    print(f"| empty op through the suite's layers | {empty * 1e6:.2f} us |")
    print(f"\noverhead: {overhead * 100:+.2f}% of the call (difference of medians); the empty op's "
          f"{empty * 1e6:.2f} us is {empty / direct * 100:.3f}% of it; target < {TARGET * 100:.0f}%")


if __name__ == "__main__":
    main()
