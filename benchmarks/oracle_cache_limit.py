"""What keeping the oracle cache within its limit costs: listing the folder, a write, a hit.

    python benchmarks/oracle_cache_limit.py [--entries 628 5000] [--writes 256]

For each folder size (628 entries: what a default run leaves; 5000: several oracle versions'
worth), a folder of that many small entries: the median time of one listing (what a write pays
on its first call in a process, every SCAN_EVERY writes and when its running total crosses the
limit; listing costs per entry, not per byte), the mean time of a write without a limit and with
one that is never reached (the difference is the bookkeeping, a listing every SCAN_EVERY writes
included; median of the batches of SCAN_EVERY writes, the two kinds alternated so that a busy
spell of the machine falls on both), and the median time of a hit (a load, which touches the
entry) against the touch alone.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from softmax_suite.oracle import store
from softmax_suite.oracle.exact import forward_references


def median_seconds(call: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def measure(entries: int, writes: int) -> dict[str, float]:
    references = forward_references(np.random.default_rng(1).standard_normal((4, 32)).astype(np.float32), -1)
    folder = Path(tempfile.mkdtemp(prefix="oracle-cache-limit-"))
    try:
        store.save(folder, "00" * 32, references)
        first = store._path(folder, "00" * 32)
        for i in range(1, entries):  # the listing's cost is per entry: copies will do
            key = f"{i:064x}"
            store._path(folder, key).parent.mkdir(exist_ok=True)
            shutil.copyfile(first, store._path(folder, key))
        listing = median_seconds(lambda: store.evict(folder, 10**15), 20)
        counter = iter(range(10**9))

        def write(limit: int | None) -> None:
            # Over the same SCAN_EVERY keys: the folder keeps its size.
            store.save(folder, f"{next(counter) % store.SCAN_EVERY + entries:064x}", references, limit)

        def batch(limit: int | None) -> float:
            started = time.perf_counter()
            for _ in range(store.SCAN_EVERY):
                write(limit)
            return (time.perf_counter() - started) / store.SCAN_EVERY

        batches = [(batch(None), batch(10**15)) for _ in range(writes // store.SCAN_EVERY)]
        hit = median_seconds(lambda: store.load(folder, "00" * 32), 50)
        touch = median_seconds(lambda: os.utime(first), 200)
    finally:
        shutil.rmtree(folder)
    return {"listing": listing, "write": statistics.median(unbounded for unbounded, _ in batches),
            "write_bounded": statistics.median(bounded for _, bounded in batches), "hit": hit, "touch": touch}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, nargs="+", default=[628, 5000])
    parser.add_argument("--writes", type=int, default=256)
    args = parser.parse_args()
    print("| entries | one listing | write, no limit | write, limit | hit | its touch |")
    print("|---|---|---|---|---|---|")
    for entries in args.entries:
        found = measure(entries, args.writes)
        print(f"| {entries} | {found['listing'] * 1e3:.1f} ms | {found['write'] * 1e3:.2f} ms | "
              f"{found['write_bounded'] * 1e3:.2f} ms | {found['hit'] * 1e3:.2f} ms | "
              f"{found['touch'] * 1e6:.0f} us |")


if __name__ == "__main__":
    main()
