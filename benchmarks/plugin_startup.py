"""What softmax-suite's pytest plugins cost a session that asks them nothing.

    python -m benchmarks.plugin_startup [--repeat 5]

Runs a one-test pytest session in a fresh process, --repeat times each way, interleaved: without the
installed entry-point plugin (-p no:softmax_suite.runner.entry), with it as installed (in every
project's pytest, not asked for), and with the suite's own plugin loaded (-p softmax_suite.runner.plugin,
as this checkout's pytest has it). Prints the median wall time of each, and what each imported of the
suite and of the array libraries.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TEST = '''import sys


def test_nothing():
    libraries = ("numpy", "torch", "jax", "mlx", "onnxruntime", "scipy", "tensorflow")
    print("LIBRARIES", ",".join(sorted(m for m in libraries if m in sys.modules)) or "none")
    print("SUITE", len([m for m in sys.modules if m.startswith("softmax_suite")]))
'''

WAYS = {
    "not installed": ["-p", "no:softmax_suite.runner.entry"],
    "installed, not asked": [],
    "the suite's plugin": ["-p", "softmax_suite.runner.plugin"],
}


def session(folder: Path, extra: list[str]) -> tuple[float, str, str]:
    # No xdist, hypothesis or benchmark plugin: what is left is pytest's own start and the suite's.
    command = [sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", "-p", "no:xdist",
               "-p", "no:hypothesispytest", *extra, "test_nothing.py"]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=folder, capture_output=True, text=True, check=True)
    seconds = time.perf_counter() - started
    said = {line.split()[0]: line.split()[1] for line in done.stdout.splitlines()
            if line.startswith(("LIBRARIES", "SUITE"))}
    return seconds, said["LIBRARIES"], said["SUITE"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "test_nothing.py").write_text(TEST)
        times: dict[str, list[float]] = {way: [] for way in WAYS}
        imported: dict[str, tuple[str, str]] = {}
        for _ in range(args.repeat):
            for way, extra in WAYS.items():
                seconds, libraries, modules = session(Path(folder), extra)
                times[way].append(seconds)
                imported[way] = (libraries, modules)
    print(f"a pytest session of one test, median of {args.repeat}:")
    for way in WAYS:
        libraries, modules = imported[way]
        print(f"  {way:22s} {statistics.median(times[way]):.2f} s   softmax_suite modules: {modules:>3s}   "
              f"array libraries: {libraries}")


if __name__ == "__main__":
    main()
