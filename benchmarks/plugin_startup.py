"""What loading the suite's pytest plugin costs a session that asks it nothing.

    python -m benchmarks.plugin_startup [--repeat 5]

Runs a one-test pytest session in a fresh process with the plugin (-p softmax_suite.runner.plugin)
and without it, --repeat times each, interleaved; prints the median wall time of each and which
frameworks the session with the plugin imported (none: backends load when an item asks for one).
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
    frameworks = ("torch", "jax", "mlx", "onnxruntime", "scipy", "tensorflow")
    print("FRAMEWORKS", ",".join(sorted(m for m in frameworks if m in sys.modules)) or "none")
'''


def session(folder: Path, plugin: bool) -> tuple[float, str]:
    command = [sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", "test_nothing.py"]
    if plugin:
        command[3:3] = ["-p", "softmax_suite.runner.plugin"]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=folder, capture_output=True, text=True, check=True)
    line = next(line for line in done.stdout.splitlines() if "FRAMEWORKS" in line)
    return time.perf_counter() - started, line.split("FRAMEWORKS", 1)[1].strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "test_nothing.py").write_text(TEST)
        times: dict[bool, list[float]] = {True: [], False: []}
        imported = ""
        for _ in range(args.repeat):
            for plugin in (False, True):
                seconds, frameworks = session(Path(folder), plugin)
                times[plugin].append(seconds)
                imported = frameworks if plugin else imported
    print(f"pytest session of one test, median of {args.repeat}: without the plugin "
          f"{statistics.median(times[False]):.2f} s, with it {statistics.median(times[True]):.2f} s; "
          f"frameworks imported with it: {imported}")


if __name__ == "__main__":
    main()
